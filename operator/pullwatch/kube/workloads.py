"""Reading a pod's workload from its owners: metadata only, cached, bounded, never in the way.

For a pull the rules fire on, the operator asks the API server for the pod's metadata
(``PartialObjectMetadata``: no spec, no env) and follows its controller: a ReplicaSet to its
Deployment, a Job to its CronJob. What it reads is cached (pods, ReplicaSets and Jobs by name), so
50 replicas cost one lookup of their ReplicaSet. When the pod is already gone (a short Job), the
read is refused (RBAC without ``get pods``), or the API server is slow, the workload is inferred
from the pod's name exactly as ``pullwatch scan`` does - and the Finding says which it was.

Lookups wait in a queue ordered by severity (a scanner pull first), a few at a time, each with a
deadline; one of the readers serves urgent lookups (priority 0: a scanner pull) only, so that a
scanner pull never waits behind the flood's reads in flight. When the queue is long (a flood),
new pulls are not queued but inferred at once, so a flood costs no more API reads than the queue
holds.

Names come from Events and ownerReferences, which their authors wrote: a pod or owner name that
is not a DNS-1123 subdomain (or a namespace that is not a label) is never put in a URL - the
workload is inferred instead - and every path segment is quoted besides. At shutdown, ``flush``
answers every lookup still waiting with the inferred workload, so that what was received is
counted before the process exits.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable

from ..core.names import is_label, is_subdomain, segment
from ..core.workload import Workload, controller_of, from_owners, infer, infer_above
from .api import METADATA_ONLY, Api, ApiError
from .quietlog import Quiet

log = logging.getLogger("pullwatch.workloads")
# The top controller of a pod's direct owner: only these kinds have one that matters here.
_PARENTS = {
    "ReplicaSet": "/apis/apps/v1/namespaces/{}/replicasets/{}",
    "Job": "/apis/batch/v1/namespaces/{}/jobs/{}",
}


class WorkloadResolver:
    def __init__(
        self,
        api: Api | None,
        *,
        cache: int = 20_000,
        concurrency: int = 4,
        queue_limit: int = 500,
        namespace_limit: int = 50,
        timeout: float = 5.0,
        quiet: Quiet | None = None,
    ):
        self.api = api
        self.cache: OrderedDict[tuple[str, str], Workload] = OrderedDict()  # (ns, pod) -> workload
        self.parents: OrderedDict[tuple[str, str, str], tuple[str, str] | None] = OrderedDict()
        self.cache_size, self.concurrency, self.queue_limit, self.timeout = (
            cache,
            concurrency,
            queue_limit,
            timeout,
        )
        # One namespace's share of the queue: whoever floods a namespace with pull Events (a
        # scanner's too, at the urgent priority) makes its own pulls inferred from their names
        # past it, and never holds another namespace's reads behind more than this many.
        self.namespace_limit = namespace_limit
        self._queued: Counter[str] = Counter()  # namespace -> lookups in the queue
        self.quiet = quiet or Quiet(log)
        self._queue: list[tuple[int, int, tuple[str, str]]] = []
        self._waiting: dict[tuple[str, str], list[Callable[[Workload], None]]] = {}
        self._needed: dict[tuple[str, str], Callable[[], bool]] = {}
        self._order = itertools.count()
        self._wake = asyncio.Event()
        # (ns, pod) -> its controller and pod-template-hash, as the Pod witness saw the pod
        self.owners: OrderedDict[tuple[str, str], tuple[str, str, str | None]] = OrderedDict()
        self.reads = 0  # API reads made
        self.inferred = 0  # lookups answered by inference instead (gone, refused, slow, flood)

    def cached(self, namespace: str, pod: str) -> Workload | None:
        hit = self.cache.get((namespace, pod))
        if hit is not None:
            self.cache.move_to_end((namespace, pod))
        return hit

    def request(
        self,
        namespace: str,
        pod: str,
        priority: int,
        done: Callable[[Workload], None],
        needed: Callable[[], bool] | None = None,
    ) -> None:
        """``done(workload)`` once the pod's workload is known (on the event loop, soon).
        ``needed``: asked again when the lookup's turn comes; False answers it by inference
        (what was queued during a flood and has no use for a read by then)."""
        key = (namespace, pod)
        hit = self.cached(namespace, pod)
        if hit is not None:
            done(hit)
            return
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.append(done)
            return
        if (
            self.api is None
            or len(self._queue) >= self.queue_limit
            or self._queued[namespace] >= self.namespace_limit
        ):
            self.inferred += 1
            done(infer(pod))  # a flood: no API read for it, and no waiting behind the others
            return
        self._waiting[key] = [done]
        if needed is not None:
            self._needed[key] = needed
        heapq.heappush(self._queue, (priority, next(self._order), key))
        self._queued[namespace] += 1
        self._wake.set()

    async def run(self) -> None:
        """Serve the queue forever, ``concurrency`` lookups at a time."""
        async with asyncio.TaskGroup() as group:
            for i in range(max(2, self.concurrency)):
                group.create_task(self._worker(urgent_only=i == 0))

    def flush(self) -> int:
        """Answer every lookup still waiting (queued or being read) with the workload inferred
        from the pod's name, now; how many. Called at shutdown, once the workers have stopped."""
        waiting, self._waiting, self._queue, self._needed = self._waiting, {}, [], {}
        self._queued.clear()
        for (_, pod), callbacks in waiting.items():
            workload = infer(pod)
            self.inferred += 1
            for done in callbacks:
                done(workload)
        return len(waiting)

    async def _worker(self, urgent_only: bool = False) -> None:
        while True:
            while not self._queue or (urgent_only and self._queue[0][0] > 0):
                self._wake.clear()
                await self._wake.wait()
            _, _, key = heapq.heappop(self._queue)
            self._queued[key[0]] -= 1
            if self._queued[key[0]] <= 0:
                del self._queued[key[0]]
            needed = self._needed.pop(key, None)
            if needed is not None and not needed():
                self.inferred += 1
                for done in self._waiting.pop(key, []):
                    done(infer(key[1]))
                continue
            try:
                workload = await self.resolve(*key)
            except Exception as exc:
                self.quiet.warning(
                    "lookup failed",
                    "reading the workload of %s/%s failed (%s); inferring it",
                    key[0],
                    key[1],
                    exc,
                )
                workload = infer(key[1])
            self._remember(key, workload)
            for done in self._waiting.pop(key, []):
                done(workload)

    async def resolve(self, namespace: str, pod: str) -> Workload:
        """Read the owner chain; infer from the name where it cannot be read."""
        if not (is_label(namespace) and is_subdomain(pod)):
            self.inferred += 1
            return infer(pod)  # not a name the API server gave: nothing to read under it
        meta = self._known_owner(namespace, pod) or await self._metadata(
            f"/api/v1/namespaces/{segment(namespace)}/pods/{segment(pod)}"
        )
        if meta is None:
            self.inferred += 1
            return infer(pod)
        owner = controller_of(meta)
        if owner is not None and not is_subdomain(owner[1]):
            self.inferred += 1
            return infer(pod)  # ownerReferences are not validated as names: never follow one
        chain: list[tuple[str, str] | None] = [owner]
        if owner is not None and owner[0] in _PARENTS:
            parent_key = (namespace, owner[0], owner[1])
            if parent_key in self.parents:
                chain.append(self.parents[parent_key])
            else:
                parent_meta = await self._metadata(
                    _PARENTS[owner[0]].format(segment(namespace), segment(owner[1]))
                )
                if parent_meta is None:
                    return self._unread_parent(pod, owner, meta)
                parent = controller_of(parent_meta)
                if parent is not None and not is_subdomain(parent[1]):
                    return self._unread_parent(pod, owner, meta)
                self.parents[parent_key] = parent
                if len(self.parents) > self.cache_size:
                    self.parents.popitem(last=False)
                chain.append(parent)
        return from_owners(pod, chain)

    @staticmethod
    def _unread_parent(pod: str, owner: tuple[str, str], meta: dict) -> Workload:
        """The pod's owner was read but not the owner's: a ReplicaSet named
        ``<deployment>-<the pod's pod-template-hash label>`` is that Deployment's; otherwise the
        naming rules decide, as in ``scan``."""
        labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
        hash_label = labels.get("pod-template-hash")
        if (
            owner[0] == "ReplicaSet"
            and isinstance(hash_label, str)
            and owner[1].endswith("-" + hash_label)
        ):
            return Workload("Deployment", owner[1][: -len(hash_label) - 1], "inferred")
        return infer_above(*owner)

    async def _metadata(self, path: str) -> dict | None:
        """The object's metadata; None when it is gone, refused or does not answer in time."""
        self.reads += 1
        try:
            obj = await self.api.request("GET", path, accept=METADATA_ONLY, timeout=self.timeout)  # type: ignore[union-attr]
        except ApiError as exc:
            if exc.status == 403:
                self.quiet.warning(
                    f"forbidden {exc.what}",
                    "forbidden: %s (workloads are inferred from pod names until it is allowed)",
                    exc.what,
                )
            elif exc.status != 404:
                self.quiet.warning(
                    "lookup failing", "reading workloads failed (%s); inferring them", exc
                )
            return None
        self.quiet.recovered("lookup failing", "reading workloads works again")
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        return meta if isinstance(meta, dict) else None

    def _remember(self, key: tuple[str, str], workload: Workload) -> None:
        self.cache[key] = workload
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    # -- what the Pod witness saw ---------------------------------------------------------------
    def remember(
        self,
        namespace: str,
        pod: str,
        owner: tuple[str, str] | None,
        template_hash: str | None = None,
    ) -> None:
        """A pod's controller as its own object says (the Pod witness; names already valid): its
        workload needs no read of the pod, and none at all when the controller is the top one
        (a DaemonSet, a StatefulSet, none) or its own owner is known already."""
        key = (namespace, pod)
        if owner is None or owner[0] not in _PARENTS:
            self._remember(key, from_owners(pod, [owner]))
            return
        parent_key = (namespace, owner[0], owner[1])
        if parent_key in self.parents:
            self._remember(key, from_owners(pod, [owner, self.parents[parent_key]]))
            return
        self.owners[key] = (owner[0], owner[1], template_hash)
        self.owners.move_to_end(key)
        if len(self.owners) > self.cache_size:
            self.owners.popitem(last=False)

    def _known_owner(self, namespace: str, pod: str) -> dict | None:
        """The pod's metadata as far as the Pod witness told it (the part ``resolve`` reads)."""
        known = self.owners.pop((namespace, pod), None)
        if known is None:
            return None
        kind, name, template_hash = known
        meta: dict = {"ownerReferences": [{"kind": kind, "name": name, "controller": True}]}
        if template_hash is not None:
            meta["labels"] = {"pod-template-hash": template_hash}
        return meta
