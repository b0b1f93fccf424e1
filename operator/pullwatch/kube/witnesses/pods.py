"""The Pod witness: what actually runs, whatever the kubelet's Events said, dropped or let expire.

One lean list + watch of pods (all namespaces, or one per ``-n`` namespace) on the same stream as
the Events (paginated list, bookmarks, deadlines, relist on 410 Gone, liveness as progress). Each
pod whose containers started is decoded into ``Running`` observations (one per container that
ran: its image, its ``imageID`` digest, its node and start) and handed to ``Engine.observe``,
which judges them by name, by digest and against the allowlist. A ``Running`` never adds to a
Finding's pull count.

* **Byte pre-filter.** A pod with no started container has no ``"containerID"`` in its JSON:
  such watch lines (scheduling, pending, pulling) are never parsed.
* **No pod cache.** Per pod, one pair of ints: a key from its uid and a fingerprint of what its
  started containers ran (name, imageID, start). A status update that changes neither - probes,
  readiness, conditions - costs a hash and a dict look-up, not a judgement. About 100 bytes per
  pod remembered (``bench/pod_witness.py``); bounded by ``max_pods`` besides (the oldest is
  forgotten: at worst it is judged again, which counts nothing twice). DELETED forgets the pod,
  and each relist keeps only the pods it lists (deletions missed while the watch was gone).
* **Inventory at start-up.** The first list judges every pod already running, marked
  ``atStartup`` (and a container that started before its Events could still exist is said to
  have ``pullEvent: expired``, not missing).
* **Fewer workload reads.** A pod's ``ownerReferences`` come with it: when a rule fired on one
  of its containers, the workload resolver is told (``WorkloadResolver.remember``), so a later
  pull Event of that pod (a restart, the next container) reads no pod.
* **A new configuration judges every pod again.** A pod is judged when what its containers run
  changes; a ScannerImages digest or an AllowedImages change must reach the containers already
  running too (the scanner you just learned the digest of). When ``judging()`` (what judges a
  container: scanner names, digests, the allowlist) changes, the next watch is a list instead,
  every pod judged whatever its fingerprint. A list of every pod is not free (150,000 pods: a
  minute of the API server's time), so the next one comes no sooner than five times as long
  as the last one took after it (``REJUDGE_SHARE``), and ten seconds at least.

Damaged pods (a tenant writes its own pods' specs, and a node its pods' statuses) are skipped and
counted by reason (``pullwatch_pods_skipped_total``), logged once per reason.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from ...core.names import is_label, is_subdomain, segment
from ...core.observations import Running
from ...core.pods import CANDIDATE, decode_pod, pod_fingerprint
from ...core.pulls import DecodeError
from ...core.workload import controller_of
from .. import metrics
from ..api import Api
from ..health import Health
from ..quietlog import Quiet
from ..stream import ListWatch
from ..workloads import WorkloadResolver

log = logging.getLogger("pullwatch.pods")
MAX_PODS = 1_000_000  # pods remembered at most (~100 MB): far beyond the largest clusters
REJUDGE_SHARE = 5  # a list judging every pod again waits five times the last list's length
REJUDGE_MIN = 10.0  # seconds, at least


class PodWitness:
    def __init__(
        self,
        api: Api,
        observe: Callable[[Running], bool],
        *,
        namespace: str | None = None,
        resolver: WorkloadResolver | None = None,
        health: Health | None = None,
        quiet: Quiet | None = None,
        watch_timeout: int = 60,
        read_timeout: float = 30.0,
        page: int = 500,
        max_pods: int = MAX_PODS,
        judging: Callable[[], object] | None = None,
        rejudge_every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``observe(run)``: whether a rule fired on it. ``judging()``: what judges a container
        (compared with ``==``; None: never judged again but when it changes)."""
        self.observe, self.resolver, self.max_pods = observe, resolver, max_pods
        self.judging, self.rejudge_every, self.clock = judging, rejudge_every, clock
        self._judged_by: object = None  # judging() as of the last list
        self._rejudging = False  # this list judges every pod
        self._last_list = float("-inf")  # when the last list ended
        self._list_took = 0.0
        self.quiet = quiet or Quiet(log)
        self.fingerprints: dict[int, int] = {}  # hash of the pod's uid -> what its containers ran
        self._relisted: dict[int, int] | None = None  # during a list: the pods it has listed
        self.skips: Counter[str] = Counter()
        self.judged = 0  # pods decoded (new, or their containers changed)
        self._list_started = 0.0
        self.stream = _PodStream(
            self,
            api,
            f"/api/v1/namespaces/{segment(namespace)}/pods" if namespace else "/api/v1/pods",
            self.handle,
            name=f"Pod witness ({namespace or 'all namespaces'})",
            health=health,
            candidate=CANDIDATE,
            page=page,
            watch_timeout=watch_timeout,
            read_timeout=read_timeout,
            quiet=self.quiet,
            metric="pods",
        )

    @property
    def name(self) -> str:
        return self.stream.name

    async def run(self) -> None:
        await self.stream.run()

    # -- one pod ----------------------------------------------------------------------------
    def handle(self, kind: str, obj: dict[str, Any]) -> None:
        try:
            key, fingerprint = pod_fingerprint(obj)
        except DecodeError as exc:
            self._skip(str(exc), obj)
            return
        if kind == "DELETED":
            self.fingerprints.pop(key, None)
            if self._relisted is not None:
                self._relisted.pop(key, None)
            self._gauge()
            return
        table = self.fingerprints if self._relisted is None else self._relisted
        if self.fingerprints.get(key) == fingerprint and not self._rejudging:
            table[key] = fingerprint  # nothing new ran: no judgement (a relist keeps it)
            return
        try:
            runs = decode_pod(obj, at_startup=not self.stream.synced.is_set())
        except DecodeError as exc:
            self._skip(str(exc), obj)
            runs = None  # remembered all the same: a damaged pod is not decoded on every update
        if runs == [] and key not in self.fingerprints:
            return  # nothing ran yet: nothing to remember
        self.judged += 1
        metrics.PODS_EXAMINED.inc()
        fired = False
        for run in runs or ():
            fired |= bool(self.observe(run))
        if fired:
            self._note_owner(obj)
        table.pop(key, None)
        table[key] = fingerprint
        if len(table) > self.max_pods:
            del table[next(iter(table))]  # the oldest: judged again if it changes (counts nothing)
        self._gauge()

    def _note_owner(self, obj: Mapping[str, Any]) -> None:
        """Tell the workload resolver who owns the pod: a pull Event of it then reads no pod."""
        meta = obj.get("metadata")
        if self.resolver is None or not isinstance(meta, Mapping):
            return
        namespace, pod = meta.get("namespace"), meta.get("name")
        if not (is_label(namespace) and is_subdomain(pod)):
            return
        owner = controller_of(meta)
        if owner is not None and not is_subdomain(owner[1]):
            return  # not a name: the resolver infers the workload, as for any unread pod
        labels = meta.get("labels")
        template = labels.get("pod-template-hash") if isinstance(labels, Mapping) else None
        self.resolver.remember(
            namespace, pod, owner, template if isinstance(template, str) else None
        )

    def _skip(self, reason: str, obj: Any) -> None:
        self.skips[reason] += 1
        metrics.PODS_SKIPPED.labels(reason).inc()
        if self.skips[reason] == 1:
            meta = obj.get("metadata") if isinstance(obj, Mapping) else None
            meta = meta if isinstance(meta, Mapping) else {}
            log.warning(
                "skipping pod %.63s/%.253s: %s (logged once per reason)",
                meta.get("namespace"),
                meta.get("name"),
                reason,
            )

    def _gauge(self) -> None:
        metrics.PODS_REMEMBERED.set(len(self.fingerprints))

    # -- lists: the first is the start-up inventory; each keeps only the pods it lists --------
    def listing(self) -> None:
        self._relisted = {}
        self._list_started = self.clock()
        if self.judging is not None:
            self._judged_by = self.judging()

    def listed(self, complete: bool) -> None:
        """A list ended: when it was complete, the pods it did not list are gone."""
        if complete and self._relisted is not None:
            self.fingerprints = self._relisted
            if not self.stream.synced.is_set():
                log.info(
                    "%s: start-up inventory: %d pods whose containers ran, judged in %.1fs",
                    self.name,
                    len(self.fingerprints),
                    self.clock() - self._list_started,
                )
        self._relisted = None
        self._last_list = self.clock()
        self._list_took = self._last_list - self._list_started
        if complete:
            self._rejudging = False
        self._gauge()

    def rejudge_due(self) -> bool:
        """Whether what judges a container changed since the last list (and the last list is
        old enough, see above): then the next list judges every pod again."""
        if self.judging is None or self.judging() == self._judged_by:
            return False
        wait = self.rejudge_every
        if wait is None:
            wait = max(REJUDGE_MIN, REJUDGE_SHARE * self._list_took)
        if self.clock() - self._last_list < wait:
            return False  # asked again at the next watch
        log.info("%s: the configuration changed; judging every pod again", self.name)
        self._rejudging = True
        return True


def pod_witnesses(
    api: Api,
    options: Any,
    observe: Callable[[Running], bool],
    resolver: WorkloadResolver,
    health: Health,
    quiet: Quiet,
    judging: Callable[[], object],
) -> list[PodWitness]:
    """The engine's Pod witnesses (``options``: the engine's): one per namespace watched (all
    namespaces: one), none with ``--no-pod-witness``."""
    if not options.pod_witness:
        return []
    return [
        PodWitness(
            api,
            observe,
            namespace=ns,
            resolver=resolver,
            health=health,
            quiet=quiet,
            watch_timeout=options.watch_timeout,
            read_timeout=options.read_timeout,
            judging=judging,
        )
        for ns in (options.namespaces or [None])
    ]


class _PodStream(ListWatch):
    """The list + watch, telling the witness where each list starts and ends."""

    def __init__(self, witness: PodWitness, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.witness = witness

    async def _watch(self, rv: str | None) -> None:
        if self.witness.rejudge_due():
            self.rv = None  # list (and judge every pod) instead
            return
        await super()._watch(rv)

    async def _list(self) -> str:
        self.witness.listing()
        complete = False
        try:
            rv = await super()._list()
            complete = True
            return rv
        finally:
            self.witness.listed(complete)
