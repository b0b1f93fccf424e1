"""Bounded work over every Finding, for the event loop's sake: Suppression rechecks in batches.

The operator's state lives on the event loop; a pass over 10,000 Findings that asks each against
200 Suppressions is seconds of work, and nothing else - the Event stream, the writer, the liveness
probe - runs meanwhile. So such passes go a batch of namespaces at a time (the detector's
namespace index: a namespace holds at most its caps' worth of Findings, so a batch is bounded),
yielding to the loop between batches.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from ..core.detector import Detector

BATCH = 500  # Findings per step; at ~10 us each against a namespace's Suppressions: ~5 ms


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
