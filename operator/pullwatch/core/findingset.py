"""The set of Findings: who is in it, how series are routed to them, and its bounds.

A series (an Event object) already counted in some Finding keeps going to that Finding - the
*route* - even if its workload would now be resolved differently (the pod is gone and its name
says otherwise) or the Finding was an overflow one: that is what keeps counts exact across
restarts and relists. Routes are one int per (rule, series hash) and are pruned with the ledger
slots they belong to.

The set is indexed by namespace and by workload, so that what concerns one namespace (a
Suppression's recheck, an OpenReports Report) or one workload (a person who changed it) costs
its own Findings, never all of them. ``Caps`` bound how many Findings each rule may have,
cluster-wide and per namespace; past a cap, detections go to the overflow Finding of their
(rule, namespace).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .findings import Identity, Origin, name_among
from .pulls import Pull
from .state import FindingState
from .workload import Workload


@dataclass(frozen=True)
class Caps:
    """How many Findings each rule may have, cluster-wide and per namespace (overflow Findings
    aside: there is at most one per rule and namespace)."""

    total: int
    per_namespace: int
    # Findings of containers the Pods say ran, per rule and namespace, that Findings made from
    # Events (which a tenant can forge) can never use up: see FindingSet._state_for.
    reserve: int = 16


class FindingSet:
    def __init__(self, caps: Caps | None = None):
        self.caps = caps
        self.states: dict[str, FindingState] = {}
        self.routes: dict[int, str] = {}  # route(rule, series hash) -> Finding name
        self.per_rule: Counter[str] = Counter()
        self.per_namespace: Counter[tuple[str, str]] = Counter()
        self.by_namespace: dict[str, set[str]] = {}  # namespace -> its Findings' names
        self.by_workload: dict[tuple[str, str], set[str]] = {}  # (namespace, workload) -> names
        self.salted: dict[Identity, str] = {}  # identity -> its salted name (after a collision)
        self.collisions = 0  # lookups that met a name held by another identity
        self.from_pods: Counter[tuple[str, str]] = Counter()  # (rule, ns) -> made from Pods
        self.pods_made: set[str] = set()  # their names

    # -- looking up ---------------------------------------------------------------------------
    def lookup(self, identity: Identity) -> tuple[FindingState | None, str]:
        """The Finding of ``identity`` (None if there is none yet) and its name. A name is one
        identity's only: a state is taken by name only when its identity is the one wanted, and
        an identity whose name another holds (a forced collision) takes a salted one."""
        name = identity.name
        state = self.states.get(name)
        if state is not None and state.identity == identity:
            return state, name
        if self.salted:
            other = self.salted.get(identity)
            if other is not None:
                return self.states[other], other
        if state is None:
            return None, name
        self.collisions += 1
        name = name_among(identity, self._holder)
        return self.states.get(name), name

    def _holder(self, name: str) -> Identity | None:
        state = self.states.get(name)
        return state.identity if state is not None else None

    def _new(self, identity: Identity, origin: Origin) -> FindingState:
        state, name = self.lookup(identity)
        return state or self.add(FindingState(identity, origin, name=name))

    # -- routing -----------------------------------------------------------------------------
    def _route(
        self,
        rule: str,
        series_key: int,
        identity: Identity,
        pull: Pull,
        workload: Workload,
        not_allowed: str | None,
    ) -> tuple[FindingState, bool, Identity | None]:
        owner = self.routes.get(route(rule, series_key))
        state = self.states.get(owner) if owner else None
        # A route is a 48-bit hash: it is followed only within the pull's own namespace.
        if state is not None and state.namespace == identity.namespace:
            return state, False, None
        folded = None
        state, _ = self.lookup(identity)
        created = state is None
        if state is None:
            if self.caps is not None and not self._admits(rule, identity.namespace):
                folded, identity = identity, Identity.overflow(rule, identity.namespace)
                state, _ = self.lookup(identity)
                created = state is None
            if state is None:
                state = self._new(identity, Origin.of(pull, workload, not_allowed))
        self.routes[route(rule, series_key)] = state.name
        return state, created, folded

    def _state_for(
        self, identity: Identity, origin: Origin, reserve: bool = False
    ) -> tuple[FindingState, bool]:
        """The Finding of ``identity`` (a Running or an Intent), made if need be; past a cap,
        its overflow Finding (the caller folds the identity into it). ``reserve``: a Finding
        the Pod witness makes may also take one of the per-namespace ``Caps.reserve``, which
        Findings made from Events cannot fill (a tenant who can create Events cannot crowd
        out what the Pods say ran)."""
        state, _ = self.lookup(identity)
        if state is not None:
            return state, False
        if self.caps is not None and not self._admits(identity.rule, identity.namespace):
            key = (identity.rule, identity.namespace)
            if not (reserve and self.from_pods[key] < self.caps.reserve):
                overflow = Identity.overflow(identity.rule, identity.namespace)
                return self._new(overflow, origin), False
        return self._new(identity, origin), True

    def _admits(self, rule: str, namespace: str) -> bool:
        assert self.caps is not None
        return (
            self.per_rule[rule] < self.caps.total
            and self.per_namespace[(rule, namespace)] < self.caps.per_namespace
        )

    def add(self, state: FindingState) -> FindingState:
        """Take a Finding in (new, or adopted from the API server) and route its series to it."""
        self.states[state.name] = state
        identity = state.identity
        if state.name != identity.name:
            self.salted[identity] = state.name
        if not identity.is_overflow:
            self.per_rule[identity.rule] += 1
            self.per_namespace[(identity.rule, state.namespace)] += 1
            if _made_from_pods(state):
                self.pods_made.add(state.name)
                self.from_pods[(identity.rule, state.namespace)] += 1
            self.by_workload.setdefault((state.namespace, identity.workload), set()).add(state.name)
        self.by_namespace.setdefault(state.namespace, set()).add(state.name)
        self._route_series(state)
        return state

    def adopt(self, body: Any) -> FindingState:
        """A Finding as stored in the API server, merged into what is known of it (start-up,
        409 Conflict, a relist). Raises ValueError for an object pullwatch did not write."""
        stored = FindingState.from_body(body)
        mine = self.states.get(stored.name)
        if mine is not None and mine.identity != stored.identity:
            self.collisions += 1
            raise ValueError(f"its name is held by another Finding ({mine.namespace}/{mine.name})")
        if mine is None:
            # Ours now: what its writer folded is not held live here, so it is simply closed.
            stored.evidence().ledger.folded = [0, 0, 0, 0, 0]
            return self.add(stored)
        mine.merge(stored)
        self._route_series(mine)
        return mine

    def _route_series(self, state: FindingState) -> None:
        name, rule = state.name, state.identity.rule
        for key in state.series_keys():
            self.routes[route(rule, key)] = name

    def forget(self, name: str) -> FindingState | None:
        """Drop a Finding (deleted by retention): its next observation starts it again."""
        state = self.states.pop(name, None)
        if state is None:
            return None
        identity = state.identity
        if self.salted.get(identity) == name:
            del self.salted[identity]
        if not identity.is_overflow:
            self.per_rule[identity.rule] -= 1
            self.per_namespace[(identity.rule, state.namespace)] -= 1
            if name in self.pods_made:
                self.pods_made.discard(name)
                self.from_pods[(identity.rule, state.namespace)] -= 1
            _discard(self.by_workload, (state.namespace, identity.workload), name)
        _discard(self.by_namespace, state.namespace, name)
        return state

    def prune_routes(self) -> None:
        """Forget the routes of series no ledger holds any more (closed slots): bounded memory."""
        self.routes = {
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
                n += 1
        return n

    def in_namespace(self, namespace: str) -> Iterator[FindingState]:
        for name in self.by_namespace.get(namespace, ()):
            state = self.states.get(name)
            if state is not None:
                yield state

    def findings(self) -> FindingsView:
        """Every Finding with evidence, sorted by namespace and name. A lazy sequence: each body
        is built when it is read, so writing 20,000 Findings out does not hold 20,000 bodies in
        memory at once."""
        return FindingsView(
            sorted(
                (s for s in self.states.values() if s.has_evidence),
                key=lambda s: (s.namespace, s.name),
            )
        )


def _made_from_pods(state: FindingState) -> bool:
    """Whether the Pod witness made it (what ``add`` is handed is never packed)."""
    return not state.cold and state.evidence().origin.source == "pods"


def _discard(index: dict[Any, set[str]], key: Any, name: str) -> None:
    names = index.get(key)
    if names is not None:
        names.discard(name)
        if not names:
            del index[key]


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
