"""The audit witness: who did it, from what the API server's audit webhook sends.

The receiver (``kube/auditserver.py``) answers the API server at once and queues the request
bodies; this room empties the queue on the active replica, one body at a time: decoded (orjson),
then each entry decoded by the core (``core/audit.py``: pulls with their verified author, who
wrote each Event, pods created and their images, people changing workloads), and every
observation goes to ``Engine.observe`` - a pull through the same path as the Event watch's
(``Engine.take_pull``: its workload read, its series counted once whichever witness saw it
first). Entries are counted by kind (``pullwatch_audit_entries_total``); one that cannot be
read is counted ``malformed`` and its reason logged once per interval.

**A policy that drops Events.** Widely copied audit policies drop ``events`` entirely, and
with them every "by user" and every check of who wrote a pull Event. When entries keep arriving
but none creates an Event for ``missing_after`` seconds (10 minutes), while the Event watch saw
new pull Events in that time, the witness says so: once in the log,
``pullwatch_audit_event_creates_missing`` 1, and state ``Blind`` with the reason; the next Event
create ends it.

Liveness is progress: the room beats on every batch and while it waits on an empty queue (an
idle API server is not a stuck pullwatch). At a stop, what is still queued is processed before
the writer drains (``flush``): an entry answered 200 is not lost to a takeover.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from ...core.audit import WORKLOADS, AuditDeduper, audit_observations
from ...core.pulls import DecodeError, Pull
from .. import metrics
from ..auditserver import AuditQueue, decode_body
from ..health import Health
from ..quietlog import Quiet
from ..witnessboard import SILENT_AFTER, Report

log = logging.getLogger("pullwatch.audit")
MISSING_AFTER = 600.0  # seconds of entries without an Event create before it is said
WAIT = 5.0  # seconds on an empty queue between beats
WORKLOAD_RESOURCES = frozenset(resource for _, resource in WORKLOADS)


def kind_of(entry: Mapping[str, Any]) -> tuple[str, bool]:
    """(the metric's kind, whether it is an Event create) of one entry, from its objectRef."""
    ref = entry.get("objectRef")
    resource = ref.get("resource") if isinstance(ref, Mapping) else None
    if resource == "events":
        return "events", entry.get("verb") == "create"
    if resource == "pods":
        return "pods", False
    if resource in WORKLOAD_RESOURCES:
        return "workloads", False
    return "other", False


class AuditWitness:
    name = "Audit witness"

    def __init__(
        self,
        queue: AuditQueue,
        observe: Callable[[Any], bool],
        take_pull: Callable[[Pull], None],
        *,
        health: Health | None = None,
        quiet: Quiet | None = None,
        pulls_seen: Callable[[], int] = lambda: 0,
        missing_after: float = MISSING_AFTER,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        """``take_pull(pull)``: a pull, counted as the Event watch's are; ``observe(obs)``: any
        other observation; ``pulls_seen()``: how many pull Events the Event watch has seen."""
        self.queue, self.observe, self.take_pull = queue, observe, take_pull
        self.health, self.quiet = health, quiet or Quiet(log)
        self.pulls_seen, self.missing_after, self.clock, self.wall = (
            pulls_seen,
            missing_after,
            clock,
            wall,
        )
        self.deduper = AuditDeduper()
        self.entries = 0
        self.last_observation: float | None = None  # wall clock, for the Witness status
        self.missing = False
        self._since = clock()  # the last Event create (or the start)
        self._pulls_then = 0  # pulls_seen() then
        self._entry_since = False  # entries arrived since then
        metrics.AUDIT_EVENT_CREATES_MISSING.set(0)

    async def run(self) -> None:
        self._since, self._pulls_then = self.clock(), self.pulls_seen()
        while True:
            await self.queue.wait(WAIT)
            if self.health is not None:
                self.health.beat(self.name)
            while (batch := self.queue.pop()) is not None:
                self.process_body(batch[0])
                if self.health is not None:
                    self.health.beat(self.name)
                await asyncio.sleep(0)  # a long queue must not starve the other tasks
            self.check()

    def flush(self) -> int:
        """Process everything still queued (at a stop); how many batches."""
        n = 0
        while (batch := self.queue.pop()) is not None:
            self.process_body(batch[0])
            n += 1
        return n

    def process_body(self, body: bytes) -> None:
        """One POST's body: decoded (once), then its entries."""
        entries = decode_body(body)
        if entries is None:
            metrics.AUDIT_ENTRIES.labels("malformed").inc()
            self.quiet.warning(
                "audit body", "an audit webhook body that opens as audit JSON cannot be decoded"
            )
            return
        self.process(entries)

    # -- one batch -----------------------------------------------------------------------------
    def process(self, entries: list[Any]) -> None:
        kinds: Counter[str] = Counter()
        creates = 0
        for entry in entries:
            if not isinstance(entry, dict):
                kinds["malformed"] += 1
                continue
            kind, create = kind_of(entry)
            creates += create
            try:
                observations = audit_observations(entry, self.deduper)
            except DecodeError as exc:
                kinds["malformed"] += 1
                self.quiet.warning(
                    f"audit malformed {exc}", "skipping an audit entry: %s (logged once)", exc
                )
                continue
            kinds[kind] += 1
            for obs in observations:
                if obs.__class__ is Pull:
                    self.take_pull(obs)
                else:
                    self.observe(obs)
        for kind, n in kinds.items():
            metrics.AUDIT_ENTRIES.labels(kind).inc(n)
        if entries:
            self.entries += len(entries)
            self.last_observation = self.wall()
            self._entry_since = True
        if creates:
            self._since, self._pulls_then, self._entry_since = (
                self.clock(),
                self.pulls_seen(),
                False,
            )
            if self.missing:
                self.missing = False
                metrics.AUDIT_EVENT_CREATES_MISSING.set(0)
                log.info("the audit webhook delivers Event creations again")

    def check(self) -> bool:
        """Entries arrive, none creates an Event, and the Event watch saw new pulls meanwhile:
        the audit policy drops Events. Whether that is so now (said once when it starts)."""
        if (
            not self.missing
            and self._entry_since
            and self.clock() - self._since >= self.missing_after
            and self.pulls_seen() > self._pulls_then
        ):
            self.missing = True
            metrics.AUDIT_EVENT_CREATES_MISSING.set(1)
            log.warning(
                "the audit webhook delivers entries but no Event creation among them for %.0f "
                "minutes while pull Events were seen: the audit policy drops `events`, so "
                "pullwatch cannot say who wrote a pull Event (examples/audit/policy.yaml)",
                self.missing_after / 60,
            )
        return self.missing

    def state(self) -> tuple[str, str]:
        """(state, message) for the ``audit`` Witness object."""
        if self.missing:
            return "Blind", (
                "audit entries arrive but no Event creation among them: the audit policy drops "
                "events (pullwatch cannot tell who wrote pull Events)"
            )
        if self.last_observation is None:
            return "Silent", "waiting for the API server's first POST"
        quiet = self.wall() - self.last_observation
        if quiet > SILENT_AFTER:
            return "Silent", f"no audit entry for {int(quiet // 60)} minutes"
        return "Receiving", f"{self.entries} audit entries received"


def audit_report(witness: AuditWitness | None) -> Report:
    """What the ``audit`` Witness object says (kube/witnessboard.py)."""
    if witness is None:
        return Report(
            "Disabled", None, "the audit webhook is off (--audit-webhook-address is not set)"
        )
    state, message = witness.state()
    return Report(state, witness.last_observation, message)
