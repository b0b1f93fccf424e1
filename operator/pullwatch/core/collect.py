"""Scan's side of the detector: observations judged into what each Finding keeps, then built.

``Collector.add`` judges each observation (the same rules, allowlist, scanner names and
Suppressions as the operator, through ``Detector.judge``) and keeps it in the record of every
Finding it belongs to (see replay.py); ``Collector.findings`` builds them. ``merge`` does the same
from the records that scans wrote: the Findings of several scans, joined, are exactly those of
one scan over all their inputs.

What is bounded here, and why: a scan is exact over whatever it reads, so what each Finding
keeps is not bounded (one entry per Event series, container or pod creation it holds); what is
kept for Findings that may never exist is - who wrote an Event not yet seen (``MAX_PENDING``
authors) and who changed which workload (``MAX_WORKLOADS`` workloads, each its first and latest
``MAX_PEOPLE`` people).

    >>> from .allowlist import Allowlist
    >>> from .pulls import decode_event
    >>> c = Collector(Detector(Allowlist()))
    >>> ev = {"reason": "Pulling", "message": 'Pulling image "evil/x:1"',
    ...       "metadata": {"name": "w.1", "namespace": "web"},
    ...       "involvedObject": {"kind": "Pod", "name": "web-7d9f8b6c5d-x7k2p", "namespace": "web"}}
    >>> c.add(decode_event(ev))
    >>> [(b["metadata"]["name"], b["status"]["count"]) for b in c.bodies()]
    [('suspicious-web-x-caa14265e4', 1)]
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from typing import Any

from .. import API_VERSION
from .detector import Detector, covered_expiry, series_of, workload_of
from .findings import ActorRecord, Identity, instant, name_among, repository_of
from .judge import pull_slot
from .mergestate import STATE_VERSION
from .observations import ActorChange, Authored, Intent, Running
from .pulls import Pull
from .replay import MERGE_STATE, Cover, FindingRecord, build, pack, unpack
from .state import FindingState

CONTEXT_KIND = "ScanContext"
MAX_PENDING = 100_000
MAX_WORKLOADS = 200_000
MAX_PEOPLE = 5
MAX_TARGETS = 16384


class Collector:
    """``detector``: what judges new observations (None for a merge, which judges nothing:
    every record it joins was judged by the scan that wrote it)."""

    def __init__(self, detector: Detector | None, clock: float | None = None):
        self.detector = detector
        self.clock = clock  # the scan's own time: no Event time shown may be later
        self.records: dict[str, FindingRecord] = {}
        # identity -> its record, whatever its name (its name is computed once, not per pull)
        self._of_identity: dict[Identity, FindingRecord] = {}
        # (namespace, image, workload) -> the records its pulls go to, with how they were judged:
        # a workload's pods pull the same image again and again (judged once, as the operator's
        # Judge caches its verdicts)
        self._targets: dict[tuple[str, str, Any], list[tuple[FindingRecord, Any, Any, str]]] = {}
        self.authors: dict[str, set[str]] = {}  # series -> who wrote its Event (audit)
        self.people: dict[tuple[str, str], list[ActorRecord]] = {}  # workload -> its people
        self.pulls = 0  # pull observations judged, whether a rule fired or not
        # Hashes of (namespace, pod, container) with a pull Event, whatever the rules made of it:
        # a container found by its digest had its tag's pull Event all the same.
        self.pulled: set[int] = set()

    # -- judging ------------------------------------------------------------------------------
    def add(self, obs: Any) -> None:
        kind = obs.__class__
        if kind is Pull:
            self._pull(obs)
        elif kind is Running:
            self._running(obs)
        elif kind is Intent:
            self._intent(obs)
        elif kind is Authored:
            if obs.verb == "create":  # a later writer is not the author (authorship.py)
                self._note_author(f"{obs.namespace}/{obs.name}", obs.actor.user)
        elif kind is ActorChange:
            self._note_person(
                (obs.namespace, obs.workload), ActorRecord.of(obs.actor, obs.action, obs.time)
            )

    def record_of(self, identity: Identity) -> FindingRecord:
        """The record of ``identity``'s Finding, made the first time."""
        record = self._of_identity.get(identity)
        if record is not None:
            return record
        record = self.records.get(identity.name)
        if record is None or record.identity != identity:
            # a name is one identity's only: after a collision, a salted one (name_among)
            name = identity.name if record is None else name_among(identity, self._holder)
            record = self.records.get(name)
            if record is None:
                record = self.records[name] = FindingRecord(identity, name)
        self._of_identity[identity] = record
        return record

    def merge_record(self, record: FindingRecord) -> None:
        """Join what another scan (or another range of this one) kept for a Finding; ``record``
        is this collector's afterwards."""
        held = self.record_of(record.identity)
        if held.pulls or held.runnings or held.intents:
            held.merge(record)
            return
        record.name = held.name  # nothing kept here yet: the record itself, under our name
        self.records[held.name] = self._of_identity[record.identity] = record
        self._targets.clear()  # they may name the record this one replaced

    def _holder(self, name: str) -> Identity | None:
        record = self.records.get(name)
        return record.identity if record is not None else None

    def _pull(self, pull: Pull) -> None:
        self.pulls += 1
        assert self.detector is not None
        slot = self.note_pulled(
            pull.namespace, pull.involved.name, pull.involved.container or "", pull.image
        )
        workload = workload_of(pull)
        series = series_of(pull)
        key = (pull.namespace, pull.image, workload)
        targets = self._targets.get(key)
        if targets is None:
            judged = self.detector.judge(pull.namespace, pull.image, workload)
            targets = [(self.record_of(i), rule, na, image) for i, rule, na, image in judged]
            if len(self._targets) >= MAX_TARGETS:
                self._targets.clear()  # crude but bounded; judging again is exact
            self._targets[key] = targets
        if not targets:
            return
        when = None
        if self.detector.suppressions.could_cover(pull.namespace):
            moment = instant(pull.last_seen or pull.first_seen or "")
            when = moment.timestamp() if moment is not None else 0.0
        for record, rule, not_allowed, image in targets:
            cover = None
            if when is not None:
                cover = _cover_of(
                    self.detector.covering(rule, pull.namespace, workload.name, image, when)
                )
            record.add_pull(pull, workload, not_allowed, cover, series, slot)
        if pull.actor is not None and pull.actor.user:
            self._note_author(series, pull.actor.user)

    def note_pulled(self, namespace: str, pod: str, container: str, image: str) -> int:
        slot = pull_slot(namespace, pod, container, image)
        self.pulled.add(slot)
        return slot

    def _running(self, run: Running) -> None:
        assert self.detector is not None
        fired, _ = self.detector.run_rules(run)  # by the spec and by what the kubelet reports
        for rule, ref, not_allowed in fired:
            repository = ref.repository if ref else repository_of(run.image)
            identity = Identity(rule.short, run.namespace, run.workload.name, repository)
            self.record_of(identity).add_running(run, not_allowed)

    def _intent(self, intent: Intent) -> None:
        assert self.detector is not None
        for identity, _, not_allowed, _ in self.detector.judge(
            intent.namespace, intent.image, intent.workload
        ):
            self.record_of(identity).add_intent(intent, not_allowed)

    def _note_author(self, series: str, user: str | None) -> None:
        if not user:
            return
        users = self.authors.get(series)
        if users is None:
            if len(self.authors) >= MAX_PENDING:
                del self.authors[next(iter(self.authors))]
            users = self.authors[series] = set()
        if len(users) < 8:
            users.add(user)

    def _note_person(self, key: tuple[str, str], record: ActorRecord) -> None:
        people = self.people.get(key)
        if people is None:
            if len(self.people) >= MAX_WORKLOADS:
                del self.people[next(iter(self.people))]
            people = self.people[key] = []
        keep_people(people, [record])

    # -- building -----------------------------------------------------------------------------
    def findings(self) -> list[tuple[FindingRecord, FindingState]]:
        """Every Finding, built, sorted by namespace and name."""
        out = []
        for name in sorted(self.records, key=lambda n: (self.records[n].identity.namespace, n)):
            record = self.records[name]
            self._note_pulled_elsewhere(record)
            out.append((record, build(record, self.authors, self.people, self.clock)))
        return out

    def _note_pulled_elsewhere(self, record: FindingRecord) -> None:
        ns = record.identity.namespace
        for run, _ in record.runnings.values():
            images = (run.image, *run.reported)
            if any(pull_slot(ns, run.pod, run.container, i) in self.pulled for i in images):
                record.pulled.add((run.pod, run.container))

    def bodies(self) -> Iterator[dict[str, Any]]:
        """The Findings' bodies, each with its merge state; built one at a time."""
        for name in self.names():
            yield self.body_of(name)

    def names(self) -> list[str]:
        """The Findings' names in the order of :meth:`bodies` (by namespace, then name)."""
        return sorted(self.records, key=lambda n: (self.records[n].identity.namespace, n))

    def body_of(self, name: str) -> dict[str, Any]:
        """One Finding's body with its merge state: a function of the records alone, so that
        Findings can be built in any order, or in other processes."""
        record = self.records[name]
        self._note_pulled_elsewhere(record)
        state = build(record, self.authors, self.people, self.clock)
        return with_state(
            state.body(),
            record,
            self._authors_of(record),
            self.people.get(_workload_key(record.identity), []),
        )

    def _authors_of(self, record: FindingRecord) -> dict[str, list[str]]:
        return {s: sorted(self.authors[s]) for s in sorted(record.pulls) if s in self.authors}

    def context(self) -> dict[str, Any] | None:
        """Who changed the workloads that have no Finding here (a Finding of another shard may
        need them): a ``ScanContext`` document, or None when there is nothing to carry."""
        kept = {_workload_key(r.identity) for r in self.records.values()}
        people = {k: v for k, v in self.people.items() if k not in kept}
        # The containers with a pull Event that no Finding here holds (allowed images, mostly):
        # a container of another shard found by its digest may have had one of them.
        pulled = self.pulled - self._record_slots()
        if not people and not pulled:
            return None
        rows = [[ns, wl, [_person_row(p) for p in ps]] for (ns, wl), ps in sorted(people.items())]
        hashes = base64.b64encode(b"".join(h.to_bytes(6, "big") for h in sorted(pulled)))
        return {
            "apiVersion": API_VERSION,
            "kind": CONTEXT_KIND,
            "metadata": {"name": "scan-context"},
            "state": pack({"v": STATE_VERSION, "people": rows, "pulled": hashes.decode()}),
        }

    def _record_slots(self) -> set[int]:
        """The (namespace, pod, container) slots the records' own pulls hold."""
        return set().union(*(r.slots() for r in self.records.values()))


