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
  after a restart or a ``410 Gone`` adds nothing. Each series also keeps its *verdict*: whether
  its author was found to be the kubelet of its node (verified), someone else (forged), or is
  not known (no audit entry seen for it).

Why it is bounded: the high-water marks must outlive a restart (the operator adopts them from the
Finding), but a Finding must stay small whatever happens. A series is only worth keeping while
its Event can still be delivered again: the API server deletes an Event ``--event-ttl`` (1 h by
default) after its last update. So slots whose last update is older than that are *closed*: their
pulls move into ``closed`` totals and their series are dropped, with no loss of exactness.

In memory the operator keeps every live series (up to ``MAX_LIVE``), so a relist within the
process is exact however many there are. What is *stored* is bounded to ``MAX_SERIES`` series:
the newest slots are written, the others are folded into the stored closed totals and recorded
as ``folded``, so that merging that stored form back into memory (a conflict, a re-read) does
not count them twice. Only a restart after a burst of more than ``MAX_SERIES`` live series in
one Finding can count again a series that was folded, if its Event is delivered again within the
hour: an overcount, never an undercount.

Encoded, each series is one short string: a 48-bit hash of the Event's identity, a 36-bit hash of
its slot, its kind, its verdict, its high-water mark and its last update (minutes after
``base``)::

    >>> ledger = Ledger()
    >>> ledger.observe("ns/web-1.a", ("web-1", "web"), PULLING, 2, minute=29_375_040)
    2
    >>> ledger.observe("ns/web-1.b", ("web-1", "web"), PULLED, 2, minute=29_375_041)  # ends them
    0
    >>> ledger.observe("ns/web-1.a", ("web-1", "web"), PULLING, 2, minute=29_375_042)  # a repeat
    0
    >>> ledger.count, ledger.outcomes()["succeeded"]
    (2, 2)
    >>> restored = Ledger.decode(ledger.encode())
    >>> restored.count, restored.observe("ns/web-1.a", ("web-1", "web"), PULLING, 3, 29_375_050)
    (2, 1)
"""

from __future__ import annotations

import binascii
import functools
import hashlib
from collections.abc import Sequence
from typing import Any

PULLING, PULLED, PRESENT, FAILED, BACKOFF = KINDS = (
    "pulling",
    "pulled",
    "present",
    "failed",
    "backoff",
)
UNKNOWN, VERIFIED, FORGED = 0, 1, 2  # a series' verdict: who wrote its Event
VERSION = 2
_CODES = "idpfb"
_VERDICT_CODES = "uvf"
_KIND_OF_CODE = {c: i for i, c in enumerate(_CODES)}
_VERDICT_OF_CODE = {c: i for i, c in enumerate(_VERDICT_CODES)}
_INDEX = {k: i for i, k in enumerate(KINDS)}
MAX_SERIES = 200  # stored: ~5 KB encoded, within the Finding's BUDGET
MAX_LIVE = 5000  # in memory, per Finding: past it, the oldest slots are closed for good
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_VALUE = {c: i for i, c in enumerate(_B64)}
_URLSAFE = bytes.maketrans(b"+/", b"-_")  # standard base64's last two digits -> _B64's


def short_hash(text: str, bits: int) -> int:
    """The first ``bits`` bits of ``text``'s blake2b digest.

    >>> short_hash("web/hunter.1", 48) == short_hash("web/hunter.1" + "", 48) < 2**48
    True
    """
    if len(text) <= _CACHED_CHARS:
        return _short_hash(text, bits)
    return uncached_hash(text, bits)


# Cached: the same pods, nodes and series are hashed again and again while Findings are built
# (a series is looked up, then counted; a node is in every pull of a Finding). Some texts are
# hashed before their names are validated: the cache keeps only short ones (at most ~20 MB).
_CACHED_CHARS = 600


def uncached_hash(text: str, bits: int) -> int:
    """:func:`short_hash` without its cache, for a caller that caches larger keys itself."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - bits)


_short_hash = functools.lru_cache(maxsize=1 << 15)(uncached_hash)


def slot_key(pod: str, container: str) -> int:
    """The key of a (pod, container) slot: one container's pulls."""
    return short_hash(f"{pod}\0{container}", 36)


