"""A Finding as a function of its observations: what makes ``scan`` order-free and mergeable.

``pullwatch scan`` does not build Findings as it reads. It judges each observation (which
Findings it belongs to - a pure function of the observation and the configuration) and keeps,
per Finding, the highest observation of each Event series (a series' counts only grow, so that
one says everything its lower ones said), each container seen running and each pod created with
the image. At the end every Finding is *built* from what it kept, in a canonical order. So:

* the output does not depend on the order of the inputs or of the records in them;
* what a Finding kept is a join (per key, the highest wins; a union), so two scans' Findings
  can be merged exactly: ``merge(scan(A), scan(B)) == scan(A + B)``. Each Finding that scan
  writes carries what it kept in the annotation ``MERGE_STATE``; what belongs to no Finding of
  a shard (who changed a workload, who wrote an Event, for a Finding of another shard) goes into
  one ``ScanContext`` document.

The operator counts incrementally instead (``Detector.observe``), through the same
``FindingState`` methods.

    >>> from .pulls import decode_event
    >>> from .workload import infer
    >>> ev = {"reason": "Pulling", "message": 'Pulling image "kube-hunter"', "count": 2,
    ...       "metadata": {"name": "h.1", "namespace": "ci"},
    ...       "involvedObject": {"kind": "Pod", "name": "hunter", "namespace": "ci"}}
    >>> record = FindingRecord(Identity("scanner", "ci", "hunter", "docker.io/library/kube-hunter"))
    >>> record.add_pull(decode_event(dict(ev, count=3)), infer("hunter"), None, None)
    >>> record.add_pull(decode_event(ev), infer("hunter"), None, None)  # lower: adds nothing
    >>> again = FindingRecord.decode(record.identity, record.encode())
    >>> build(again, {}, {}).count
    3
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .findings import ActorRecord, Identity, Origin, minute_of
from .imageref import InvalidImageReference, parse_image
from .judge import pull_slot, ran_image_of
from .ledger import FORGED, UNKNOWN, VERIFIED
from .mergestate import (
    STATE_VERSION,
    intent_of,
    intent_row,
    pack,
    pull_of,
    pull_row,
    running_of,
    running_row,
    unpack,
)
from .observations import Intent, Running
from .pulls import Pull
from .state import AUDIT, EVENTS, PENDING, FindingState
from .workload import Workload

MERGE_STATE = "pullwatch.dev/merge-state"


class Cover(NamedTuple):
    """The Suppression that covered a pull when it happened (judged at scan time)."""

    namespace: str
    name: str
    reason: str
    expires: str | None

    def as_dict(self) -> dict[str, Any]:
        out = {"namespace": self.namespace, "name": self.name, "reason": self.reason}
        if self.expires is not None:
            out["expires"] = self.expires
        return out


def pull_rank(pull: Pull) -> tuple[Any, ...]:
    """Which of two observations of one series says more: the higher count, then the later,
    then a total order on the rest (so that the choice never depends on input order)."""
    return (
        pull.count,
        pull.last_seen or "",
        pull.first_seen or "",
        pull.kind,
        pull.image,
        pull.node or "",
        pull.error or "",
        pull.component or "",
        # Two requests can say the same of one series (a create and a patch of the same count,
        # a forged repeat): who wrote each breaks the tie.
        pull.source,
        repr(pull.actor),
        # A writer may rewrite only what the Event names (kubectl patch of its involvedObject):
        # the same count and times, so without these whichever came first would be kept.
        pull.reason,
        repr(pull.involved),
    )


def _rank(obs: Running | Intent, not_allowed: str | None) -> tuple[str, str, str]:
    """A total order on observations of one key: which one is kept never depends on the order
    they came in (the latest, then any order at all, so that no two that differ tie)."""
    when = obs.started_at if isinstance(obs, Running) else obs.time
    return when or "", repr(obs), not_allowed or ""


class FindingRecord:
    """What one Finding kept: per series its highest pull, the containers seen running it and
    the pods created with it, each with how it was judged (never judged again)."""

    __slots__ = ("identity", "intents", "name", "pulled", "pulls", "runnings", "superseded")

    def __init__(self, identity: Identity, name: str | None = None):
        self.identity = identity
        self.name = name or identity.name  # another only after a collision (name_among)
        # series -> [pull, workload, not_allowed, cover, witnesses, slot]; the slot (judge.py's
        # pull_slot of the pull, or None until asked) is the scan's to fill: hashed once when
        # the pull is taken, not again for the scan context of every record
        self.pulls: dict[str, list[Any]] = {}
        self.runnings: dict[tuple[str, str, str], tuple[Running, str | None]] = {}
        self.intents: dict[tuple[str, str], tuple[Intent, str | None]] = {}
        # (pod, container) of its runnings whose pull Event went elsewhere (kept for a merge)
        self.pulled: set[tuple[str, str]] = set()
        # Pull slots of a series' observations that another one of it outranked while naming
        # another container (an Event rewritten by its writer): the pull Event was seen all the
        # same, and a merge must know it although the record keeps only the highest pull
        self.superseded: set[int] | None = None

    def add_pull(
        self,
        pull: Pull,
        workload: Workload,
        not_allowed: str | None,
        cover: Cover | None,
        series: str | None = None,
        slot: int | None = None,
    ) -> None:
        series = series or pull.series or ""
        bit = AUDIT if pull.source == "audit" else EVENTS
        held = self.pulls.get(series)
        if held is None:
            self.pulls[series] = [pull, workload, not_allowed, cover, bit, slot]
            return
        held[4] |= bit
        kept = held[0]
        if pull_rank(pull) > pull_rank(kept):
            lost, lost_slot = kept, held[5]
            held[0], held[1], held[2], held[3], held[5] = pull, workload, not_allowed, cover, slot
            kept = pull
        else:
            lost, lost_slot = pull, slot
        if (lost.involved.name, lost.involved.container, lost.image) != (
            kept.involved.name,
            kept.involved.container,
            kept.image,
        ):  # (the kubelet's own series never do this: it counts up one container's pulls)
            lost_slot = self._slot(lost, lost_slot)
            if held[5] is None:
                held[5] = self._slot(kept, None)
            if lost_slot != held[5]:
                if self.superseded is None:
                    self.superseded = set()
                self.superseded.add(lost_slot)

    def _slot(self, pull: Pull, slot: int | None) -> int:
        if slot is not None:
            return slot
        inv = pull.involved
        return pull_slot(self.identity.namespace, inv.name, inv.container or "", pull.image)

    def slots(self) -> set[int]:
        """The pull slots of the pulls it keeps (one per series)."""
        out = set()
        for held in self.pulls.values():
            if held[5] is None:
                held[5] = self._slot(held[0], None)
            out.add(held[5])
        return out

    def superseded_slots(self) -> set[int]:
        """The pull slots of outranked observations that none of its kept pulls holds: the same
        whatever order the observations came in (a slot outranked in one order and kept in
        another is a kept one)."""
        return self.superseded - self.slots() if self.superseded else set()

    def add_running(self, run: Running, not_allowed: str | None) -> None:
        key = (run.pod, run.container, run.digest or "")
        held = self.runnings.get(key)
        run = run._replace(at_startup=False)  # the scan's clock knows no start-up
        if held is None or _rank(run, not_allowed) > _rank(*held):
            self.runnings[key] = (run, not_allowed)

    def add_intent(self, intent: Intent, not_allowed: str | None) -> None:
        key = (intent.audit_id, intent.container)
        held = self.intents.get(key)
        if held is None or _rank(intent, not_allowed) > _rank(*held):
            self.intents[key] = (intent, not_allowed)

    def merge(self, other: FindingRecord) -> None:
        for series, (pull, workload, not_allowed, cover, bits, slot) in other.pulls.items():
            self.add_pull(pull, workload, not_allowed, cover, series, slot)
            self.pulls[series][4] |= bits
        if other.superseded:
            self.superseded = (self.superseded or set()) | other.superseded
        for run, not_allowed in other.runnings.values():
            self.add_running(run, not_allowed)
        for intent, not_allowed in other.intents.values():
            self.add_intent(intent, not_allowed)
        self.pulled |= other.pulled

    # -- the stored form (the MERGE_STATE annotation) ---------------------------------------
    def encode(self) -> str:
        doc = {
            "v": STATE_VERSION,
            "pulls": [
                [s, *pull_row(p), list(w), na, list(c) if c else None, bits]
                for s, (p, w, na, c, bits, _) in sorted(self.pulls.items())
            ],
            "running": [
                [*running_row(r), na]
                for (r, na) in (self.runnings[k] for k in sorted(self.runnings))
            ],
            "pulled": sorted([p, c] for p, c in self.pulled),
            "intents": [
                [*intent_row(i), na] for (i, na) in (self.intents[k] for k in sorted(self.intents))
            ],
        }
        superseded = self.superseded_slots()
        if superseded:  # written only when there are any: what most states never need
            doc["superseded"] = sorted(superseded)
        return pack(doc)

    @classmethod
    def decode(cls, identity: Identity, text: Any) -> FindingRecord:
        """Raises ValueError for a state this version did not write, or a damaged one."""
        doc = unpack(text)
        record = cls(identity)
        try:
            for row in doc["pulls"]:
                series = row[0]
                pull = pull_of(row[1:17], identity.namespace)._replace(series=series)
                workload, not_allowed, cover, bits = Workload(*row[17]), row[18], row[19], row[20]
                record.add_pull(
                    pull, workload, not_allowed, Cover(*cover) if cover else None, series
                )
                record.pulls[series][4] |= int(bits)
            for row in doc["running"]:
                record.add_running(running_of(row[:-1], identity.namespace), row[-1])
            for row in doc["intents"]:
                record.add_intent(intent_of(row[:-1], identity.namespace), row[-1])
            record.pulled = {(str(p), str(c)) for p, c in doc.get("pulled", [])}
            superseded = doc.get("superseded", [])
            if not isinstance(superseded, list) or not all(
                h.__class__ is int and 0 <= h < 1 << 48 for h in superseded
            ):
                raise ValueError("superseded slots that are not pull slots")
            if superseded:
                record.superseded = set(superseded)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ValueError(f"damaged merge state ({type(exc).__name__}: {exc})") from None
        return record


def verdict(pull: Pull, authors: frozenset[str] | set[str] | None) -> int:
    """A series' verdict from everyone who wrote its Event (audit): forged if any of them is not
    the kubelet of the node it names, or if the Event names another namespace than its own."""
    if pull.claimed_namespace is not None:
        return FORGED
    if not authors and (pull.actor is None or not pull.actor.user):
        return UNKNOWN  # what most series of an Event stream are: no set built
    users = set(authors or ())
    if pull.actor is not None and pull.actor.user:
        users.add(pull.actor.user)
    if not users:
        return UNKNOWN
    node = f"system:node:{pull.node}" if pull.node else None
    return VERIFIED if users == {node} else FORGED


def build(
    record: FindingRecord,
    authors: dict[str, set[str]],
    actors: dict[tuple[str, str], list[ActorRecord]],
    clock: float | None = None,
    pulled: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
) -> FindingState:
    """``pulled``: (pod, container) whose pull Event was seen in another Finding or judged by no
    rule (a container found by its digest had its tag's pull Event all the same).

    The Finding, from what it kept, in a canonical order: the earliest observation is its
    origin; authors give each series its verdict; the workload's people are its actors."""
    from .body import stamp

    identity = record.identity
    now_stamp = stamp(clock) if clock is not None else None
    pulls = sorted(
        record.pulls.items(),
        key=lambda kv: (kv[1][0].first_seen or kv[1][0].last_seen or "", kv[0]),
    )
    runs = sorted(
        record.runnings.values(),
        key=lambda rn: (rn[0].started_at or "", rn[0].pod, rn[0].container),
    )
    intents = sorted(
        record.intents.values(), key=lambda i: (i[0].time or "", i[0].audit_id, i[0].container)
    )
    state: FindingState | None = None
    for series, (pull, workload, not_allowed, cover, bits, _) in pulls:
        authored = authors.get(series)
        v = verdict(pull, authored)
        if state is None:
            origin = Origin.of(pull, workload, not_allowed)
            if v != UNKNOWN and origin.verified is None:
                origin = origin._replace(
                    verified=v == VERIFIED, author=next(iter(sorted(authored or ())), None)
                )
            state = FindingState(identity, origin, name=record.name)
        minute = minute_of(pull.last_seen or pull.first_seen) or 0
        delta = state.observe_pull(pull, series, minute, v, None, now_stamp)
        state.witnesses |= bits
        if cover is not None:
            state.suppressed_pulls += delta
    if pulls:  # what the latest pull says (observe_pull reads neither)
        latest, cover = pulls[-1][1][0], pulls[-1][1][3]
        state.last_image = _normalized(latest.image)  # type: ignore[union-attr]
        state.suppression = cover.as_dict() if cover is not None else None  # type: ignore[union-attr]
    for run, not_allowed in runs:
        if state is None:
            state = FindingState(
                identity,
                Origin.of_running(run.image, run.node, run.workload, not_allowed),
                name=record.name,
            )
        state.observe_running(run, minute_of(run.started_at) or 0, PENDING, None, ran_image_of(run))
    people = list(actors.get((identity.namespace, identity.workload), ()))
    for intent, not_allowed in intents:
        if state is None:
            state = FindingState(
                identity,
                Origin.of_running(intent.image, None, intent.workload, not_allowed, source="audit"),
                name=record.name,
            )
        state.observe_intent(intent)
        if intent.actor is not None and intent.actor.user:
            people.append(ActorRecord.of(intent.actor, "create pods", intent.time))
    if state is None:
        raise ValueError(f"Finding {identity.name} kept nothing")
    for run, _ in runs:
        elsewhere = (run.pod, run.container) in pulled or (run.pod, run.container) in record.pulled
        state.settle_pull_event(run.pod, run.container, elsewhere)  # every input read: no grace
    for person in sorted(set(people), key=lambda a: (a.time or "", a.user or "", a.action or "")):
        state.note_actor(person)  # the earliest becomes spec.actor
    return state


def _normalized(image: str) -> str:
    try:
        return parse_image(image).normalized
    except InvalidImageReference:
        return image
