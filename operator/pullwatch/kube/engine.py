"""What the active replica runs: the detection pipeline from Events to written Findings.

Started when this replica becomes the active one, stopped (after writing what it counted) when it
is not, at shutdown, or when one of its tasks fails: they run in one ``asyncio.TaskGroup``, so a
task that crashes stops the others with it, and the supervisor (app.py) drains and ends this
engine before it starts another - never an old writer or stream beside a new engine.

In order: the Findings in the cluster are listed and adopted (so that no pull is counted twice),
the AllowedImages are listed and compiled (so that no pull is judged
against a half-loaded allowlist), then the Event stream starts. Each candidate Event is decoded;
if a rule fires, its pod's workload is read (or inferred), the pull is counted into its Finding,
and the Finding is marked for the writer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from .. import GROUP, VERSION
from ..core.allowlist import Allowlist
from ..core.detector import Caps, Detector
from ..core.findings import RULES_BY_SHORT
from ..core.ledger import MAX_LIVE
from ..core.names import segment
from ..core.pulls import CANDIDATE, IMAGE_REASONS, DecodeError, Pull, decode_event
from ..core.rules import SCANNER_RULE
from ..core.workload import Workload
from . import metrics
from .api import Api
from .auditserver import AuditQueue
from .config import Configs
from .custody import Custody
from .health import Health
from .kinds import allowed_images, scanner_images, suppressions, watch_of
from .options import Options
from .quietlog import Quiet
from .reports import ReportWriter
from .stream import ListWatch
from .upkeep import Upkeep
from .waiting import STOP_GRACE, cancel_and_wait
from .witnessboard import Report, WitnessBoard, stream_report
from .witnesses.audit import AuditWitness, audit_report
from .witnesses.pods import pod_witnesses
from .workloads import WorkloadResolver
from .writer import PLURAL, FindingWriter

log = logging.getLogger("pullwatch")
COOL_AFTER = 10  # minutes without a pull after which a Finding is packed (FindingState.cool)


class Engine:
    def __init__(
        self,
        api: Api,
        options: Options,
        health: Health,
        quiet: Quiet,
        audit_queue: AuditQueue | None = None,
    ):
        self.api, self.options, self.health, self.quiet = api, options, health, quiet
        self.detector = Detector(
            Allowlist(),
            options.scanner_defaults | options.scanner_extra,
            caps=Caps(options.max_findings, options.max_findings_per_namespace),
            live_series=MAX_LIVE,
        )
        self.detector.event_ttl = options.event_ttl_seconds
        self.detector.pull_event_grace = options.pull_event_grace
        self.writer = FindingWriter(
            api,
            self.detector,
            health,
            flush_interval=options.flush_interval,
            status_interval=options.status_interval,
            quiet=quiet,
        )
        self.resolver = WorkloadResolver(api if options.read_workloads else None, quiet=quiet)
        self.custody = Custody(
            api,
            self.detector,
            self.writer,
            retention_seconds=options.retention_seconds,
            quiet=quiet,
        )
        self.reports = (
            ReportWriter(
                api,
                self.detector,
                interval=options.openreports_interval,
                max_results=options.openreports_max_results,
                quiet=quiet,
            )
            if options.openreports
            else None
        )
        if self.reports is not None:
            self.writer.listeners.append(self.reports.mark)
        self.upkeep = Upkeep(self.detector, self.writer, self.custody, options)
        self.hidden = self.upkeep.hidden  # pulls hidden per Suppression
        self.configs = {
            "AllowedImages": Configs(api, allowed_images(self.detector), quiet),
            "ScannerImages": Configs(
                api,
                scanner_images(self.detector, options.scanner_extra, options.scanner_defaults),
                quiet,
            ),
            "Suppression": Configs(
                api,
                suppressions(
                    self.detector, options.operator_namespace, self.upkeep.recover, self.hidden
                ),
                quiet,
            ),
        }
        # Every list + watch of the engine, with its deadlines, health and log
        stream = functools.partial(
            ListWatch,
            api,
            health=health,
            watch_timeout=options.watch_timeout,
            read_timeout=options.read_timeout,
            quiet=quiet,
        )
        # The Findings of the namespaces watched, no others: another pullwatch may own those (their
        # retention, their tamper checks).
        self.findings_watches = [
            stream(
                f"/apis/{GROUP}/{VERSION}/namespaces/{segment(ns)}/{PLURAL}"
                if ns
                else f"/apis/{GROUP}/{VERSION}/{PLURAL}",
                self._finding_event,
                name=f"Findings watch ({ns or 'all namespaces'})",
                metric="findings",
                cached=True,
            )
            for ns in (options.namespaces or [None])
        ]
        self.event_streams = [
            stream(
                f"/api/v1/namespaces/{segment(ns)}/events" if ns else "/api/v1/events",
                self.handle_event,
                name=f"Event stream ({ns or 'all namespaces'})",
                candidate=CANDIDATE,
                keep_listed=_image_reason,
                metric="events",
            )
            for ns in (options.namespaces or [None])
        ]
        self.pod_witnesses = pod_witnesses(
            api, options, self.observe, self.resolver, health, quiet, self._judging
        )
        self.audit = (
            AuditWitness(
                audit_queue,
                self.observe,
                lambda pull: self.take_pull(pull, stream=False),
                health=health,
                quiet=quiet,
                pulls_seen=lambda: self.pulls,
            )
            if audit_queue is not None
            else None
        )
        self.upkeep.suppressions = self.configs["Suppression"]
        # their watches (from where load's list got to: run() sets it); kinds.watch_of says why
        self.config_watches = {name: watch_of(stream, c) for name, c in self.configs.items()}
        self.witness_board = WitnessBoard(api, self._witness_reports(), quiet=quiet)
        self.skips: dict[str, int] = {}
        self.capped: set[tuple[str, str]] = set()
        self.pulls = 0
        self.started = asyncio.Event()  # adoption and allowlist done; Events flowing
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self.stuck: set[asyncio.Task] = set()  # tasks that a stop cancelled and that went on

    def _witness_reports(self) -> dict[str, Callable[[], Report]]:
        """What each Witness object says (kube/witnessboard.py)."""
        return {
            "events": lambda: stream_report(self.event_streams, "image Events", time.time()),
            "pods": lambda: stream_report(
                [w.stream for w in self.pod_witnesses], "pod updates", time.time()
            ),
            "audit": lambda: audit_report(self.audit),
        }

    # -- lifecycle
    # ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run every task of the engine until it is stopped; raises (an ExceptionGroup) when one
        of them fails, the others stopped with it."""
        async with asyncio.TaskGroup() as group:

            def start(coro: Any, name: str) -> None:
                self._tasks.append(group.create_task(coro, name=name))

            self.health.watch("writer", allowed=60)
            start(self.writer.run(), "writer")
            start(self.resolver.run(), "workloads")
            for watch in self.findings_watches:
                start(watch.run(), watch.name)
                self.health.watch(watch.name, allowed=3 * self.options.read_timeout + 30)
            for watch in self.findings_watches:
                await watch.synced.wait()  # every Finding adopted (its first list)
            log.info("adopted %d existing Findings", len(self.detector.states))
            # every AllowedImages, ScannerImages and Suppression compiled before a pull is judged
            versions = await asyncio.gather(*(c.load() for c in self.configs.values()))
            if self._stopping:  # stopped while starting: nothing more to start (or to watch)
                return
            for (name, c), rv in zip(self.configs.items(), versions, strict=True):
                start(c.run(), name)
                watch = self.config_watches[name]
                watch.rv = rv or None  # no resourceVersion (never from a real list): list again
                self.health.watch(watch.name, allowed=3 * self.options.read_timeout + 30)
                start(watch.run(), watch.name)
            for stream in self.event_streams:
                self.health.watch(stream.name, allowed=3 * self.options.read_timeout + 30)
                start(stream.run(), stream.name)
            for witness in self.pod_witnesses:
                self.health.watch(witness.name, allowed=3 * self.options.read_timeout + 30)
                start(witness.run(), witness.name)
            if self.audit is not None:
                self.health.watch(self.audit.name, allowed=60)
                start(self.audit.run(), self.audit.name)
            start(self.upkeep.maintain(), "maintenance")
            start(self.upkeep.rechecks(), "suppression rechecks")
            start(self._settle(), "pull-event-grace")
            start(self.upkeep.census_loop(), "census")
            start(self.witness_board.run(), "witnesses")
            if self.reports is not None:
                start(self.reports.run(), "openreports")
            log.info(
                "processing Events (%s)", ", ".join(self.options.namespaces) or "all namespaces"
            )
            self.started.set()

    async def stop(self, grace: float | None = None) -> int:
        """Stop reading, count what was received, then write what was counted within ``grace``
        seconds; how many Findings were left unwritten (0 but for an API server that does not
        answer, or a task that did not stop when cancelled: ``stuck``). In order: the streams
        (nothing new comes in), the workload reads (every pull still waiting for one is counted
        now, with the workload its pod's name gives), the other tasks, and last the writer,
        which writes everything that is left."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + (self.options.drain_seconds if grace is None else grace)
        # Cancelled tasks end within a few loop steps; one that does not (a bug) may hold up a
        # quarter of the stop, all batches together, and the drain keeps the rest. Never less
        # than half a second: a task with tasks of its own takes a few steps to end.
        cancel_by = now + max(0.5, min(STOP_GRACE, (deadline - now) / 4))
        streams = {
            s.name
            for s in [
                *self.event_streams,
                *self.findings_watches,
                *self.pod_witnesses,
                *self.config_watches.values(),
            ]
        } | ({self.audit.name} if self.audit is not None else set())
        for names in (streams, {"workloads"}, None):
            batch = [
                t
                for t in self._tasks
                if (names is None or t.get_name() in names)
                and t.get_name() != "writer"
                and t not in self.stuck
            ]
            self.stuck |= await cancel_and_wait(batch, log, cancel_by)
            if names is streams and self.audit is not None:
                self.audit.flush()  # what was answered 200 is counted (its reads wait below)
            if names == {"workloads"}:
                flushed = self.resolver.flush()
                if flushed:
                    log.info("counted %d pulls whose workload read was cut short", flushed)
        rest = [t for t in self._tasks if t not in self.stuck]
        self.stuck |= await cancel_and_wait(rest, log, cancel_by)
        for name in [*streams, "writer"]:
            self.health.unwatch(name)
        left = await self.writer.drain(deadline)
        if left:
            log.error(
                "shutting down with %d Findings not written (%s)",
                left,
                "tasks that did not stop took part of the time"
                if self.stuck
                else "the API server did not take them in time",
            )
        return left

    # -- the pipeline
    # ---------------------------------------------------------------------------------
    def handle_event(self, kind: str, obj: dict[str, Any]) -> None:
        """One candidate Event from the stream: decode, judge, and count it once its workload is
        known. (Everything the stream hands over is counted, during a stop too.)"""
        if kind == "DELETED":
            return
        metrics.EXAMINED.inc()
        try:
            pull = decode_event(obj)
        except DecodeError as exc:
            self._skip(str(exc), obj)
            return
        if pull is not None:
            self.take_pull(pull)

    def take_pull(self, pull: Pull, stream: bool = True) -> None:
        """A pull from a witness (the Event watch, or the audit log: ``stream`` False, not
        counted in ``pulls``), judged, and counted once its workload is known; one series seen
        by both counts once."""
        fired = self.detector.rules_for(pull.namespace, pull.image)
        if not fired:
            self.pulls += stream
            self.detector.note_pull(pull)  # a container found by its digest had this pull Event
            return
        if (
            pull.involved.kind != "Pod"
            or self.detector.routed(pull)
            or self._at_cap(fired, pull.namespace)
        ):
            # No pod; or its series already has its Finding; or it goes to the overflow of a
            # namespace at its cap whatever its workload (a flood: its reads would only slow
            # everything else down): nothing to read.
            self._count(pull, None, stream)
            return
        priority = 0 if any(rule is SCANNER_RULE for rule, _, _ in fired) else 1
        self.resolver.request(
            pull.namespace,
            pull.involved.name,
            priority,
            lambda workload: self._count(pull, workload, stream),
            lambda: not (self.detector.routed(pull) or self._at_cap(fired, pull.namespace)),
        )

    def _at_cap(self, fired: list[Any], namespace: str) -> bool:
        """Every rule that fires is at its cap in ``namespace`` (or cluster-wide)."""
        return all(self.detector.capped(rule.short, namespace) for rule, _, _ in fired)

    def _count(self, pull: Pull, workload: Workload | None, stream: bool = True) -> None:
        self.pulls += stream
        self.observe(pull, workload)

    def observe(self, obs: Any, workload: Workload | None = None) -> bool:
        """One observation from any witness: into its Findings, and onto the metrics. The one
        interface every witness hands the core its observations through; whether a rule fired
        on it. (What was received is counted during a stop too: the streams stop first.)"""
        now = time.time()
        # Suppressions' expiry is judged at the operator's clock too, never at the Event's own
        # time: that is the author's claim (an expired Suppression would cover a pull backdated).
        detections = self.detector.observe(obs, workload, minute=int(now) // 60, now=now, clock=now)
        for det in detections:
            self._account(det)
        return bool(detections)

    def _judging(self) -> tuple[Any, ...]:
        """What judges an observation (a change: the Pod witness judges every pod again)."""
        d = self.detector
        return d.scanners, d.scanner_digests, d.allowlist.policies

    def _account(self, det: Any) -> None:
        if det.delta or det.created or det.changed:
            self.writer.mark(det.state.name)
        if det.created and det.state.name != det.state.identity.name:
            self.quiet.warning(
                "name collision",
                "Finding %s/%s: its own name is another identity's (a forced collision of the "
                "name's digest?), so it has a salted one (%d collisions met so far)",
                det.state.namespace,
                det.state.name,
                self.detector.collisions,
            )
        rule = RULES_BY_SHORT[det.state.identity.rule]
        if det.delta:
            # Every detected pull counts; the covered ones are counted apart as well, so that
            # alerts page on the difference.
            metrics.PULLS.labels(rule.name, rule.severity).inc(det.delta)
            if det.suppressed is not None:
                metrics.SUPPRESSED_PULLS.labels(rule.name, rule.severity).inc(det.delta)
                self.hidden[det.suppressed.key] += det.delta
            if det.folded is not None:
                metrics.FOLDED.labels(rule.name, det.state.namespace).inc(det.delta)
        if det.running:
            metrics.CONTAINERS_RUNNING.labels(rule.name, rule.severity).inc()
        if det.forged:
            metrics.FORGED_PULLS.labels(det.forged).inc()
            self.quiet.warning(
                f"forged {det.state.namespace}",
                "a pull Event not written by the kubelet of its node, in namespace %s "
                "(Finding %s): counted there and marked as forged",
                det.state.namespace,
                det.state.name,
            )
        if det.folded is not None and (det.folded.rule, det.folded.namespace) not in self.capped:
            self.capped.add((det.folded.rule, det.folded.namespace))
            log.warning(
                "cap reached for rule %s in namespace %s (at most %d Findings there, %d in "
                "all): further detections are counted in Finding %s/%s",
                det.folded.rule,
                det.folded.namespace,
                self.options.max_findings_per_namespace,
                self.options.max_findings,
                det.state.namespace,
                det.state.name,
            )

    async def _settle(self) -> None:
        """Containers seen running whose pull Event grace is over: seen, or ran without one."""
        while True:
            await asyncio.sleep(min(5.0, self.options.pull_event_grace / 4))
            for det in self.detector.settle(time.time()):
                self.writer.mark(det.state.name)
                if not det.missing:
                    continue  # its pull Event came: nothing to say
                rule = RULES_BY_SHORT[det.state.identity.rule]
                metrics.RAN_WITHOUT_PULL_EVENT.labels(rule.name, rule.severity).inc()
                log.warning(
                    "a container ran %s with no pull Event (Finding %s/%s): the kubelet's Events "
                    "were dropped or suppressed",
                    det.state.evidence().origin.image,
                    det.state.namespace,
                    det.state.name,
                )

    def _finding_event(self, kind: str, obj: dict[str, Any]) -> None:
        if not self._stopping:
            self.custody.on_event(
                kind, obj, at_start=not all(w.synced.is_set() for w in self.findings_watches)
            )

    def _skip(self, reason: str, event: dict[str, Any]) -> None:
        """Count a malformed Event; log each reason once, not once per Event."""
        n = self.skips.get(reason, 0) + 1
        self.skips[reason] = n
        metrics.SKIPPED.labels(reason).inc()
        if n == 1:
            meta = event.get("metadata") if isinstance(event.get("metadata"), dict) else {}
            log.warning(
                "skipping Event %s/%s: %s (logged once per reason)",
                meta.get("namespace"),
                meta.get("name"),
                reason,
            )


def _image_reason(item: dict[str, Any]) -> bool:
    return item.get("reason") in IMAGE_REASONS
