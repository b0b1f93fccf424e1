"""The engine's upkeep: what runs every so often over every Finding, kept off the hot path and
bounded, for the event loop's sake.

* Maintenance (every ``maintenance_interval``): close ledger slots whose Events have expired, pack
  the Findings not pulled for ``COOL_AFTER`` minutes, recheck expired Suppressions, and every
  tenth time forget the routes of closed slots and apply the retention.
* Suppression rechecks: after Suppressions change, the Findings of the namespaces they can reach
  are checked again - a batch of namespaces at a time (the detector's namespace index: a namespace
  holds at most its caps' worth of Findings, so a batch is bounded), yielding to the loop in
  between. All at once, 10,000 Findings against 200 Suppressions held the loop for seconds, and
  nothing else - the Event stream, the writer, the liveness probe - ran meanwhile.
* The census: the Findings gauges, and the Suppressions' statuses whose counts move.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from ..core.detector import Detector
from ..core.findings import RULES_BY_SHORT
from ..core.liveseries import trim_live_series
from . import metrics

COOL_AFTER = 10  # minutes without a pull after which a Finding is packed (FindingState.cool)
BATCH = 500  # Findings per recheck step; at ~10 us each against a namespace's Suppressions: ~5 ms


async def recheck(
    detector: Detector,
    namespaces: set[str] | None,
    mark: Callable[[str], None],
    batch: int = BATCH,
    clock: Callable[[], float] = time.time,
) -> int:
    """Check the Findings of ``namespaces`` (None: every namespace) against the Suppressions in
    force; ``mark`` each whose cover changed; how many did."""
    pending = deque(sorted(detector.by_namespace if namespaces is None else namespaces))
    changed = 0
    while pending:
        step: list[str] = []
        size = 0
        while pending:
            n = len(detector.by_namespace.get(pending[0], ()))
            if step and size + n > batch:
                break
            size += n
            step.append(pending.popleft())
        for state in detector.recheck_suppressions(clock(), step):
            mark(state.name)
            changed += 1
        await asyncio.sleep(0)
    return changed


class Upkeep:
    def __init__(self, detector: Detector, writer: Any, custody: Any, options: Any):
        self.detector, self.writer, self.custody, self.options = detector, writer, custody, options
        self.suppressions: Any = None  # the Suppressions' Configs (their statuses), once made
        self.hidden: Counter[str] = Counter()  # pulls hidden per Suppression (the engine counts)
        self._hidden_written: Counter[str] = Counter()
        # namespaces to check again (None: all - at the start, the adopted Findings' covers)
        self._recheck: set[str] | None = None
        self._recheck_wanted = asyncio.Event()
        self._recheck_wanted.set()

    # -- maintenance -------------------------------------------------------------------------
    async def maintain(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(self.options.maintenance_interval)
            rounds += 1
            cutoff = int(time.time() - self.options.event_ttl_seconds) // 60 - 5
            for state in list(self.detector.states.values()):
                if state.close_before(cutoff):
                    self.writer.mark(state.name)
            self.trim()
            busy = self.writer.dirty.keys() | self.writer.in_flight
            self.detector.cool(int(time.time()) // 60 - COOL_AFTER, busy)
            self.recover()  # Suppressions that expired since
            if self.suppressions is not None:
                self.suppressions.recheck_statuses()
            if rounds % 10 == 1:
                self.detector.prune_routes()
                await self.custody.sweep()

    def trim(self) -> None:
        """Hold the live series of all Findings within the memory budget (core/liveseries.py)."""
        trimmed = trim_live_series(self.detector.states.values())
        if not trimmed:
            return
        for state in trimmed:
            self.writer.mark(state.name)
        metrics.SERIES_TRIMMED.inc(len(trimmed))
        self.detector.prune_routes()
        namespaces = sorted({s.namespace for s in trimmed})
        self.writer.quiet.warning(
            "live series budget",
            "more live Event series than the memory budget allows in %s: the oldest slots of "
            "their largest Findings were closed (their pulls stay counted)",
            ", ".join(namespaces[:5])
            + (f" and {len(namespaces) - 5} more" if namespaces[5:] else ""),
        )

    # -- Suppressions --------------------------------------------------------------------------
    def recover(self, namespaces: set[str] | None = None) -> None:
        """Suppressions changed or expired: the Findings of ``namespaces`` (None: all) are
        checked again, in the background (``rechecks``)."""
        if namespaces is None or self._recheck is None:
            self._recheck = None if namespaces is None else set(namespaces)
        else:
            self._recheck |= namespaces
        self._recheck_wanted.set()

    async def rechecks(self) -> None:
        while True:
            await self._recheck_wanted.wait()
            self._recheck_wanted.clear()
            wanted, self._recheck = self._recheck, set()
            await recheck(self.detector, wanted, self.writer.mark)

    # -- the census ----------------------------------------------------------------------------
    async def census_loop(self) -> None:
        while True:
            self.census()
            await asyncio.sleep(self.options.census_interval)

    def census(self) -> None:
        """The Findings gauges (by rule and severity, suppressed ones apart); and the Suppressions'
        statuses, whose counts move with what happens."""
        active: dict[tuple[str, str], int] = {
            (r.name, r.severity): 0 for r in RULES_BY_SHORT.values()
        }
        suppressed = dict(active)
        for state in self.detector.states.values():
            if state.has_evidence:
                rule = RULES_BY_SHORT[state.identity.rule]
                (suppressed if state.suppression is not None else active)[
                    (rule.name, rule.severity)
                ] += 1
        for (rule_name, severity), n in active.items():
            metrics.FINDINGS.labels(rule_name, severity).set(n)
            metrics.SUPPRESSED_FINDINGS.labels(rule_name, severity).set(
                suppressed[(rule_name, severity)]
            )
        if self.hidden != self._hidden_written and self.suppressions is not None:
            self._hidden_written = Counter(self.hidden)
            self.suppressions.recheck_statuses()