def keep_people(people: list[ActorRecord], more: Iterable[ActorRecord]) -> None:
    """A workload's people: the earliest and the latest ``MAX_PEOPLE``, in time order (a join:
    the same whatever order they come in)."""
    merged = sorted(
        set(people) | set(more), key=lambda a: (a.time or "", a.user or "", a.action or "")
    )
    people[:] = merged[:1] + merged[1:][-MAX_PEOPLE:] if len(merged) > 1 else merged


def with_state(
    body: dict[str, Any],
    record: FindingRecord,
    authors: dict[str, list[str]],
    people: list[ActorRecord],
) -> dict[str, Any]:
    """The body with what it kept, as the annotation that ``merge`` reads."""
    state = record.encode()
    extra = (
        pack({"v": STATE_VERSION, "authors": authors, "people": [_person_row(p) for p in people]})
        if authors or people
        else _NOBODY  # what most Findings of an Event stream carry: packed once
    )
    body["metadata"]["annotations"] = {MERGE_STATE: f"{state} {extra}"}
    return body


_NOBODY = pack({"v": STATE_VERSION, "authors": {}, "people": []})


def merge(documents: Iterable[tuple[str, Any]], clock: float | None = None) -> Collector:
    """The Findings of several scans, joined: exactly those of one scan over all their inputs.
    Raises ValueError (naming the document) for a Finding without a merge state - the
    operator's Findings have none - or with a damaged one, or from another version."""
    from .body import identity_of

    collector = Collector(None, clock)
    for where, doc in documents:
        if not isinstance(doc, dict):
            raise ValueError(f"{where}: not a Finding or {CONTEXT_KIND} document")
        if doc.get("kind") == CONTEXT_KIND and doc.get("apiVersion") == API_VERSION:
            _merge_context(collector, doc, where)
            continue
        try:
            identity = identity_of(doc)
            text = ((doc.get("metadata") or {}).get("annotations") or {}).get(MERGE_STATE)
            if text is None:
                raise ValueError(
                    "it has no merge state: only Findings written by `pullwatch scan` merge "
                    "(the operator's Findings are already one cluster's, exactly)"
                )
            state, _, extra = str(text).partition(" ")
            record = FindingRecord.decode(identity, state)
            context = unpack(extra)
            for series, users in context.get("authors", {}).items():
                for user in users:
                    collector._note_author(series, user)
            keep_people(
                collector.people.setdefault(_workload_key(identity), []),
                [_person_of(r) for r in context.get("people", [])],
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        collector.merge_record(record)
    collector.pulled |= collector._record_slots()
    for record in collector.records.values():
        collector.pulled |= record.superseded_slots()
    return collector


def _merge_context(collector: Collector, doc: dict[str, Any], where: str) -> None:
    try:
        state = unpack(doc.get("state"))
        for ns, wl, rows in state["people"]:
            keep_people(collector.people.setdefault((ns, wl), []), [_person_of(r) for r in rows])
        raw = base64.b64decode(state.get("pulled", ""), validate=True)
        if len(raw) % 6:
            raise ValueError("pulled hashes cut short")
        collector.pulled.update(
            int.from_bytes(raw[i : i + 6], "big") for i in range(0, len(raw), 6)
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{where}: damaged {CONTEXT_KIND} ({exc})") from None


def _workload_key(identity: Identity) -> tuple[str, str]:
    return identity.namespace, identity.workload


def _person_row(p: ActorRecord) -> list[Any]:
    return [p.user, list(p.groups), list(p.source_ips), p.user_agent, p.action, p.time]


def _person_of(row: list[Any]) -> ActorRecord:
    return ActorRecord(row[0], tuple(row[1]), tuple(row[2]), row[3], row[4], row[5])


def _cover_of(s: Any) -> Cover | None:
    if s is None:
        return None
    return Cover(s.namespace, s.name, s.reason, covered_expiry(s) if s.expires else None)
