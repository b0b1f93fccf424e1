"""A memory budget for the live series that all Findings hold together.

Each Finding keeps the high-water mark of every Event series it has seen within the hour (about
540 bytes each in memory, with its route), up to ``ledger.MAX_LIVE`` series per Finding. That
bounds one Finding, not a namespace: anyone who may create Events in a namespace can spread
distinct Event names over the 251 Findings its caps allow (250 and the overflow) and hold
~1.3 million series, ~700 MB. The budget closes the oldest slots of the largest Findings of the
largest namespaces first, so the namespace that floods pays for it and the others keep exact
counts. A closed slot's pulls stay counted; only a redelivery of one of its Events within the
hour would count again (an overcount of the flood, never an undercount).

The level is found by *water-filling*: the largest ones are cut to one common level, as high as
the budget allows::

    >>> level([10, 50, 200], 160)
    100
    >>> level([10, 50, 200], 1000) is None
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# ~27 MB of one namespace's series: far above what a namespace's real pulls make within an hour
# (a 500-replica Deployment rolling every 10 minutes makes ~3,000), well below the container's
# 256 MiB limit.
NAMESPACE_LIVE_SERIES = 50_000
# ~80 MB in all: what the operator may spend on series however many namespaces flood at once.
TOTAL_LIVE_SERIES = 150_000


def level(sizes: list[int], budget: int) -> int | None:
    """The largest L such that ``sum(min(s, L) for s in sizes) <= budget``; None if all fit."""
    if sum(sizes) <= budget:
        return None
    ordered = sorted(sizes)
    remaining, left = budget, len(ordered)
    for s in ordered:
        if s * left > remaining:
            return remaining // left
        remaining -= s
        left -= 1
    return remaining  # not reached: the sum exceeded the budget


def trim_live_series(
    states: Iterable[Any],
    per_namespace: int = NAMESPACE_LIVE_SERIES,
    total: int = TOTAL_LIVE_SERIES,
) -> list[Any]:
    """Close the oldest slots of the largest Findings until every namespace holds at most
    ``per_namespace`` live series and all together at most ``total``; the states changed.
    A Finding at rest is unpacked only if it must be cut."""
    by_namespace: dict[str, list[tuple[int, Any]]] = {}
    for state in states:
        n = len(state.series_keys())
        if n:
            by_namespace.setdefault(state.namespace, []).append((n, state))
    sizes = {ns: sum(n for n, _ in group) for ns, group in by_namespace.items()}
    cap = level(list(sizes.values()), total)
    changed = []
    for ns, group in by_namespace.items():
        allowed = min(per_namespace, sizes[ns] if cap is None else cap)
        each = level([n for n, _ in group], allowed)
        if each is None:
            continue
        for n, state in group:
            if n > each and state.evidence().ledger.bound(each):
                changed.append(state)
    return changed