def b64(n: int, width: int) -> str:
    """The low ``6 * width`` bits of ``n`` (``width`` at most 8) as ``width`` digits of _B64
    (URL-safe base64), most significant first.

    >>> b64(1, 6), b64(2**48 - 1, 8), b64(0x123456789, 6) == "".join(
    ...     _B64[(0x123456789 >> (6 * (5 - i))) & 63] for i in range(6))
    ('AAAAAB', '________', True)
    """
    return b64_each([n], width)[0]


def b64_each(values: Sequence[int], width: int) -> list[str]:
    """:func:`b64` of each value, through one call of the C encoder for all of them (a Finding's
    series and hashes are encoded by the hundred): each value is padded to 48 bits, six bytes,
    which base64 turns into eight whole digits, of which the first ``width`` are its own.

    >>> b64_each([1, 2**36 - 1], 6), b64_each([], 8)
    (['AAAAAB', '______'], [])
    """
    if not values:
        return []  # most of a Finding's sets of hashes are empty
    mask, shift = (1 << (6 * width)) - 1, 48 - 6 * width
    raw = b"".join(((v & mask) << shift).to_bytes(6, "big") for v in values)
    digits = binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).decode()
    return [digits[i : i + width] for i in range(0, len(digits), 8)]


def unb64(text: str) -> int:
    n = 0
    for c in text:
        n = (n << 6) | _B64_VALUE[c]  # KeyError on a foreign character: caught by decode
    return n


def contribution(t: list[int]) -> int:
    """Pulls of one slot from its tallies (indexed like KINDS)."""
    return max(t[0], t[1] + t[3]) + t[2]


