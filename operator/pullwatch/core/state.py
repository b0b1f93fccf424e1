"""One Finding's state: exact counts (the ledger), the evidence, and what the witnesses added.

A Finding is changed only through the ``observe_*`` methods, one per kind of observation; each
says what it changed, so the caller knows what to write. Counting is the ledger's (exact across
restarts and relists); a ``Running`` or an ``Intent`` never adds to ``count``: a container seen
running is evidence that the image ran, not another pull.

Times: an Event's own timestamps are shown (``firstSeen``/``lastSeen``) but never trusted - a
future one is clamped to the observer's clock (``now``), and what the operator decides by time
(retention, when a ledger slot is closed) uses its own clock: ``last_observed`` and ``touched``.

At rest, the evidence is packed (see evidence.py); ``evidence()`` unpacks it, explicitly. What
the detector and the maintenance touch on every Finding - the count, the routing keys, the newest
ledger minute, the witnesses - stays at hand.
"""

from __future__ import annotations

from typing import Any

from .evidence import EXPIRED, MISSING, PENDING, SEEN, Evidence, pack, unpack
from .findings import ActorRecord, Identity, Origin, cut, earlier, later
from .ledger import FAILED, FORGED, UNKNOWN, Ledger
from .observations import Intent, Running
from .pulls import Pull, error_class

EVENTS, AUDIT, PODS = 1, 2, 4  # witnesses, as bits
WITNESSES = (("events", EVENTS), ("pods", PODS), ("audit", AUDIT))
_HOT_KEYS = (
    "count",
    "firstSeen",
    "lastSeen",
    "lastObserved",
    "lastImage",
    "suppression",
    "suppressedPulls",
)


