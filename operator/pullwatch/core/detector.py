"""Applying the rules to pulls and counting them exactly. Shared by ``scan`` and the operator.

Counting, and why it is exact:

* An Event object is a *series*: the kubelet raises ``count`` on the same object for repeats.
  Each series keeps a high-water mark, so a series seen again adds only the difference
  (ADDED count 2, then MODIFIED count 5 = 5 pulls; the same Event twice in a file = once;
  a relist after a restart = nothing new).
* A Pulling and the "Successfully pulled" that completes it are one pull. Per container the
  count is ``max(pulling, pulled) + present`` ("already present on machine" needs no Pulling).
  ``max`` also counts correctly when only one side of a pull was seen.
* The high-water marks live in the Finding's ``status`` (bounded to ``MAX_SERIES`` most recent
  series), so an operator that restarts, or re-lists after ``410 Gone``, can :meth:`seed` itself
  from the Findings and count on without doubling.

    >>> from .allowlist import Allowlist
    >>> from .pulls import decode_event
    >>> d = Detector(Allowlist())
    >>> ev = {"reason": "Pulling", "message": 'Pulling image "nginx"', "count": 2,
    ...       "metadata": {"uid": "e1", "namespace": "web"},
    ...       "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "web"}}
    >>> [x.delta for x in d.observe(decode_event(ev))]
    [2]
    >>> [x.delta for x in d.observe(decode_event(dict(ev, count=5)))]
    [3]
    >>> [x.delta for x in d.observe(decode_event(dict(ev, count=5)))]
    [0]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from .allowlist import Allowlist
from .findings import build_spec, earlier, finding_body, finding_name, later
from .imageref import ImageRef, InvalidImageReference, parse_image
from .pulls import PRESENT, PULLED, PULLING, Pull
from .rules import DEFAULT_SCANNER_IMAGES, SCANNER_RULE, SUSPICIOUS_RULE, Rule

MAX_SERIES = 128  # per Finding; Events live an hour by default, so old series are gone anyway


@dataclass(slots=True)
class FindingState:
    name: str
    namespace: str
    spec: dict[str, Any]
    # series id -> [kind, container, high-water count], insertion order = least recent first
    series: dict[str, list[Any]] = field(default_factory=dict)
    # container ("" when unknown) -> {pulling, pulled, present} totals, kept incrementally;
    # always equal to `retired` plus the high-water marks in `series`
    tallies: dict[str, dict[str, int]] = field(default_factory=dict)
    # the part of `tallies` from series evicted out of the bounded `series` map
    retired: dict[str, dict[str, int]] = field(default_factory=dict)
    count: int = 0
    first_seen: str | None = None
    last_seen: str | None = None
    spec_dirty: bool = False  # the spec changed after the Finding was first written

    def status(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "firstSeen": self.first_seen,
            "lastSeen": self.last_seen,
            "tallies": {c: dict(t) for c, t in sorted(self.tallies.items())},
            "retired": {c: dict(t) for c, t in sorted(self.retired.items())},
            "series": [{"id": sid, "kind": k, "container": c, "count": n}
                       for sid, (k, c, n) in self.series.items()],
        }

    def recount(self) -> None:
        """Rebuild tallies and count from `retired` and `series` (after a merge)."""
        tallies = {c: dict(t) for c, t in self.retired.items()}
        for kind, container, n in self.series.values():
            tally = tallies.setdefault(container, {PULLING: 0, PULLED: 0, PRESENT: 0})
            tally[kind] = tally.get(kind, 0) + n
        self.tallies = tallies
        self.count = _total(tallies)

    def body(self) -> dict[str, Any]:
        return finding_body(self.name, self.namespace, self.spec, self.status())


@dataclass(frozen=True)
class Detection:
    """What one observation did to one Finding. ``delta`` 0: a repeat, nothing new."""

    state: FindingState
    delta: int
    created: bool


def _total(tallies: dict[str, dict[str, int]]) -> int:
    return sum(max(t.get(PULLING, 0), t.get(PULLED, 0)) + t.get(PRESENT, 0) for t in tallies.values())


class Detector:
    """Holds the rules' configuration, the allowlist in force and the Findings' counting state.

    ``allowlist`` may be replaced at any time (the operator does on every AllowedImages change);
    the next pull is judged by the new one.
    """

    RULES_CACHE = 16384

    def __init__(self, allowlist: Allowlist, scanners: Iterable[str] = DEFAULT_SCANNER_IMAGES,
                 max_series: int = MAX_SERIES):
        self.scanners = frozenset(scanners)
        self.max_series = max_series
        self.states: dict[str, FindingState] = {}
        self._rules_cache: dict[tuple[str, str], list[tuple[Rule, ImageRef | None, str | None]]] = {}
        self.allowlist = allowlist

    @property
    def allowlist(self) -> Allowlist:
        return self._allowlist

    @allowlist.setter
    def allowlist(self, value: Allowlist) -> None:
        self._allowlist = value
        self._rules_cache = {}  # verdicts of the old allowlist must not outlive it

    def rules_for(self, namespace: str, image: str) -> list[tuple[Rule, ImageRef | None, str | None]]:
        """Which rules fire for ``image`` pulled in ``namespace``: (rule, parsed image, why not
        allowed). Cached: the same few hundred (namespace, image) pairs repeat all day."""
        key = (namespace, image)
        fired = self._rules_cache.get(key)
        if fired is not None:
            return fired
        try:
            ref: ImageRef | None = parse_image(image)
        except InvalidImageReference:
            ref = None
        fired = []
        # A scanner fires whether or not it is allowlisted: an allowlisted scanner still ran.
        if ref is not None and ref.last_component in self.scanners:
            fired.append((SCANNER_RULE, ref, None))
        verdict = self._allowlist.check(namespace, image)
        if not verdict.allowed:
            fired.append((SUSPICIOUS_RULE, ref, verdict.reason))
        if len(self._rules_cache) >= self.RULES_CACHE:
            self._rules_cache.clear()  # crude but bounded; refilling is cheap
        self._rules_cache[key] = fired
        return fired

    def observe(self, pull: Pull) -> list[Detection]:
        out = []
        for rule, ref, not_allowed in self.rules_for(pull.involved.namespace, pull.image):
            image_id = ref.normalized if ref else pull.image
            inv = pull.involved
            name = finding_name(rule.short, inv.namespace, inv.kind, inv.name, image_id)
            state = self.states.get(name)
            created = state is None
            if state is None:
                state = FindingState(name=name, namespace=inv.namespace,
                                     spec=build_spec(rule, pull, ref, not_allowed))
                self.states[name] = state
            out.append(Detection(state, self._count(state, pull), created))
        return out

    def _count(self, state: FindingState, pull: Pull) -> int:
        if pull.kind == PULLING and state.spec.get("reason") != "Pulling":
            # spec.reason is "Pulling" once any Pulling was seen, else "Pulled": a function of
            # the set of Events, not of their order, so scan and operator agree.
            state.spec["reason"] = "Pulling"
            state.spec_dirty = True
        container = pull.involved.container or ""
        if pull.series is None:
            added = pull.count  # nothing identifies the Event: every record is its own series
        else:
            entry = state.series.pop(pull.series, None)
            seen = entry[2] if entry else 0
            added = max(0, pull.count - seen)
            state.series[pull.series] = [pull.kind, container, max(seen, pull.count)]
            while len(state.series) > self.max_series:
                old_kind, old_container, old_count = state.series.pop(next(iter(state.series)))
                retired = state.retired.setdefault(old_container, {PULLING: 0, PULLED: 0, PRESENT: 0})
                retired[old_kind] += old_count
        if added:
            tally = state.tallies.setdefault(container, {PULLING: 0, PULLED: 0, PRESENT: 0})
            tally[pull.kind] += added
            before, state.count = state.count, _total(state.tallies)
            delta = state.count - before
        else:
            delta = 0
        state.first_seen = earlier(state.first_seen, pull.first_seen)
        state.last_seen = later(state.last_seen, pull.last_seen)
        return delta

    def merge(self, body: dict[str, Any]) -> FindingState | None:
        """Fold a Finding as stored in the API server into the local state (None if unusable).

        Per series the higher high-water mark wins (and per retired tally the higher total), so
        merging what this process counted with what an earlier run (or another writer) stored
        never counts a pull twice. Used on start-up, on 409 Conflict and on 409 AlreadyExists.
        """
        try:
            meta, spec, status = body["metadata"], body["spec"], body.get("status") or {}
            name, namespace = str(meta["name"]), str(meta["namespace"])
            series = [(str(i["id"]), str(i["kind"]), str(i.get("container") or ""), int(i["count"]))
                      for i in status.get("series") or []]
            retired = {str(c): {k: int(t.get(k, 0)) for k in (PULLING, PULLED, PRESENT)}
                       for c, t in (status.get("retired") or {}).items()}
            stored_count = int(status.get("count") or 0)
            first, last = status.get("firstSeen"), status.get("lastSeen")
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        if any(kind not in (PULLING, PULLED, PRESENT) for _, kind, _, _ in series):
            return None
        state = self.states.get(name)
        if state is None:
            state = FindingState(name=name, namespace=namespace, spec=dict(spec))
            self.states[name] = state
        elif spec.get("reason") == "Pulling" and state.spec.get("reason") != "Pulling":
            state.spec["reason"] = "Pulling"
        elif state.spec.get("reason") == "Pulling" and spec.get("reason") != "Pulling":
            state.spec_dirty = True  # the stored spec is behind ours
        for sid, kind, container, n in series:
            mine = state.series.get(sid)
            if mine is None:
                state.series[sid] = [kind, container, n]
            elif n > mine[2]:
                mine[2] = n
        for container, tally in retired.items():
            mine_t = state.retired.setdefault(container, {PULLING: 0, PULLED: 0, PRESENT: 0})
            for k, n in tally.items():
                mine_t[k] = max(mine_t.get(k, 0), n)
        state.recount()
        if not series and not retired and stored_count > state.count:
            # Written without series (by hand, or by an older version): keep its count.
            state.retired.setdefault("", {PULLING: 0, PULLED: 0, PRESENT: 0})[PULLING] += stored_count - state.count
            state.recount()
        state.first_seen = earlier(state.first_seen, first)
        state.last_seen = later(state.last_seen, last)
        return state

    seed = merge  # adopting a Finding from the API server is merging it into nothing

    def forget(self, name: str) -> None:
        """Drop a Finding's state (it was deleted): its next pull starts a new Finding."""
        self.states.pop(name, None)

    def findings(self) -> "FindingsView":
        """Every Finding with at least one pull, sorted by namespace and name.

        A lazy sequence: each body is built when it is read, so writing 20,000 Findings out
        does not hold 20,000 bodies in memory at once."""
        return FindingsView(sorted((s for s in self.states.values() if s.count > 0),
                                   key=lambda s: (s.namespace, s.name)))


class FindingsView:
    def __init__(self, states: list[FindingState]):
        self._states = states

    def __len__(self) -> int:
        return len(self._states)

    def __iter__(self):
        return (s.body() for s in self._states)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._states[index].body()

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other)  # type: ignore[call-overload]
