"""Applying the rules to pulls and counting them into Findings. Shared by scan and the operator.

For each pull the rules fire on, the Finding is (rule, namespace, workload, image repository):
the workload comes from the caller (the operator reads it from the pod's owners) or is inferred
from the pod's name (``scan``; see workload.py). Counting is exact (see ledger.py).

Routing is stable: a series (an Event object) already counted in some Finding keeps going to that
Finding, even if the workload would now be resolved differently (the pod is gone and its name
says otherwise) or the Finding was an overflow one. That is what keeps counts exact across
restarts and relists.

Suppressions: a pull a Suppression covers is counted like any other; the Finding records which
Suppression covers its latest pull, and how many of its pulls were covered (see suppressions.py).

Bounds (the operator's; ``scan`` has none): ``Caps`` limits the Findings of each rule cluster-
wide and per namespace. A detection past a cap is never dropped: it is counted in the overflow
Finding of its (rule, namespace), which records what was folded into it. Each rule has its own
caps, so a flood of suspicious pulls can never push a scanner pull into an overflow Finding.

    >>> from .allowlist import Allowlist
    >>> from .pulls import decode_event
    >>> d = Detector(Allowlist())
    >>> ev = {"reason": "Pulling", "message": 'Pulling image "nginx"', "count": 2,
    ...       "metadata": {"uid": "e1", "namespace": "web"},
    ...       "involvedObject": {"kind": "Pod", "name": "web-7d9f8b6c5d-x7k2p", "namespace": "web"}}
    >>> [(x.state.name, x.delta) for x in d.observe(decode_event(ev))]
    [('suspicious-web-nginx-ae9e4af5e3', 2)]
    >>> [x.delta for x in d.observe(decode_event(dict(ev, count=5)))]
    [3]
    >>> [x.delta for x in d.observe(decode_event(dict(ev, count=5)))]
    [0]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .allowlist import Allowlist
from .findings import RULES_BY_SHORT, Identity, Origin, instant, minute_of, repository_of
from .imageref import ImageRef, InvalidImageReference, parse_image
from .ledger import MAX_SERIES, short_hash
from .pulls import Pull
from .rules import DEFAULT_SCANNER_IMAGES, SCANNER_RULE, SUSPICIOUS_RULE, Rule
from .state import FindingState
from .suppressions import Suppression, Suppressions
from .workload import Workload, infer


@dataclass(frozen=True)
class Caps:
    """How many Findings each rule may have, cluster-wide and per namespace (overflow Findings
    aside: there is at most one per rule and namespace)."""

    total: int
    per_namespace: int


@dataclass(frozen=True)
class Detection:
    """What one observation did to one Finding. ``delta`` 0: a repeat, nothing new.
    ``folded``: the identity the pull would have had, had no cap been reached."""

    state: FindingState
    delta: int
    created: bool
    folded: Identity | None = None
    suppressed: Suppression | None = None


def series_of(pull: Pull) -> str:
    """The series an observation belongs to: its Event object; an Event that names no object (a
    hand-made file) is identified by its content, so a duplicate record still counts once."""
    if pull.series is not None:
        return pull.series
    inv = pull.involved
    return f"anon:{pull.kind}:{inv.namespace}/{inv.name}/{inv.container}:{pull.image}:{pull.first_seen}:{pull.last_seen}"


def workload_of(pull: Pull) -> Workload:
    """The workload, inferred: from the pod's name, or the involved object itself if not a pod."""
    inv = pull.involved
    if inv.kind != "Pod":
        return Workload(inv.kind, inv.name, "inferred")
    return infer(inv.name)