class FindingState:
    __slots__ = (
        "__weakref__",
        "_count",
        "_ev",
        "_keys",
        "_newest",
        "_packed",
        "first_seen",
        "identity",
        "last_image",
        "last_observed",
        "last_seen",
        "name",
        "suppressed_pulls",
        "suppression",
        "touched",
        "witnesses",
    )

    def __init__(
        self,
        identity: Identity,
        origin: Origin,
        ledger: Ledger | None = None,
        name: str | None = None,
    ):
        self.identity = identity
        # kept: names are asked for all the time, and cost a hash. Another one than the
        # identity's own only after a collision (see findings.name_among).
        self.name = name or identity.name
        self._ev: Evidence | None = Evidence(origin, ledger)
        self._packed: bytes | None = None  # set: cold
        self._count = 0
        self._keys: tuple[int, ...] = ()
        self._newest: int | None = None
        self.touched = 0  # minute of the latest observation (the observer's clock): what cools
        self.last_observed = 0.0  # epoch seconds of it (the operator's clock): what retains
        self.first_seen: str | None = None
        self.last_seen: str | None = None
        self.last_image: str | None = None  # the latest pull's image, normalized
        self.suppression: dict[str, Any] | None = None  # the Suppression covering it, if any
        self.suppressed_pulls = 0
        self.witnesses = 0

    @property
    def namespace(self) -> str:
        return self.identity.namespace

    @property
    def count(self) -> int:
        return self._count if self._packed is not None else self._ev.ledger.count  # type: ignore[union-attr]

    @property
    def has_evidence(self) -> bool:
        """Worth a Finding: a pull counted, a container seen running, or a pod created with it."""
        return self.count > 0 or bool(self.witnesses & (PODS | AUDIT))

    # -- cold and warm -----------------------------------------------------------------------
    @property
    def cold(self) -> bool:
        return self._packed is not None

    def evidence(self) -> Evidence:
        """The evidence, unpacked first if the Finding was at rest (a zlib inflate and a JSON
        parse: cheap once, not for every Finding on every pass)."""
        if self._packed is not None:
            parts = unpack(self._packed)
            ledger = Ledger.decode(parts.pop("ledger"))
            self._ev = Evidence.from_status(parts, Origin.from_dict(parts["origin"]), ledger)
            self._packed, self._keys = None, ()
        return self._ev  # type: ignore[return-value]

    def cool(self) -> None:
        """Pack the evidence (the Finding is at rest until its next observation)."""
        if self._packed is not None:
            return
        ev = self._ev
        assert ev is not None
        parts = ev.parts()
        parts["ledger"] = ev.ledger.encode(max_series=None)
        self._count, self._keys = ev.ledger.count, tuple(ev.ledger.series)
        self._newest = max((t[5] for t in ev.ledger.slots.values()), default=None)
        self._packed, self._ev = pack(parts), None

    def series_keys(self) -> Any:
        """The hashes of the live series (routing), cold or warm."""
        return self._keys if self._packed is not None else self._ev.ledger.series.keys()  # type: ignore[union-attr]

    def close_before(self, minute: int) -> int:
        """Close the ledger slots not updated since ``minute``. A cold Finding is unpacked only
        when some of them are that old (it is then written smaller)."""
        if self._packed is not None and (self._newest is None or self._newest >= minute):
            return 0
        return self.evidence().ledger.close_before(minute)

    # -- observing ---------------------------------------------------------------------------
    def _touch(self, minute: int, now: float | None) -> None:
        self.touched = max(self.touched, minute)
        if now is not None:
            self.last_observed = max(self.last_observed, now)

    def observe_pull(
        self,
        pull: Pull,
        series: str,
        minute: int,
        verdict: int = UNKNOWN,
        now: float | None = None,
        now_stamp: str | None = None,
    ) -> int:
        """Count one observation of a pull Event; return the pulls it adds (0 for a repeat).
        ``now_stamp``: the observer's clock as RFC 3339 - a later Event time is clamped to it."""
        ev = self._ev if self._packed is None else self.evidence()
        assert ev is not None
        self.witnesses |= AUDIT if pull.source == "audit" else EVENTS
        involved = pull.involved
        pod, container = involved.name, involved.container or ""
        new, delta = ev.ledger.take(
            series, (pod, container), pull.kind, pull.count, minute, verdict, pull.uid
        )
        # Only what is new is a new observation: an Event delivered again (a relist, a
        # restart) neither refreshes retention nor keeps the Finding from cooling.
        if new or delta:
            self._touch(minute, now)
        when = pull.last_seen or pull.first_seen
        first = pull.first_seen
        if now_stamp is not None:  # a time from the future is clamped; a missing one stays so
            when = earlier(when, now_stamp) if when else when
            first = earlier(first, now_stamp) if first else first
        self.first_seen = earlier(self.first_seen, first)
        self.last_seen = later(self.last_seen, when)
        if verdict == FORGED and pull.actor is not None and pull.actor.user:
            ev.forged_by = cut(pull.actor.user, 253)
        if verdict != UNKNOWN and ev.origin.verified is None:
            ev.origin = with_reporter(ev.origin, pull, verdict)
        if pull.kind == FAILED and pull.error is not None:
            previous = ev.last_error[2] if ev.last_error else None
            if later(previous, when) == when:
                ev.last_error = (error_class(pull.error), cut(pull.error, 300), when)
        if delta:
            ev.note_image(pull.image, delta)
        ev.note_pod(pod, pull.node, container, delta, when)
        return delta

    def observe_running(
        self,
        run: Running,
        minute: int,
        pull_event: str,
        now: float | None = None,
        ran_image: str | None = None,
    ) -> bool:
        """A container seen running (never a pull); whether it is new to this Finding.
        ``pull_event``: SEEN when the slot already has a pull series, else PENDING or EXPIRED.
        ``ran_image``: what the kubelet reports ran, when it is not the spec's repository."""
        ev = self.evidence()
        self._touch(minute, now)
        self.witnesses |= PODS
        if pull_event == PENDING and self._pulled_here(run.pod, run.container):
            pull_event = SEEN
        entry = [
            cut(run.pod, 253),
            cut(run.container, 63),
            cut(run.node, 253),
            cut(run.digest, 80),
            run.started_at if isinstance(run.started_at, str) else None,
            pull_event,
            run.at_startup,
            cut(ran_image, 256),
        ]
        started = entry[4]
        if started is not None:
            self.first_seen = earlier(self.first_seen, started)
            self.last_seen = later(self.last_seen, started)
        return ev.note_running(entry)

    def settle_pull_event(self, pod: str, container: str, elsewhere: bool = False) -> str | None:
        """The grace for a container's pull Event is over: SEEN if a pull of it was counted
        meanwhile, else MISSING (it ran with no pull Event: the evasion signal). Returns the new
        state when it changed, else None."""
        ev = self.evidence()
        entry = ev.running.get(f"{pod}\0{container}")
        if entry is None or entry[5] != PENDING:
            return None
        entry[5] = SEEN if elsewhere or self._pulled_here(pod, container) else MISSING
        if entry[5] == MISSING:
            ev.without_pull_event += 1
        return entry[5]

    def _pulled_here(self, pod: str, container: str) -> bool:
        """A pull of this container counted here: of this Finding's repository - except in an
        overflow Finding, which counts pulls of any image (the caller knows which it named)."""
        return not self.identity.is_overflow and self.evidence().ledger.has_slot(pod, container)

    def observe_intent(self, intent: Intent, now: float | None = None) -> bool:
        """A pod created with this image (audit): what was meant to run, and by whom."""
        from .evidence import note

        ev = self.evidence()
        self.witnesses |= AUDIT
        if now is not None:
            self.last_observed = max(self.last_observed, now)
        end = {"pod": cut(intent.pod, 253), "container": cut(intent.container, 63)}
        if intent.actor is not None and intent.actor.user:
            end["user"] = cut(intent.actor.user, 253)
        if intent.time:
            end["time"] = cut(intent.time, 40)
        new = note(ev.intent_hashes, f"{intent.pod}\0{intent.container}")
        current = ev.intent or {"pods": 0}
        if not new and current.get("last") == end:
            return False
        current["pods"] = current.get("pods", 0) + new
        current.setdefault("first", end)
        current["last"] = end
        ev.intent = current
        return True

    def note_actor(self, record: ActorRecord, lead: bool = True) -> bool:
        """A person who changed the workload: the first to ``lead`` becomes ``spec.actor``."""
        ev = self.evidence()
        changed = ev.note_actor(record)
        if lead and ev.origin.actor is None:
            ev.origin = ev.origin._replace(actor=record)
            changed = True
        return changed

    def learn_author(self, series: str, verdict: int, author: str | None) -> bool:
        """Who really wrote a counted series' Event (its audit entry came after it)."""
        ev = self.evidence()
        changed = ev.ledger.set_verdict(series, verdict)
        if verdict == FORGED and author:
            ev.forged_by = cut(author, 253)
        # The first verdict learned stands for the origin (the first pull's author is almost
        # always the first to be learned: its audit entry comes first).
        if ev.origin.verified is None and verdict != UNKNOWN:
            ev.origin = ev.origin._replace(verified=verdict != FORGED, author=cut(author, 253))
            changed = True
        return changed

    def fold(self, identity: Identity, image: str, delta: int) -> None:
        """An overflow Finding: remember what was folded into it (a bounded sample, exact pulls)."""
        from .evidence import MAX_FOLDED, note

        ev = self.evidence()
        ev.folded_count += note(ev.folded_hashes, f"{identity.workload}\0{identity.repository}")
        key = f"{cut(identity.workload, 253)} {cut(image, 256)}"
        if key in ev.folded or len(ev.folded) < MAX_FOLDED:
            ev.folded[key] = ev.folded.get(key, 0) + delta

    # -- the body ----------------------------------------------------------------------------
    def body(self) -> dict[str, Any]:
        """The whole Finding, within its budget (see body.py). Pure: rendering changes nothing."""
        from .body import render

        return render(self)

    @classmethod
    def from_body(cls, body: Any) -> FindingState:
        """A state from a stored Finding (see body.state_from_body); raises ValueError."""
        from .body import state_from_body

        return state_from_body(body)

    # -- the same Finding, stored elsewhere ---------------------------------------------------
    def merge(self, other: FindingState) -> None:
        """Fold in the same Finding as stored elsewhere (never counts a pull twice)."""
        mine, theirs = self.evidence(), other.evidence()
        mine.ledger.merge(theirs.ledger)
        self.first_seen = earlier(self.first_seen, other.first_seen)
        self.last_seen = later(self.last_seen, other.last_seen)
        self.last_observed = max(self.last_observed, other.last_observed)
        self.witnesses |= other.witnesses
        for image, n in theirs.images.items():
            if image in mine.images or len(mine.images) < 10:
                mine.images[image] = max(mine.images.get(image, 0), n)
        mine.images_other = max(mine.images_other, theirs.images_other)
        for pod, entry in theirs.pods.items():
            mine.pods.setdefault(pod, entry)
        while len(mine.pods) > 10:
            del mine.pods[next(iter(mine.pods))]
        for key, entry in theirs.running.items():
            mine.running.setdefault(key, entry)
        while len(mine.running) > 10:
            del mine.running[next(iter(mine.running))]
        for attr in ("pod_hashes", "node_hashes", "running_hashes", "intent_hashes"):
            getattr(mine, attr).update(getattr(theirs, attr))
        mine.pod_count = max(mine.pod_count, theirs.pod_count, len(mine.pod_hashes))
        mine.node_count = max(mine.node_count, theirs.node_count, len(mine.node_hashes))
        mine.running_count = max(mine.running_count, theirs.running_count)
        mine.without_pull_event = max(mine.without_pull_event, theirs.without_pull_event)
        for digest, n in theirs.digests.items():
            if digest in mine.digests or len(mine.digests) < 10:
                mine.digests[digest] = max(mine.digests.get(digest, 0), n)
        if theirs.last_error and (
            later(mine.last_error[2] if mine.last_error else None, theirs.last_error[2])
            == theirs.last_error[2]
        ):
            mine.last_error = theirs.last_error
        for key, n in theirs.folded.items():
            if key in mine.folded or len(mine.folded) < 10:
                mine.folded[key] = max(mine.folded.get(key, 0), n)
        mine.folded_count = max(mine.folded_count, theirs.folded_count)
        for record in theirs.actors:
            if record not in mine.actors:
                mine.note_actor(record)
        mine.forged_by = mine.forged_by or theirs.forged_by
        mine.intent = mine.intent or theirs.intent
        if mine.origin.actor is None and theirs.origin.actor is not None:
            mine.origin = mine.origin._replace(actor=theirs.origin.actor)
        self.suppressed_pulls = max(self.suppressed_pulls, other.suppressed_pulls)
        self.last_image = self.last_image or other.last_image


