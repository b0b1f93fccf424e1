"""``pullwatch run``: the operator. A thin kopf adapter over the detection core.

* AllowedImages are held in a kopf index. kopf fills every index before any handler runs, so
  no pull is judged against a half-loaded allowlist at start-up; an edit reaches the index
  (and so the next pull) without a restart. Each object's validity is written to its status.
* Every core/v1 Event goes through the same ``Detector`` that ``pullwatch scan`` uses; the
  Findings it touches are written by ``FindingWriter`` (coalesced, conflict-safe). Events come
  from ``EventStream``, not from a kopf handler: kopf's per-object machinery costs more per Event
  than an event storm allows (see event_stream.py). The stream starts once kopf has filled the
  AllowedImages index, and runs only while this replica is the active peer.
* On start-up the existing Findings are listed and merged into the detector, so the first list
  of Events (and every relist after ``410 Gone``, a broken stream or a standby's takeover) adds
  nothing already counted.
* kopf's posting of its own Kubernetes Events is disabled: we watch Events and must not feed
  on our own output.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import random
import warnings
from typing import Any

import kopf
import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from .. import GROUP, VERSION
from ..core.allowlist import Allowlist, Policy, policy_from_object
from ..core.detector import Detector
from .writer import PLURAL as FINDINGS, FindingWriter
from .events import ApiEndpoint, EventStream
from ..core.pulls import DecodeError, decode_event

log = logging.getLogger("pullwatch")
ALLOWED = "allowedimages"
PEERING_GROUP, PEERING_VERSION, PEERING_PLURAL = "kopf.dev", "v1", "clusterkopfpeerings"
PEERING_LIFETIME = 15
PEERING_CHECK = 2.0  # seconds between checks of who the active replica is


class Runtime:
    """Everything the handlers share, for one operator process."""

    def __init__(self, scanners: frozenset[str], flush_interval: float, watch_timeout: int = 300,
                 status_interval: float = 2.0):
        self.detector = Detector(Allowlist(), scanners)
        self.flush_interval = flush_interval
        self.status_interval = status_interval
        self.watch_timeout = watch_timeout
        self.writer: FindingWriter | None = None
        self.api: kubernetes.client.CustomObjectsApi | None = None
        self.skips: dict[str, int] = {}
        self.index_ready: asyncio.Event | None = None
        self.namespaces: list[str] = []
        self.standalone = True
        self.peering = "pullwatch"
        self.priority = 0

    def handle_event(self, obj: dict[str, Any]) -> None:
        """One candidate Event from the stream: decode, detect, mark what to write."""
        try:
            pull = decode_event(obj)
        except DecodeError as exc:
            self.skip(str(exc), obj)
            return
        if pull is None or self.writer is None:
            return
        for detection in self.detector.observe(pull):
            if detection.delta or detection.created:
                self.writer.mark(detection.state.name)

    async def run_events(self) -> None:
        """The Event stream(s), started and stopped with this replica's turn as the active peer."""
        assert self.index_ready is not None
        await self.index_ready.wait()
        endpoint = ApiEndpoint(kubernetes.client.Configuration.get_default_copy())
        streams = [EventStream(endpoint, self.handle_event, ns, watch_timeout=self.watch_timeout)
                   for ns in (self.namespaces or [None])]
        tasks: list[asyncio.Task] = []
        try:
            while True:
                active = self.standalone or await asyncio.to_thread(self.is_active_peer)
                if active and not tasks:
                    log.info("processing Events (%s)", ", ".join(self.namespaces) or "all namespaces")
                    tasks = [asyncio.create_task(st.run()) for st in streams]
                elif not active and tasks:
                    log.info("standing by: a peer with a higher priority is active")
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    tasks = []
                await asyncio.sleep(PEERING_CHECK)
        finally:
            for t in tasks:
                t.cancel()

    def is_active_peer(self) -> bool:
        """kopf's rule, read from the peering object: active unless a live peer has a higher
        priority (or another live one the same)."""
        assert self.api is not None
        try:
            obj = self.api.get_cluster_custom_object(PEERING_GROUP, PEERING_VERSION, PEERING_PLURAL, self.peering)
        except ApiException:
            return False
        now = datetime.datetime.now(datetime.timezone.utc)
        same = 0
        for info in (obj.get("status") or {}).values():
            if not isinstance(info, dict):
                continue
            try:
                seen = datetime.datetime.fromisoformat(str(info["lastseen"]))
                alive = seen + datetime.timedelta(seconds=int(info.get("lifetime", 60))) > now
                priority = int(info.get("priority", 0))
            except (KeyError, ValueError, TypeError):
                continue
            if alive and priority > self.priority:
                return False
            same += alive and priority == self.priority
        return same <= 1  # one is this replica itself

    def skip(self, reason: str, event: dict[str, Any]) -> None:
        """Count a malformed Event; log each reason once, not once per Event."""
        n = self.skips.get(reason, 0) + 1
        self.skips[reason] = n
        if n == 1:
            meta = event.get("metadata") if isinstance(event.get("metadata"), dict) else {}
            log.warning("skipping Event %s/%s: %s (logged once per reason)",
                        meta.get("namespace"), meta.get("name"), reason)


