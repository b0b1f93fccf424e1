"""Writing Findings: ordered by severity, coalesced, conflict-safe, and never stuck.

* A Finding touched by a pull is marked dirty. It is written when due: a new one within
  ``flush_interval`` (0.25 s: detection latency), count updates of one that exists at most every
  ``status_interval`` (2 s: a burst of repeats costs one write). Due Findings are written in order
  of severity, new ones first, and one of the ``concurrency`` slots is kept for high and critical
  Findings: a flood of medium Findings never delays a scanner Finding, not even by the writes it
  has in flight.
* Each write (findingapi.py) is conflict-safe: a 409 is re-read and max-merged, a 404 re-created.
* A Finding leaves the dirty set only once it is written, and a change made while its write was
  in flight keeps it dirty: SIGTERM in the middle of a flush loses nothing (``drain``).
* Only a Finding whose namespace is a DNS-1123 label and whose name a subdomain is written (the
  path segments are quoted besides): anything else is refused and said.
* Every request has a deadline (api.py). A Finding whose write fails waits before the next try,
  exponentially per Finding up to 5 minutes (a namespace whose policy refuses it is not hammered
  4 times a second); but while *every* write fails (RBAC revoked, API server away) the wait is at
  most 10 s, and the first success retries everything at once, so recovery takes seconds. Each
  distinct error is logged once per interval.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.detector import Detector
from ..core.findings import RULES_BY_SHORT
from ..core.names import is_label, is_subdomain
from . import metrics
from .api import Api, ApiError
from .findingapi import PLURAL, FindingApi, owned_labels, path_of
from .health import Health
from .quietlog import Quiet
from .waiting import wait_event

__all__ = ["PLURAL", "FindingWriter", "owned_labels", "path_of"]
BACKOFF_MAX, OUTAGE_BACKOFF_MAX = 300.0, 10.0
DRAIN_REPORT = 10.0  # seconds between progress lines while a stop writes what is left
_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3, "informational": 4}
log = logging.getLogger("pullwatch.writer")


@dataclass
class _Dirty:
    since: float  # first change not yet written (coalescing starts here)
    generation: int = 1  # bumped by every change: a write covers the generation it started with
    attempts: int = 0  # failures in a row
    not_before: float = 0.0
    restore_spec: bool = False  # someone changed the spec: put pullwatch's back


class FindingWriter:
    def __init__(
        self,
        api: Api,
        detector: Detector,
        health: Health,
        *,
        flush_interval: float = 0.25,
        status_interval: float = 2.0,
        concurrency: int = 4,
        quiet: Quiet | None = None,
        clock: Callable[[], float] | None = None,
    ):
        self.api, self.detector, self.health = api, detector, health
        self.clock = clock or (lambda: asyncio.get_running_loop().time())
        self.flush_interval = flush_interval
        self.status_interval = max(flush_interval, status_interval)
        self.concurrency = concurrency
        self.quiet = quiet or Quiet(log)
        self.findings = FindingApi(api, detector)
        self.versions = self.findings.versions  # Findings known to exist -> their last version
        self.dirty: dict[str, _Dirty] = {}
        self.in_flight: set[str] = set()
        self.writes = self.findings.writes  # (verb, outcome) -> how many
        self.last_success = self.last_failure = 0.0
        # Findings whose writes failed since the last success (two or more: an outage, not one
        # Finding a namespace's policy refuses), and the Findings each logged trouble is about:
        # "works again" is said when those succeed, not when some other Finding does.
        self.failing: set[str] = set()
        self.troubled: dict[str, set[str]] = {}
        self.listeners: list[Callable[[str], None]] = []  # told the namespace of every change
        self._wake = asyncio.Event()
        self._draining = False
        self._tasks: set[asyncio.Task] = set()

    # -- what to write
    # ------------------------------------------------------------------------------
    def changed(self, namespace: str) -> None:
        """A Finding of ``namespace`` changed (or was removed): tell the listeners (OpenReports)."""
        for listener in self.listeners:
            listener(namespace)

    def carry_labels(self, name: str, labels: dict[str, Any]) -> None:
        self.findings.carry_labels(name, labels)

    def mark(self, name: str, restore_spec: bool = False) -> None:
        state = self.detector.states.get(name)
        if state is not None:
            self.changed(state.namespace)
        now = self.clock()
        d = self.dirty.get(name)
        if d is None:
            self.dirty[name] = _Dirty(since=now, restore_spec=restore_spec)
        else:
            d.generation += 1
            d.restore_spec = d.restore_spec or restore_spec
        if name not in self.versions or restore_spec:
            self._wake.set()

    def _due(self, now: float) -> list[str]:
        due = []
        for name, d in list(self.dirty.items()):
            if name in self.in_flight or d.not_before > now:
                continue
            state = self.detector.states.get(name)
            if state is None or not state.has_evidence:
                del self.dirty[name]  # forgotten, or nothing counted yet (a back-off alone)
                continue
            if not (is_label(state.namespace) and is_subdomain(name)):
                del self.dirty[name]
                self.quiet.error(
                    "bad name",
                    "refusing to write Finding %r in namespace %r: not valid names",
                    name[:300],
                    state.namespace[:100],
                )
                continue
            new = name not in self.versions
            if (
                self._draining
                or d.restore_spec
                or now - d.since >= (self.flush_interval if new else self.status_interval)
            ):
                severity = RULES_BY_SHORT[state.identity.rule].severity
                due.append((_RANK.get(severity, 9), not new, d.since, name))
        due.sort()
        return [name for *_, name in due]

    # -- the loop
    # -----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Write due Findings forever, ``concurrency`` at a time (cancelled at shutdown; then
        ``drain`` writes what is left)."""
        while True:
            self.health.beat("writer")
            self.pump()
            self._wake.clear()
            await wait_event(self._wake, self.flush_interval)

    def pump(self) -> list[str]:
        """Start the writes that are due, as many as there are free slots (one kept for urgent
        Findings); their names."""
        free = self.concurrency - len(self.in_flight)
        routine = max(1, self.concurrency - 1) - sum(not self._urgent(n) for n in self.in_flight)
        started = []
        for name in self._due(self.clock()):
            if len(started) >= free:
                break
            if not self._urgent(name):
                if routine <= 0:
                    continue
                routine -= 1
            started.append(name)
            self._start(name)
        return started

    def _urgent(self, name: str) -> bool:
        state = self.detector.states.get(name)
        return (
            state is not None
            and _RANK.get(RULES_BY_SHORT[state.identity.rule].severity, 9) <= _RANK["high"]
        )

    async def settle(self) -> None:
        """Wait for the writes in flight (for the tests: the drain waits its own way)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _start(self, name: str) -> None:
        self.in_flight.add(name)
        task = asyncio.create_task(self._write_one(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, deadline: float) -> int:
        """Write every dirty Finding now, most severe first, until done or ``deadline`` (loop
        time); return how many are left unwritten."""
        loop = asyncio.get_running_loop()
        self._draining = True
        # A shutdown that takes a while says how far it got (the pod is stopping, and the one
        # who waits for it wants to know whether it is writing or stuck).
        said = loop.time()
        while self.dirty and loop.time() < deadline:
            for d in self.dirty.values():
                d.not_before = min(d.not_before, self.clock())  # no backoff at the end
            self.pump()
            if not self._tasks:
                break
            await asyncio.wait(
                set(self._tasks),
                timeout=max(0.0, min(deadline, said + DRAIN_REPORT) - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if self.dirty and loop.time() >= said + DRAIN_REPORT:
                said = loop.time()
                log.info(
                    "stopping: %d Findings still to write (%d writes in flight, %.0fs left)",
                    len(self.dirty),
                    len(self._tasks),
                    max(0.0, deadline - said),
                )
        return len(self.dirty)

    async def _write_one(self, name: str) -> None:
        d = self.dirty.get(name)
        if d is None:
            self.in_flight.discard(name)
            return
        generation = d.generation
        try:
            await self.findings.write(name, d.restore_spec)
        except ApiError as exc:
            self._failed(name, d, exc, self.clock())
        except Exception as exc:
            self._failed(
                name, d, ApiError(0, type(exc).__name__, str(exc)[:200], "PUT", name), self.clock()
            )
        else:
            now = self.clock()
            self._succeeded(name, now)
            metrics.LATENCY.observe(now - d.since)
            if d.generation == generation:
                self.dirty.pop(name, None)
            else:
                d.since, d.attempts, d.restore_spec = now, 0, False
        finally:
            self.in_flight.discard(name)
            self.health.beat("writer")
            self._wake.set()

    def _failed(self, name: str, d: _Dirty, exc: ApiError, now: float) -> None:
        self.last_failure = now
        self.failing.add(name)
        d.attempts += 1
        cap = OUTAGE_BACKOFF_MAX if self.outage else BACKOFF_MAX
        d.not_before = now + min(cap, 2 ** min(d.attempts, 9)) * random.uniform(0.8, 1.2)
        state = self.detector.states.get(name)
        where = f"{state.namespace}/{name}" if state else name
        key = f"forbidden {exc.what}" if exc.status == 403 else f"write {exc.status} {exc.reason}"
        self.troubled.setdefault(key, set()).add(name)
        if exc.status == 403:
            self.quiet.warning(
                key,
                "forbidden: %s (Finding %s; %s); will retry",
                exc.what,
                where,
                exc.message[:200],
            )
        else:
            self.quiet.warning(key, "writing Finding %s failed: %s; will retry", where, exc)

    def _succeeded(self, name: str, now: float) -> None:
        was_outage = self.outage
        self.last_success = now
        self.failing.clear()
        if was_outage:
            # The trouble that stopped every write is over: retry everything that waited.
            for d in self.dirty.values():
                d.not_before = 0.0
            self._wake.set()
        for key, names in list(self.troubled.items()):
            # a Finding no longer pending (written, or gone) is no longer trouble
            names = self.troubled[key] = {n for n in names if n != name and n in self.dirty}
            if not names:
                del self.troubled[key]
                self.quiet.recovered(key, "writing Findings works again")

    @property
    def outage(self) -> bool:
        """Writes of two or more Findings failed since the last success: the API server, RBAC or
        the network, not one Finding's namespace (whose retries must not be hurried by others)."""
        return len(self.failing) >= 2