def with_reporter(origin: Origin, pull: Pull, verdict: int) -> Origin:
    """The first verdict known stands for the origin, whichever witness brings it: the audit
    entry of the Event's create after the Event (learn_author), or with the pull itself - when a
    Finding begun by a pod or an intent (no reporter of its own) meets its first pull Event, or
    when the entry came before the Event. Without this, such a Finding's status counted the
    kubelet's verified pull while its spec.reportedBy never said so."""
    author = pull.actor.user if pull.actor is not None else None
    origin = origin._replace(
        verified=verdict != FORGED, author=cut(author, 253) if author else origin.author
    )
    if origin.component is None:
        claimed = pull.claimed_namespace
        origin = origin._replace(
            component=cut(pull.component), claimed_namespace=cut(claimed, 63) if claimed else None
        )
    return origin


def ran(outcomes: dict[str, int], running: int = 0) -> str:
    """``yes`` once a container was seen running it, or a pull succeeded or came from cache;
    ``no`` while every pull attempt that ended failed; ``unknown`` while none has ended."""
    if running or outcomes["succeeded"] or outcomes["cached"]:
        return "yes"
    return "no" if outcomes["failed"] or outcomes["backoff"] else "unknown"


def seen_by(witnesses: int) -> list[str]:
    return [name for name, bit in WITNESSES if witnesses & bit]


__all__ = ["AUDIT", "EVENTS", "EXPIRED", "MISSING", "PENDING", "PODS", "SEEN", "FindingState"]