def desired_status(policy: Policy, generation: Any) -> dict[str, Any]:
    if not policy.usable:
        ready = ("False", "Invalid", "; ".join(policy.problems))
    elif policy.problems:
        ready = ("False", "InvalidPatterns",
                 f"{len(policy.problems)} pattern(s) ignored (they allow nothing): " + "; ".join(policy.problems))
    else:
        ready = ("True", "Valid", f"{len(policy.patterns)} pattern(s) in use")
    return {
        "observedGeneration": generation,
        "patterns": len(policy.patterns),
        "normalizedPatterns": [p.normalized for p in policy.patterns],
        "problems": list(policy.problems),
        "conditions": [{"type": "Ready", "status": ready[0], "reason": ready[1],
                        "message": ready[2][:4000], "observedGeneration": generation}],
    }


def _same_status(current: Any, wanted: dict[str, Any]) -> bool:
    if not isinstance(current, dict):
        return False
    strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in current.get("conditions") or []
             if isinstance(c, dict)]
    return strip == wanted["conditions"] and all(current.get(k) == v for k, v in wanted.items() if k != "conditions")


def build_registry(rt: Runtime) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> Any:
        # A custom registry does not carry kopf's default login handler: log in the way the
        # kubernetes client does (in-cluster ServiceAccount, else KUBECONFIG).
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry, id="configure")
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False          # never write Events: we watch them
        settings.watching.reconnect_backoff = 1.0  # back within seconds of an API server restart
        settings.watching.server_timeout = rt.watch_timeout
        settings.watching.client_timeout = rt.watch_timeout + 30
        settings.watching.connect_timeout = 10
        settings.watching.chunk_size = 500         # list in pages, however many AllowedImages there are
        # A crashed replica's lease expires within PEERING_LIFETIME; then a standby (or the
        # restarted pod) takes over. kopf's default is 60 s.
        settings.peering.lifetime = PEERING_LIFETIME
        rt.api = kubernetes.client.CustomObjectsApi()
        rt.writer = FindingWriter(rt.api, rt.detector, rt.flush_interval, rt.status_interval)
        found = await asyncio.to_thread(rt.api.list_cluster_custom_object, GROUP, VERSION, FINDINGS)
        for body in found.get("items", []):
            rt.writer.adopt(body)
        log.info("adopted %d existing Findings", len(found.get("items", [])))
        rt.index_ready = asyncio.Event()
        allowed = await asyncio.to_thread(rt.api.list_cluster_custom_object, GROUP, VERSION, ALLOWED)
        if not allowed.get("items"):
            rt.index_ready.set()  # nothing for kopf to index: no need to wait for it

    @kopf.on.startup(registry=registry, id="start-tasks")
    async def start_tasks(memo: kopf.Memo, **_: Any) -> None:
        assert rt.writer is not None
        loop = asyncio.get_running_loop()
        memo["flusher"] = loop.create_task(rt.writer.run())
        memo["events"] = loop.create_task(rt.run_events())

    @kopf.on.cleanup(registry=registry, id="final-flush")
    async def final_flush(memo: kopf.Memo, **_: Any) -> None:
        for key in ("events", "flusher"):
            task = memo.get(key)
            if task is not None:
                task.cancel()
        if rt.writer is not None:
            await rt.writer.flush()  # what was counted before SIGTERM is not lost

    @kopf.index(GROUP, VERSION, ALLOWED, registry=registry, id="allowed_policies")  # id = kwarg name
    def allowed_policies(body: kopf.Body, **_: Any) -> dict[str, Policy]:
        return {"all": policy_from_object(body)}

    @kopf.on.event(GROUP, VERSION, ALLOWED, registry=registry, id="report-validity")
    async def report_validity(event: dict[str, Any], body: kopf.Body, allowed_policies: kopf.Index,
                              **_: Any) -> None:
        # kopf updates the index before it calls handlers, for every change (deletions too), and
        # calls none before every index is filled: so the allowlist is swapped here, once per
        # change, and the next pull is judged by it.
        rt.detector.allowlist = Allowlist(list(allowed_policies.get("all", [])))
        if rt.index_ready is not None:
            rt.index_ready.set()
        if event.get("type") == "DELETED" or rt.api is None:
            return
        policy = policy_from_object(body)
        wanted = desired_status(policy, body.metadata.get("generation"))
        if _same_status(body.get("status"), wanted):
            return
        wanted["conditions"][0]["lastTransitionTime"] = \
            datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            await asyncio.to_thread(rt.api.patch_cluster_custom_object_status, GROUP, VERSION, ALLOWED,
                                    body.metadata.name, {"status": wanted})
        except ApiException as exc:
            log.warning("cannot write status of AllowedImages %s: HTTP %s", body.metadata.name, exc.status)
        if not policy.usable or policy.problems:
            log.warning("AllowedImages %s: %s", body.metadata.name, "; ".join(policy.problems))

    return registry