class Ledger:
    __slots__ = ("closed", "count", "folded", "legacy", "series", "slots", "verdicts")

    def __init__(self) -> None:
        # series hash -> (slot hash, kind index, high-water count, minute of last update, verdict)
        self.series: dict[int, tuple[int, int, int, int, int]] = {}
        # slot hash -> [pulling, pulled, present, failed, backoff, minute of last update]; always
        # the sums of the slot's series (derived, never stored)
        self.slots: dict[int, list[int]] = {}
        self.closed = [
            0,
            0,
            0,
            0,
            0,
        ]  # pulls, then pulled, present, failed, backoff of closed slots
        self.verdicts = [0, 0, 0]  # unknown, verified, forged series among the closed ones
        self.folded = [0, 0, 0, 0, 0]  # of ``closed``: what a writer folded but still holds
        self.count = 0  # closed pulls + the contributions of the live slots
        self.legacy = False  # decoded from a v1 ledger, whose series were keyed by Event uid

    # -- counting -----------------------------------------------------------------------------
    def knows(self, series_id: str) -> bool:
        return short_hash(series_id, 48) in self.series

    def has_slot(self, pod: str, container: str) -> bool:
        """Whether a live series counted a pull of this container (a Pull Event was seen)."""
        return slot_key(pod, container) in self.slots

    def observe(
        self,
        series_id: str,
        slot: tuple[str, str],
        kind: str,
        count: int,
        minute: int,
        verdict: int = UNKNOWN,
        legacy_id: str | None = None,
    ) -> int:
        """Take one observation of a series (its cumulative ``count``); return the pulls it adds.
        ``legacy_id``: the Event's uid, under which a v1 ledger may hold this series."""
        return self.take(series_id, slot, kind, count, minute, verdict, legacy_id)[1]

    def take(
        self,
        series_id: str,
        slot: tuple[str, str],
        kind: str,
        count: int,
        minute: int,
        verdict: int = UNKNOWN,
        legacy_id: str | None = None,
    ) -> tuple[bool, int]:
        """:meth:`observe`, also saying whether the series was new to the ledger (what
        :meth:`knows` said before: the series is hashed once)."""
        key = short_hash(series_id, 48)
        k = _INDEX[kind]
        old = self.series.get(key)
        new = old is None
        if new and self.legacy and legacy_id:
            old = self.series.pop(short_hash(legacy_id, 48), None)
            if old is not None:
                self.series[key] = old
        if old is not None:
            slot_k, k, seen, last, known = old  # a series never changes slot or kind
            added = max(0, count - seen)
            self.series[key] = (slot_k, k, max(seen, count), max(minute, last), known or verdict)
        else:
            slot_k = slot_key(*slot)
            added = count
            self.series[key] = (slot_k, k, count, minute, verdict)
        tally = self.slots.get(slot_k)
        if tally is None:
            tally = self.slots[slot_k] = [0, 0, 0, 0, 0, minute]
        before = max(tally[0], tally[1] + tally[3]) + tally[2]  # contribution(tally), inline
        tally[k] += added
        if minute > tally[5]:
            tally[5] = minute
        delta = max(tally[0], tally[1] + tally[3]) + tally[2] - before
        self.count += delta
        return new, delta

    def set_verdict(self, series_id: str, verdict: int) -> bool:
        """Record who wrote a series' Event (learned after it was counted); whether it changed."""
        key = short_hash(series_id, 48)
        old = self.series.get(key)
        if old is None or old[4] == verdict or verdict == UNKNOWN:
            return False
        self.series[key] = (*old[:4], verdict)
        return True

    def outcomes(self) -> dict[str, int]:
        t = list(self.closed[1:5])
        for tally in self.slots.values():
            for i in range(4):
                t[i] += tally[1 + i]
        return {"succeeded": t[0], "cached": t[1], "failed": t[2], "backoff": t[3]}

    def reporters(self) -> dict[str, int]:
        """How many series (Events) were verified as the kubelet's, forged, or not known."""
        v = list(self.verdicts)
        for entry in self.series.values():
            v[entry[4]] += 1
        return {"unverified": v[0], "verified": v[1], "forged": v[2]}

    # -- bounds ---------------------------------------------------------------------------------
    def close_before(self, minute: int) -> int:
        """Close the slots not updated since ``minute`` (their Events are gone); how many."""
        stale = [s for s, t in self.slots.items() if t[5] < minute]
        self._close(stale)
        return len(stale)

    def bound(self, max_series: int = MAX_LIVE) -> int:
        """Past ``max_series`` series, close the least recently updated slots down to nine
        tenths of it: a Finding flooded with new series (an overflow one) pays for the sort once
        per tenth, not once per pull."""
        if len(self.series) <= max_series:
            return 0
        victims = self._oldest_slots(len(self.series) - max_series * 9 // 10)
        self._close(victims)
        return len(victims)

    def _oldest_slots(self, excess: int) -> list[int]:
        per_slot: dict[int, int] = {}
        for entry in self.series.values():
            per_slot[entry[0]] = per_slot.get(entry[0], 0) + 1
        victims = []
        for slot_k in sorted(self.slots, key=lambda s: (self.slots[s][5], s)):
            if excess <= 0:
                break
            victims.append(slot_k)
            excess -= per_slot.get(slot_k, 0)
        return victims

    def _close(self, slot_keys: list[int]) -> None:
        if not slot_keys:
            return
        doomed = set(slot_keys)
        for slot_k in doomed:
            tally = self.slots.pop(slot_k)
            self.closed[0] += contribution(tally)
            for i in range(4):
                self.closed[1 + i] += tally[1 + i]
        kept = {}
        for k, v in self.series.items():
            if v[0] in doomed:
                self.verdicts[v[4]] += 1
            else:
                kept[k] = v
        self.series = kept

    # -- storage --------------------------------------------------------------------------------
    def encode(self, max_series: int | None = MAX_SERIES) -> dict[str, Any]:
        """The stored form, with at most ``max_series`` series (None: all): the newest slots are
        written, the others folded into the closed totals. Never changes the ledger."""
        written = self.series
        closed, verdicts, folded = list(self.closed), list(self.verdicts), list(self.folded)
        if max_series is not None and len(written) > max_series:
            doomed = set(self._oldest_slots(len(written) - max_series))
            for slot_k in doomed:
                tally = self.slots[slot_k]
                for i, n in enumerate((contribution(tally), *tally[1:5])):
                    closed[i] += n
                    folded[i] += n
            written = {}
            for k, v in self.series.items():
                if v[0] in doomed:
                    verdicts[v[4]] += 1
                else:
                    written[k] = v
        base = min((v[3] for v in written.values()), default=0)
        rows = sorted(written.items())
        out: dict[str, Any] = {
            "v": VERSION,
            "closed": closed,
            "verdicts": verdicts,
            "base": base,
            "series": [
                f"{h}{slot}{_CODES[v[1]]}{_VERDICT_CODES[v[4]]}{v[2]}.{v[3] - base}"
                for h, slot, (_, v) in zip(
                    b64_each([h for h, _ in rows], 8), b64_each([v[0] for _, v in rows], 6), rows
                )
            ],
        }
        if any(folded):
            out["folded"] = folded
        return out

    @classmethod
    def decode(cls, data: Any) -> Ledger:
        """Raises ValueError for anything that is not a ledger pullwatch wrote (v1 or v2)."""
        try:
            version = data.get("v") if isinstance(data, dict) else None
            if version not in (1, 2):
                raise ValueError("not a v1 or v2 ledger")
            ledger = cls()
            ledger.legacy = version == 1
            closed = _totals(data.get("closed"), 5)
            ledger.verdicts = _totals(data.get("verdicts"), 3)
            ledger.folded = _totals(data.get("folded"), 5)
            base = int(data.get("base") or 0)
            if any(f > c for f, c in zip(ledger.folded, closed)):
                raise ValueError("folded totals above the closed ones")
            ledger.closed = closed
            ledger.count = closed[0]
            series = data.get("series") or []
            if not isinstance(series, list):
                raise ValueError("series is not a list")
            for entry in series:
                head, _, minute = str(entry).partition(".")
                key, slot_k = unb64(head[:8]), unb64(head[8:14])
                k = _KIND_OF_CODE[head[14]]
                verdict = _VERDICT_OF_CODE[head[15]] if version == 2 else UNKNOWN
                hw = int(head[16:] if version == 2 else head[15:])
                if hw < 0 or len(head) < 16 or len(head) > 40:
                    raise ValueError("bad series entry")
                ledger._restore(key, slot_k, k, hw, base + int(minute), verdict)
            return ledger
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"unreadable ledger: {exc}") from None

    def _restore(
        self, key: int, slot_k: int, k: int, hw: int, minute: int, verdict: int = UNKNOWN
    ) -> None:
        old = self.series.get(key)
        if old is not None:
            verdict = max(verdict, old[4])  # forged > verified > unknown
            if old[2] >= hw:
                self.series[key] = (*old[:4], verdict)
                return
            self._unrestore(old)
        self.series[key] = (slot_k, k, hw, minute, verdict)
        tally = self.slots.get(slot_k)
        if tally is None:
            tally = self.slots[slot_k] = [0, 0, 0, 0, 0, minute]
        before = contribution(tally)
        tally[k] += hw
        tally[5] = max(tally[5], minute)
        self.count += contribution(tally) - before

    def _unrestore(self, old: tuple[int, int, int, int, int]) -> None:
        tally = self.slots[old[0]]
        before = contribution(tally)
        tally[old[1]] -= old[2]
        self.count += contribution(tally) - before

    def merge(self, other: Ledger) -> None:
        """Fold in the same Finding's ledger as stored elsewhere (an earlier run, another
        replica, this process's own earlier write): per series the higher high-water mark wins;
        of the closed totals the higher, less what the other folded (those series this ledger
        may still hold live). Never counts a pull twice."""
        for key, (slot_k, k, hw, minute, verdict) in other.series.items():
            self._restore(key, slot_k, k, hw, minute, verdict)
        truly = [c - f for c, f in zip(other.closed, other.folded)]
        before = self.closed[0]
        self.closed = [max(a, b) for a, b in zip(self.closed, truly)]
        self.verdicts = [max(a, b) for a, b in zip(self.verdicts, other.verdicts)]
        self.count += self.closed[0] - before


def _totals(value: Any, n: int) -> list[int]:
    if value is None:
        return [0] * n
    totals = [int(x) for x in value]
    if len(totals) != n or min(totals) < 0:
        raise ValueError("bad totals")
    return totals