class Detector:
    """The rules' configuration, the allowlist in force and every Finding's counting state.

    ``allowlist`` may be replaced at any time (the operator does on every AllowedImages change);
    the next pull is judged by the new one. ``live_series`` bounds each ledger as it counts (the
    operator); ``None`` keeps every series until the body is written (``scan``, which must stay
    exact over a whole file and writes each Finding once).
    """

    RULES_CACHE = 16384

    def __init__(
        self,
        allowlist: Allowlist,
        scanners: Iterable[str] = DEFAULT_SCANNER_IMAGES,
        caps: Caps | None = None,
        live_series: int | None = None,
    ):
        self._scanners = frozenset(scanners)
        self.caps = caps
        self.live_series = live_series
        self.states: dict[str, FindingState] = {}
        self.owners: dict[int, str] = {}  # route(rule, series hash) -> Finding name
        self.per_rule: Counter[str] = Counter()
        self.per_namespace: Counter[tuple[str, str]] = Counter()
        self._rules_cache: dict[
            tuple[str, str], list[tuple[Rule, ImageRef | None, str | None]]
        ] = {}
        self.allowlist = allowlist
        self.suppressions = Suppressions()

    @property
    def scanners(self) -> frozenset[str]:
        return self._scanners

    @scanners.setter
    def scanners(self, value: Iterable[str]) -> None:
        self._scanners = frozenset(value)
        self._rules_cache = {}  # verdicts made with the old names must not outlive them

    @property
    def allowlist(self) -> Allowlist:
        return self._allowlist

    @allowlist.setter
    def allowlist(self, value: Allowlist) -> None:
        self._allowlist = value
        self._rules_cache = {}  # verdicts of the old allowlist must not outlive it

    def rules_for(
        self, namespace: str, image: str
    ) -> list[tuple[Rule, ImageRef | None, str | None]]:
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

    def observe(
        self,
        pull: Pull,
        workload: Workload | None = None,
        minute: int | None = None,
        now: float | None = None,
    ) -> list[Detection]:
        """Count ``pull``. ``minute``: when it was observed (minutes since the epoch; the operator's
        clock); a series is closed a TTL after it was last *observed*, never by the Event's own
        timestamps, which can be skewed or forged. ``scan`` passes none: it closes nothing by time.
        ``now``: the time Suppressions' expiry is judged at (the operator's clock; ``scan``: the
        pull's own time - was it covered when it happened?)."""
        fired = self.rules_for(pull.namespace, pull.image)
        if not fired:
            return []
        workload = workload or workload_of(pull)
        series = series_of(pull)
        series_key = short_hash(series, 48)
        when = minute if minute is not None else (minute_of(pull.last_seen or pull.first_seen) or 0)
        if now is None:
            moment = instant(pull.last_seen or pull.first_seen or "")
            now = moment.timestamp() if moment is not None else 0.0
        out = []
        for rule, ref, not_allowed in fired:
            repository = ref.repository if ref else repository_of(pull.image)
            identity = Identity(rule.short, pull.namespace, workload.name, repository)
            state, created, folded = self._route(
                rule.short, series_key, identity, pull, workload, not_allowed
            )
            delta = state.observe(pull, series, when)
            if state.identity.is_overflow:
                folded = folded or identity
                state.fold(folded, pull.image, delta)
            if self.live_series is not None and len(state.ledger.series) > self.live_series:
                state.ledger.bound(self.live_series)
            image = ref.normalized if ref else pull.image
            # the Finding's own workload (it may have been read, where this pull's is inferred)
            workload_name = (
                identity.workload if state.identity.is_overflow else state.identity.workload
            )
            covered = self.suppressions.covering(
                rule.name, identity.namespace, workload_name, image, now
            )
            state.last_image = image
            self._cover(state, covered)
            if covered is not None:
                state.suppressed_pulls += delta
            out.append(Detection(state, delta, created, folded, covered))
        return out

    def routed(self, pull: Pull) -> bool:
        """Whether the series of ``pull`` is already counted in a Finding for every rule that fires:
        then its workload cannot change where it is counted (``_route``), and the operator need not
        read the pod's owners (a relist after a restart re-reads no pod it has counted)."""
        fired = self.rules_for(pull.namespace, pull.image)
        key = short_hash(series_of(pull), 48)
        return bool(fired) and all(
            self.owners.get(route(rule.short, key)) in self.states for rule, _, _ in fired
        )

    @staticmethod
    def _cover(state: FindingState, covered: Suppression | None) -> bool:
        """Record which Suppression covers the Finding's latest pull; whether that changed."""
        wanted = (
            None
            if covered is None
            else {
                "namespace": covered.namespace,
                "name": covered.name,
                "reason": covered.reason,
                **({"expires": covered_expiry(covered)} if covered.expires is not None else {}),
            }
        )
        changed = wanted != state.suppression
        state.suppression = wanted
        return changed

    def recheck_suppressions(self, now: float) -> list[FindingState]:
        """After Suppressions changed (or one expired): the Findings whose cover changed."""
        changed = []
        for state in self.states.values():
            if state.last_image is None or state.identity.is_overflow:
                continue
            rule = RULES_BY_SHORT[state.identity.rule]
            covered = self.suppressions.covering(
                rule.name, state.namespace, state.identity.workload, state.last_image, now
            )
            if self._cover(state, covered):
                changed.append(state)
        return changed

    def _route(
        self,
        rule: str,
        series_key: int,
        identity: Identity,
        pull: Pull,
        workload: Workload,
        not_allowed: str | None,
    ) -> tuple[FindingState, bool, Identity | None]:
        owner = self.owners.get(route(rule, series_key))
        state = self.states.get(owner) if owner else None
        if state is not None:
            return state, False, None
        folded = None
        state = self.states.get(identity.name)
        created = state is None
        if state is None:
            if self.caps is not None and not self._admits(rule, identity.namespace):
                folded, identity = identity, Identity.overflow(rule, identity.namespace)
                state = self.states.get(identity.name)
                created = state is None
            if state is None:
                state = self.add(FindingState(identity, Origin.of(pull, workload, not_allowed)))
        self.owners[route(rule, series_key)] = state.name
        return state, created, folded

    def _admits(self, rule: str, namespace: str) -> bool:
        return (
            self.per_rule[rule] < self.caps.total
            and self.per_namespace[(rule, namespace)] < self.caps.per_namespace
        )

    # -- the set of Findings ---------------------------------------------------------------------
    def add(self, state: FindingState) -> FindingState:
        """Take a Finding in (new, or adopted from the API server) and route its series to it."""
        self.states[state.name] = state
        if not state.identity.is_overflow:
            self.per_rule[state.identity.rule] += 1
            self.per_namespace[(state.identity.rule, state.namespace)] += 1
        self._route_series(state)
        return state

    def adopt(self, body: Any) -> FindingState:
        """A Finding as stored in the API server, merged into what is known of it (start-up,
        409 Conflict, a relist). Raises ValueError for an object pullwatch did not write."""
        stored = FindingState.from_body(body)
        mine = self.states.get(stored.name)
        if mine is None:
            return self.add(stored)
        mine.merge(stored)
        self._route_series(mine)
        return mine

    def _route_series(self, state: FindingState) -> None:
        name, rule = state.name, state.identity.rule
        for key in state.series_keys():
            self.owners[route(rule, key)] = name

    def forget(self, name: str) -> FindingState | None:
        """Drop a Finding (deleted by retention, or by a user): its next pull starts it again."""
        state = self.states.pop(name, None)
        if state is not None and not state.identity.is_overflow:
            self.per_rule[state.identity.rule] -= 1
            self.per_namespace[(state.identity.rule, state.namespace)] -= 1
        return state

    def prune_routes(self) -> None:
        """Forget the routes of series no ledger holds any more (closed slots): bounded memory."""
        self.owners = {
            route(s.identity.rule, key): s.name
            for s in self.states.values()
            for key in s.series_keys()
        }

    def cool(self, idle_before: int, busy: Any = ()) -> int:
        """Pack the Findings not observed since minute ``idle_before`` (and not in ``busy``: being
        written); how many. See FindingState.cool."""
        n = 0
        for name, state in self.states.items():
            if not state.cold and state.touched < idle_before and name not in busy:
                state.cool()
                n += state.cold
        return n

    def findings(self) -> FindingsView:
        """Every Finding with at least one pull, sorted by namespace and name. A lazy sequence:
        each body is built when it is read, so writing 20,000 Findings out does not hold 20,000
        bodies in memory at once."""
        return FindingsView(
            sorted(
                (s for s in self.states.values() if s.count > 0),
                key=lambda s: (s.namespace, s.name),
            )
        )


class FindingsView:
    def __init__(self, states: list[FindingState]):
        self._states = states

    def __len__(self) -> int:
        return len(self._states)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (s.body() for s in self._states)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._states[index].body()

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other)  # type: ignore[call-overload]


_RULE_BITS = {"scanner": 0, "suspicious": 1}


def route(rule: str, series_key: int) -> int:
    """One int per (rule, 48-bit series hash): a route costs a dict entry, not a tuple too."""
    return series_key | (_RULE_BITS.get(rule, 2) << 48)


def covered_expiry(s: Suppression) -> str:
    return datetime.fromtimestamp(s.expires or 0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = [
    "MAX_SERIES",
    "Caps",
    "Detection",
    "Detector",
    "FindingsView",
    "series_of",
    "workload_of",
]