def _load_config() -> None:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config()
    else:
        kubernetes.config.load_kube_config()


def ensure_peering(name: str) -> None:
    """kopf waits for a mandatory peering object; create ours if it is missing."""
    api = kubernetes.client.CustomObjectsApi()
    body = {"apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}", "kind": "ClusterKopfPeering",
            "metadata": {"name": name}}
    try:
        api.create_cluster_custom_object(PEERING_GROUP, PEERING_VERSION, PEERING_PLURAL, body)
    except ApiException as exc:
        if exc.status != 409:
            raise


def run_operator(args: argparse.Namespace, scanners: frozenset[str]) -> int:
    kopf.configure(verbose=args.verbose, debug=args.debug, quiet=args.quiet)
    if not (args.verbose or args.debug):
        # kopf logs every handler call at INFO: one line per Event is noise in an event storm.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # With insecure-skip-tls-verify, urllib3 warns on every request: say it once.
    warnings.filterwarnings("once", category=urllib3.exceptions.InsecureRequestWarning)
    try:
        _load_config()
    except kubernetes.config.ConfigException as exc:
        log.error("no Kubernetes configuration (in-cluster or KUBECONFIG): %s", exc)
        return 2
    rt = Runtime(scanners, args.flush_interval, args.watch_timeout, args.status_interval)
    if not args.standalone:
        ensure_peering(args.peering)
    liveness = None if args.liveness in ("", "none") else args.liveness
    # Equal priorities make kopf pause *every* replica; a random one per process makes the
    # highest active and the others stand by.
    priority = args.priority if args.priority is not None else random.SystemRandom().randint(1, 1_000_000)
    log.info("peering %s with priority %d", "off (standalone)" if args.standalone else args.peering, priority)
    rt.namespaces, rt.standalone, rt.peering, rt.priority = list(args.namespace), args.standalone, args.peering, priority
    kopf.run(
        priority=priority,
        registry=build_registry(rt),
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        clusterwide=True,  # for AllowedImages (cluster-scoped); --namespace limits the Event stream
        liveness_endpoint=liveness,
    )
    return 0
