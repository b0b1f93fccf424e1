"""``pullwatch run``: the operator. A thin kopf adapter over the detection engine.

kopf runs the operator's life: login, signals and shutdown, peering between replicas and the
liveness endpoint. The engine (engine.py) runs while this replica is the active one; it watches
everything it reads itself, the configuration kinds too (stream.py).

Production settings, and why:
* kopf retries failed API requests forever, backing off to 5 s, instead of giving up after nine
  tries (which ended the process when RBAC was revoked for two minutes); its per-attempt error
  lines are let through once per interval per request.
* kopf's posting of Kubernetes Events is off: pullwatch watches Events and must not feed on them.
* The liveness probe fails when a loop stops making progress (health.py), not merely when the
  process is up.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import random
import ssl
import warnings
from collections.abc import Iterator
from typing import Any

import kopf
import kubernetes
import urllib3

from .. import EXIT_INTERNAL
from . import metrics, taskdump
from .api import Api, ApiError
from .auditserver import AuditServer, server_context
from .engine import Engine, Options
from .health import Health, check_listen
from .peering import Peering
from .quietlog import KopfRetryFilter, Quiet
from .waiting import STOP_GRACE, cancel_and_wait

log = logging.getLogger("pullwatch")
PEERING_LIFETIME = 15
PEERING_CHECK = 2.0  # seconds between checks of who the active replica is
CRASH_PAUSE = 2.0  # before an engine whose task failed is started again (doubling, to 60 s)
# A listening socket's bind errors: the operator's configuration, not a bug in pullwatch
_CANNOT_LISTEN = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


class ForeverBackoff:
    """kopf's error backoffs: 0.5, 1, 2, 4, then 5 s for ever (re-iterable: kopf iterates it
    afresh for every request)."""

    def __iter__(self) -> Iterator[float]:
        yield from (0.5, 1.0, 2.0, 4.0)
        while True:
            yield 5.0


class Runtime:
    """What the handlers share, for one operator process."""

    def __init__(self, options: Options, standalone: bool, peering: str, priority: int):
        self.options, self.standalone, self.peering_name, self.priority = (
            options,
            standalone,
            peering,
            priority,
        )
        self.health = Health()
        self.quiet = Quiet(log)
        self.api: Api | None = None
        self.engine: Engine | None = None
        self.task: asyncio.Task | None = None  # the engine's run()
        self.supervisor: asyncio.Task | None = None
        self.audit_server: AuditServer | None = None
        if options.audit_webhook is not None:
            self.audit_server = AuditServer(
                options.audit_webhook,
                self.quiet,
                accepting=lambda: self.engine is not None,
                ready=lambda: self.engine is not None and self.engine.started.is_set(),
            )

    async def supervise(self) -> None:
        """Run the engine while this replica is the active one. An engine whose task ended (one
        of its tasks failed) is stopped - drained: what it counted is written - before another
        starts, after a pause that grows while they keep failing."""
        assert self.api is not None
        peering = (
            None
            if self.standalone
            else Peering(self.api, self.peering_name, self.priority, self.quiet)
        )
        said: bool | None = None
        crashes = 0
        while True:
            active = True if peering is None else await peering.check()
            if not active and said is not False and (peering is None or peering.active is not None):
                log.info("standing by: a peer with a higher priority is active")
            said = active
            metrics.ACTIVE.set(1 if active else 0)
            if self.task is not None and self.task.done():
                crashes += 1
                log.error(
                    "the detection engine stopped (%s); stopping what is left of it, then "
                    "starting it again",
                    _failure(self.task),
                )
                await self.stop_engine(grace=5.0)
                await asyncio.sleep(min(60.0, CRASH_PAUSE * 2 ** (crashes - 1)))
                continue
            if active and self.engine is None:
                self.engine = Engine(
                    self.api,
                    self.options,
                    self.health,
                    self.quiet,
                    self.audit_server.queue if self.audit_server is not None else None,
                )
                self.task = asyncio.create_task(self.engine.run(), name="engine")
            elif not active and self.engine is not None:
                await self.stop_engine(grace=5.0)
            elif self.engine is not None and self.engine.started.is_set():
                crashes = 0
            await asyncio.sleep(PEERING_CHECK)

    async def stop_engine(self, grace: float | None = None) -> int:
        """Stop the engine (its tasks first, then its drain) and wait until its task has ended
        (at most STOP_GRACE); the Findings left unwritten. An engine with a task that did not
        stop when cancelled (a bug) ends the process instead, once its drain is done: no second
        engine may run beside what is left of it, and a stop must not wait for the kubelet's
        SIGKILL."""
        engine, task = self.engine, self.task
        if engine is None:
            return 0
        left = await engine.stop(grace)
        stuck = bool(engine.stuck)
        if task is not None and not stuck:
            loop = asyncio.get_running_loop()
            stuck = bool(await cancel_and_wait([task], log, loop.time() + STOP_GRACE))
        if stuck:
            leave_stuck(left)
        self.engine, self.task = None, None
        return left


def leave_stuck(left: int) -> None:
    """End the process now (exit 4, as for any bug): Kubernetes starts pullwatch again, which
    adopts the Findings written and lists the Events again."""
    log.critical(
        "the detection engine did not stop (a bug in pullwatch: please report the task named "
        "above); exiting, %d Findings left unwritten",
        left,
    )
    logging.shutdown()  # every handler flushed: this line is the last one
    os._exit(EXIT_INTERNAL)


def _failure(task: asyncio.Task) -> str:
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(f"{type(e).__name__}: {str(e)[:200]}" for e in exc.exceptions)
    return f"{type(exc).__name__}: {str(exc)[:200]}" if exc else "it returned"


def build_registry(rt: Runtime) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> Any:
        # A custom registry does not carry kopf's default login handler: log in the way the
        # kubernetes client does (in-cluster ServiceAccount, else KUBECONFIG).
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry, id="configure")
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # No API calls here: a failed start-up handler is retried by kopf only after a minute.
        taskdump.install(log)
        settings.posting.enabled = False
        settings.networking.error_backoffs = ForeverBackoff()
        settings.networking.request_timeout = 30
        settings.networking.connect_timeout = 10
        settings.watching.reconnect_backoff = 1.0
        settings.watching.server_timeout = rt.options.watch_timeout
        settings.watching.client_timeout = rt.options.watch_timeout + 15
        settings.watching.connect_timeout = 10
        settings.peering.lifetime = PEERING_LIFETIME
        rt.api = Api(kubernetes.client.Configuration.get_default_copy())
        if rt.audit_server is not None:
            try:
                await rt.audit_server.start()
            except OSError as exc:
                raise kopf.PermanentError(f"cannot serve the audit webhook: {exc}") from exc
        rt.supervisor = asyncio.get_running_loop().create_task(rt.supervise(), name="supervisor")

    @kopf.on.cleanup(registry=registry, id="final-flush")
    async def final_flush(**_: Any) -> None:
        # SIGTERM: stop reading, count what was received, write it all within the grace period.
        if rt.audit_server is not None:
            await rt.audit_server.stop()  # the API server retries its batches elsewhere
        stuck: set[asyncio.Task] = set()
        if rt.supervisor is not None:
            loop = asyncio.get_running_loop()
            stuck = await cancel_and_wait([rt.supervisor], log, loop.time() + STOP_GRACE)
        left = await rt.stop_engine() if rt.engine is not None else 0
        if stuck:
            leave_stuck(left)  # kopf would wait for it without end
        log.info("stopped; %d Findings left unwritten", left)
        if rt.api is not None:
            await rt.api.close()

    @kopf.on.probe(registry=registry, id="progress")
    async def progress(**_: Any) -> dict[str, Any]:
        stuck = rt.health.stuck()
        if stuck:
            raise kopf.PermanentError("not making progress: " + ", ".join(stuck))
        engine = rt.engine
        if engine is None:
            return {"active": False}
        return {
            "active": True,
            "findings": len(engine.detector.states),
            "dirty": len(engine.writer.dirty),
            "pulls": engine.pulls,
        }

    return registry


def _load_config() -> None:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config()
    else:
        kubernetes.config.load_kube_config()


async def _ensure_peering(name: str) -> None:
    """kopf waits for a mandatory peering object; create ours if it is missing."""
    api = Api(kubernetes.client.Configuration.get_default_copy())
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    try:
        await api.request("POST", "/apis/kopf.dev/v1/clusterkopfpeerings", body=body)
    except ApiError as exc:
        if exc.status != 409:
            log.warning("cannot create the peering object %s (%s); kopf waits for it", name, exc)
    finally:
        await api.close()


def run_operator(args: argparse.Namespace, options: Options) -> int:
    taskdump.install_fallback()
    kopf.configure(verbose=args.verbose, debug=args.debug, quiet=args.quiet)
    if not (args.verbose or args.debug):
        # kopf logs every handler call at INFO: one line per AllowedImages change is noise.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    retry_filter = KopfRetryFilter()
    for name in (
        "kopf",
        "kopf._core.engines.peering",
        "kopf._cogs.clients.watching",
        "kopf._cogs.clients.api",
        "kopf.objects",
        "kopf._core.reactor.observation",
    ):
        logging.getLogger(name).addFilter(retry_filter)
    for handler in logging.getLogger().handlers:
        handler.addFilter(retry_filter)
    warnings.filterwarnings("once", category=urllib3.exceptions.InsecureRequestWarning)
    try:
        _load_config()
    except kubernetes.config.ConfigException as exc:
        log.error("no Kubernetes configuration (in-cluster or KUBECONFIG): %s", exc)
        return 2
    # Equal priorities make kopf pause *every* replica; a random one per process makes the
    # highest active and the others stand by.
    priority = (
        args.priority if args.priority is not None else random.SystemRandom().randint(1, 1_000_000)
    )
    log.info(
        "peering %s with priority %d",
        "off (standalone)" if args.standalone else args.peering,
        priority,
    )
    if not args.standalone:
        asyncio.run(_ensure_peering(args.peering))
    try:
        rt = Runtime(options, args.standalone, args.peering, priority)
        if options.audit_webhook is not None:
            server_context(options.audit_webhook)  # unreadable certificates fail here, clearly
    except (OSError, ValueError, ssl.SSLError) as exc:
        log.error("cannot serve the audit webhook: %s", exc)
        return 2
    if args.metrics_address not in ("", "none"):
        try:
            metrics.serve(args.metrics_address)
        except (OSError, ValueError) as exc:
            log.error("cannot serve metrics on %s: %s", args.metrics_address, exc)
            return 2
    liveness = None if args.liveness in ("", "none") else args.liveness
    try:
        if liveness is not None:
            check_listen(liveness)
    except (OSError, ValueError) as exc:
        log.error("cannot serve the liveness probe on %s: %s", liveness, exc)
        return 2
    try:
        kopf.run(  # while its loop runs, SIGUSR1 dumps the loop's tasks (configure)
            priority=priority,
            registry=build_registry(rt),
            standalone=args.standalone,
            peering_name=None if args.standalone else args.peering,
            clusterwide=True,  # AllowedImages are cluster-scoped; --namespace limits Events
            liveness_endpoint=liveness,
        )
    except OSError as exc:
        # Taken between the check and kopf's own bind: the same configuration error. (aiohttp's
        # words: any other OSError, a connect's EADDRNOTAVAIL say, is not this.)
        if liveness is None or exc.errno not in _CANNOT_LISTEN or "bind" not in str(exc):
            raise
        log.error("cannot serve the liveness probe on %s: %s", liveness, exc)
        return 2
    finally:
        taskdump.install_fallback()  # the loop has gone, and its handler with it
    return 0
