"""Exact counting of one Finding's pulls, kept compact and bounded: ``status.ledger``.

What counts (per *slot*, i.e. one container of one pod):

* the kubelet starts every pull attempt with a ``Pulling`` Event and ends it with ``Pulled``
  ("Successfully pulled") or ``Failed`` ("Failed to pull image"); "already present on machine"
  (``Pulled`` too) needs no attempt. So a slot's pulls are
  ``max(pulling, pulled + failed) + present``: both sides of one attempt count once, and an
  attempt seen from one side only still counts. ``backoff`` ("Back-off pulling image") is kept
  as an outcome, never as a pull.
* An Event object is a *series*: the kubelet raises ``count`` on the same object for repeats. Each
  series keeps its high-water mark, so a series seen again adds only the difference - a relist
  after a restart or a ``410 Gone`` adds nothing.

Why it is bounded: the high-water marks must outlive a restart (the operator adopts them from the
Finding), but a Finding must stay small whatever happens. A series is only worth keeping while
its Event can still be delivered again: the API server deletes an Event ``--event-ttl`` (1 h by
default) after its last update. So slots whose last update is older than that are *closed*: their
pulls move into ``closed`` totals and their series are dropped, with no loss of exactness. Only a
Finding with more than ``MAX_SERIES`` live series (a flood within one TTL) closes live slots
early, least recently updated first; were such a series delivered again (a relist within the
hour), it would be counted again - an overcount, never an undercount.

Encoded, each series is one short string: a 48-bit hash of the Event's identity, a 36-bit hash of
its slot, its kind, its high-water mark and its last update (minutes after ``base``)::

    >>> ledger = Ledger()
    >>> ledger.observe("event-uid-1", ("web-1", "web"), PULLING, 2, minute=29_375_040)
    2
    >>> ledger.observe("event-uid-2", ("web-1", "web"), PULLED, 2, minute=29_375_041)  # completes them
    0
    >>> ledger.observe("event-uid-1", ("web-1", "web"), PULLING, 2, minute=29_375_042)  # a repeat
    0
    >>> ledger.count, ledger.outcomes()["succeeded"]
    (2, 2)
    >>> restored = Ledger.decode(ledger.encode())
    >>> restored.count, restored.observe("event-uid-1", ("web-1", "web"), PULLING, 3, minute=29_375_050)
    (2, 1)
"""

from __future__ import annotations

import hashlib
from typing import Any

PULLING, PULLED, PRESENT, FAILED, BACKOFF = KINDS = (
    "pulling",
    "pulled",
    "present",
    "failed",
    "backoff",
)
_CODES = "idpfb"
_KIND_OF_CODE = {c: i for i, c in enumerate(_CODES)}
_INDEX = {k: i for i, k in enumerate(KINDS)}
MAX_SERIES = 200  # ~5 KB encoded; see findings.MAX_BYTES for the whole Finding's bound
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_VALUE = {c: i for i, c in enumerate(_B64)}


def short_hash(text: str, bits: int) -> int:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - bits)


def b64(n: int, width: int) -> str:
    return "".join(_B64[(n >> (6 * (width - 1 - i))) & 63] for i in range(width))


def unb64(text: str) -> int:
    n = 0
    for c in text:
        n = (n << 6) | _B64_VALUE[c]  # KeyError on a foreign character: caught by decode
    return n


def contribution(t: list[int]) -> int:
    """Pulls of one slot from its tallies (indexed like KINDS)."""
    return max(t[0], t[1] + t[3]) + t[2]


class Ledger:
    __slots__ = ("closed", "count", "series", "slots")

    def __init__(self) -> None:
        # series hash -> (slot hash, kind index, high-water count, minute of last update)
        self.series: dict[int, tuple[int, int, int, int]] = {}
        # slot hash -> [pulling, pulled, present, failed, backoff, minute of last update]; always
        # the sums of the slot's series (derived, never stored)
        self.slots: dict[int, list[int]] = {}
        self.closed = [
            0,
            0,
            0,
            0,
            0,
            0,
        ]  # pulls, then pulled, present, failed, backoff of closed slots
        self.count = 0  # closed pulls + the contributions of the live slots

    # -- counting -----------------------------------------------------------------------------
    def observe(
        self, series_id: str, slot: tuple[str, str], kind: str, count: int, minute: int
    ) -> int:
        """Take one observation of a series (its cumulative ``count``); return the pulls it adds."""
        key = short_hash(series_id, 48)
        k = _INDEX[kind]
        old = self.series.get(key)
        if old is not None:
            slot_key, k, seen, _ = old  # a series never changes slot or kind
            added = max(0, count - seen)
            self.series[key] = (slot_key, k, max(seen, count), max(minute, old[3]))
        else:
            slot_key = short_hash(f"{slot[0]}\0{slot[1]}", 36)
            added = count
            self.series[key] = (slot_key, k, count, minute)
        tally = self.slots.get(slot_key)
        if tally is None:
            tally = self.slots[slot_key] = [0, 0, 0, 0, 0, minute]
        before = contribution(tally)
        tally[k] += added
        tally[5] = max(tally[5], minute)
        delta = contribution(tally) - before
        self.count += delta
        return delta

    def outcomes(self) -> dict[str, int]:
        t = [self.closed[1 + i] for i in range(4)]
        for tally in self.slots.values():
            for i in range(4):
                t[i] += tally[1 + i]
        return {"succeeded": t[0], "cached": t[1], "failed": t[2], "backoff": t[3]}

    # -- bounds ---------------------------------------------------------------------------------
    def close_before(self, minute: int) -> int:
        """Close the slots not updated since ``minute`` (their Events are gone); how many."""
        stale = [s for s, t in self.slots.items() if t[5] < minute]
        self._close(stale)
        return len(stale)

    def bound(self, max_series: int = MAX_SERIES) -> int:
        """Close least recently updated slots until at most ``max_series`` series are left."""
        if len(self.series) <= max_series:
            return 0
        per_slot: dict[int, int] = {}
        for slot_key, _, _, _ in self.series.values():
            per_slot[slot_key] = per_slot.get(slot_key, 0) + 1
        excess = len(self.series) - max_series
        victims = []
        for slot_key in sorted(self.slots, key=lambda s: self.slots[s][5]):
            if excess <= 0:
                break
            victims.append(slot_key)
            excess -= per_slot.get(slot_key, 0)
        self._close(victims)
        return len(victims)

    def _close(self, slot_keys: list[int]) -> None:
        if not slot_keys:
            return
        doomed = set(slot_keys)
        for slot_key in doomed:
            tally = self.slots.pop(slot_key)
            self.closed[0] += contribution(tally)
            for i in range(4):
                self.closed[1 + i] += tally[1 + i]
        self.series = {k: v for k, v in self.series.items() if v[0] not in doomed}

    # -- storage --------------------------------------------------------------------------------
    def encode(self) -> dict[str, Any]:
        base = min((v[3] for v in self.series.values()), default=0)
        return {
            "v": 1,
            "closed": list(self.closed[:5]),
            "base": base,
            "series": [
                f"{b64(h, 8)}{b64(v[0], 6)}{_CODES[v[1]]}{v[2]}.{v[3] - base}"
                for h, v in self.series.items()
            ],
        }

    @classmethod
    def decode(cls, data: Any) -> Ledger:
        """Raises ValueError for anything that is not a ledger this version wrote."""
        try:
            if not isinstance(data, dict) or data.get("v") != 1:
                raise ValueError("not a v1 ledger")
            ledger = cls()
            closed = [int(x) for x in data.get("closed") or [0] * 5]
            base = int(data.get("base") or 0)
            if len(closed) != 5 or min(closed) < 0:
                raise ValueError("bad closed totals")
            ledger.closed = closed + [0]
            ledger.count = closed[0]
            for entry in data.get("series") or []:
                head, _, minute = str(entry).partition(".")
                key, slot_key = unb64(head[:8]), unb64(head[8:14])
                k, hw = _KIND_OF_CODE[head[14]], int(head[15:])
                if hw < 0 or len(head) < 16:
                    raise ValueError("bad series entry")
                ledger._restore(key, slot_key, k, hw, base + int(minute))
            return ledger
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ValueError(f"unreadable ledger: {exc}") from None

    def _restore(self, key: int, slot_key: int, k: int, hw: int, minute: int) -> None:
        old = self.series.get(key)
        if old is not None:
            if old[2] >= hw:
                return
            self._unrestore(old)
        self.series[key] = (slot_key, k, hw, minute)
        tally = self.slots.get(slot_key)
        if tally is None:
            tally = self.slots[slot_key] = [0, 0, 0, 0, 0, minute]
        before = contribution(tally)
        tally[k] += hw
        tally[5] = max(tally[5], minute)
        self.count += contribution(tally) - before

    def _unrestore(self, old: tuple[int, int, int, int]) -> None:
        tally = self.slots[old[0]]
        before = contribution(tally)
        tally[old[1]] -= old[2]
        self.count += contribution(tally) - before

    def merge(self, other: Ledger) -> None:
        """Fold in a ledger written elsewhere (an earlier run, another replica): per series the
        higher high-water mark wins, per closed total the higher; never counts a pull twice."""
        for key, (slot_key, k, hw, minute) in other.series.items():
            mine = self.series.get(key)
            if mine is None or hw > mine[2]:
                self._restore(key, slot_key, k, hw, minute)
        closed_before = self.closed[0]
        self.closed = [max(a, b) for a, b in zip(self.closed, other.closed)]
        self.count += self.closed[0] - closed_before
