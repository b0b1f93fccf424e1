"""Applying the rules to observations and keeping them in Findings. Shared by scan and the operator.

Every witness hands its observations to ``Detector.observe``: pulls (Events, audit), containers
seen running (Pods), pods created with an image, who wrote an Event, who changed a workload
(audit). For each one a rule fires on, the Finding is (rule, namespace, workload, image
repository): the workload comes from the caller (the operator reads it from the pod's owners;
the Pod witness has them) or is inferred from the pod's name (``scan``; see workload.py).
Counting is exact (see ledger.py) and only pulls count.

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
Every namespace a Finding is in is one the API server vouched for (an observation's namespace is
its object's own), so per-namespace state grows only with real namespaces.

    >>> from .allowlist import Allowlist
    >>> from .pulls import decode_event
    >>> d = Detector(Allowlist())
    >>> ev = {"reason": "Pulling", "message": 'Pulling image "nginx"', "count": 2,
    ...       "metadata": {"name": "e1", "namespace": "web"},
    ...       "involvedObject": {"kind": "Pod", "name": "web-7d9f8b6c5d-x7k2p", "namespace": "web"}}
    >>> [(x.state.name, x.delta) for x in d.observe(decode_event(ev))]
    [('suspicious-web-nginx-ae9e4af5e3', 2)]
    >>> [x.delta for x in d.observe(decode_event(dict(ev, count=5)))]
    [3]
    >>> [x.delta for x in d.observe(decode_event(dict(ev, count=5)))]
    [0]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .actors import ActorMap
from .allowlist import Allowlist
from .authorship import NAMELESS, Authorship, remember
from .body import stamp
from .evidence import EXPIRED, MISSING, PENDING
from .findings import (
    RULES_BY_SHORT,
    ActorRecord,
    Identity,
    Origin,
    cut,
    instant,
    minute_of,
    repository_of,
)
from .findingset import Caps, FindingSet, FindingsView, route
from .judge import Judge, covered_expiry, pull_slot, series_of, workload_of
from .ledger import FORGED, MAX_LIVE, short_hash
from .observations import ActorChange, Authored, Intent, Running
from .pulls import Pull
from .rules import DEFAULT_SCANNER_IMAGES, SCANNER_RULE, Rule
from .state import FindingState
from .suppressions import Suppression
from .workload import Workload


@dataclass(frozen=True, slots=True)
class Detection:
    """What one observation did to one Finding. ``delta``: pulls it added (0: a repeat);
    ``folded``: the identity the pull would have had, had no cap been reached; ``running``: a
    container newly seen running it; ``forged``: a pull Event newly known to be forged;
    ``changed``: anything else that is worth writing."""

    state: FindingState
    delta: int = 0
    created: bool = False
    folded: Identity | None = None
    suppressed: Suppression | None = None
    running: bool = False
    forged: str = ""  # why a pull Event is newly known forged: namespace, author, generated-name
    missing: bool = False  # a container that ran it turned out to have had no pull Event
    changed: bool = False


class Detector(Judge, FindingSet):
    """The rules' configuration, the allowlist in force and every Finding's state.

    ``allowlist``, ``scanners`` and ``suppressions`` may be replaced at any time (the operator
    does on every change of the configuration kinds); the next observation is judged by the new
    ones. ``live_series`` bounds each ledger as it counts (the operator); ``None`` keeps every
    series (``scan``, which must stay exact over a whole file). ``clock``: the observer's time
    (epoch seconds) - what a future Event time is clamped to; ``None``: no clamp.
    """

    def __init__(
        self,
        allowlist: Allowlist,
        scanners: Iterable[str] = DEFAULT_SCANNER_IMAGES,
        caps: Caps | None = None,
        live_series: int | None = None,
        scanner_digests: Iterable[str] = (),
    ):
        Judge.__init__(self, allowlist, scanners, scanner_digests)
        FindingSet.__init__(self, caps)
        self.live_series = live_series
        self.actors = ActorMap()  # who changed each workload (bounded, expiring)
        # (name, pod, container) -> (due, the pull slots that would cover it)
        self.pending: dict[tuple[str, str, str], tuple[float, tuple[int, ...]]] = {}
        # Who created which Event (audit), and the first node each series not yet judged
        # named: the two witnesses can arrive in either order.
        self.authorship = Authorship()
        self.pulled: dict[int, None] = {}  # pull_slot hashes of the pull Events seen
        self.event_ttl = 3600.0  # the API server's --event-ttl (the operator sets it)
        # How long a container seen running may wait for its pull Event before it is said to
        # have run with none: the two witnesses are separate watches, seconds apart.
        self.pull_event_grace = 60.0

    # -- observing ---------------------------------------------------------------------------
    def observe(
        self,
        obs: Any,
        workload: Workload | None = None,
        minute: int | None = None,
        now: float | None = None,
        clock: float | None = None,
    ) -> list[Detection]:
        """Take one observation. ``minute``: when it was observed (minutes since the epoch, the
        operator's clock): a series is closed a TTL after it was last *observed*, never by the
        Event's own timestamps, which can be skewed or forged; ``scan`` passes none and closes
        nothing by time. ``now``: the time Suppressions' expiry is judged at (the operator's
        clock; ``scan``: the pull's own time - was it covered when it happened?). ``clock``: the
        observer's time, which no Event time may be later than (and what retention uses)."""
        kind = obs.__class__
        if kind is Pull:
            return self._pull(obs, workload, minute, now, clock)
        if kind is Running:
            return self._running(obs, minute, clock)
        if kind is Intent:
            return self._intent(obs, clock)
        if kind is Authored:
            return self._authored(obs)
        if kind is ActorChange:
            return self._actor(obs)
        raise TypeError(f"not an observation: {kind.__name__}")

    def _pull(
        self,
        pull: Pull,
        workload: Workload | None,
        minute: int | None,
        now: float | None,
        clock: float | None,
    ) -> list[Detection]:
        self.note_pull(pull)
        fired = self.rules_for(pull.namespace, pull.image)
        if not fired:
            return []
        workload = workload or workload_of(pull)
        series = series_of(pull)
        if series.startswith(NAMELESS):
            return self._nameless(pull, fired, workload)
        series_key = short_hash(series, 48)
        verdict, pull = self.authorship.judge(pull, series, series_key)
        when = minute if minute is not None else (minute_of(pull.last_seen or pull.first_seen) or 0)
        if now is None:
            moment = instant(pull.last_seen or pull.first_seen or "")
            now = moment.timestamp() if moment is not None else 0.0
        now_stamp = stamp(clock) if clock is not None else None
        out = []
        for rule, ref, not_allowed in fired:
            repository = ref.repository if ref else repository_of(pull.image)
            identity = Identity(rule.short, pull.namespace, workload.name, repository)
            state, created, folded = self._route(
                rule.short, series_key, identity, pull, workload, not_allowed
            )
            ev = state.evidence()
            ledger, origin = ev.ledger, ev.origin
            before = ledger.series.get(series_key)
            new_series = before is None
            delta = state.observe_pull(pull, series, when, verdict, clock, now_stamp)
            # What the Finding shows changed whenever the series rose, even with no pull added
            # (a Successfully-pulled that completes a counted Pulling changes its outcomes), or
            # when a repeat brought its first verdict (spec.reportedBy).
            after = ledger.series.get(series_key)
            judged = state.evidence().origin is not origin  # its first verdict, from this one
            grew = new_series or judged or (after is not None and after[2] > before[2])
            if state.identity.is_overflow:
                folded = folded or identity
                state.fold(folded, pull.image, delta)
            if self.live_series is not None:
                state.evidence().ledger.bound(self.live_series)
            if created:
                self._note_actor_of(state)
            image = ref.normalized if ref else pull.image
            # the Finding's own workload (it may have been read, where this pull's is inferred)
            covered = self._cover_latest(state, rule, identity, image, now)
            if covered is not None:
                state.suppressed_pulls += delta
            forged = ""
            if (new_series or judged) and verdict == FORGED:
                forged = "namespace" if pull.claimed_namespace is not None else "author"
            out.append(
                Detection(state, delta, created, folded, covered, forged=forged, changed=grew)
            )
        return out

    def _nameless(self, pull: Pull, fired: list, workload: Workload) -> list[Detection]:
        """A pull Event created with ``generateName`` (its name not logged): never a kubelet's,
        and counted by the Event watch under its real name - here only said to be forged."""
        out = []
        for rule, ref, not_allowed in fired:
            repository = ref.repository if ref else repository_of(pull.image)
            identity = Identity(rule.short, pull.namespace, workload.name, repository)
            origin = Origin.of(pull, workload, not_allowed)._replace(verified=False)
            state, created = self._state_for(identity, origin)
            if state.identity.is_overflow:
                state.fold(identity, pull.image, 0)
            if pull.actor is not None and pull.actor.user:
                state.evidence().forged_by = cut(pull.actor.user, 253)
            out.append(Detection(state, created=created, forged="generated-name", changed=True))
        return out

    def _running(self, run: Running, minute: int | None, clock: float | None) -> list[Detection]:
        fired, ran_image = self.run_rules(run)  # by the spec and by what the kubelet reports
        if not fired:
            return []
        when = minute if minute is not None else (minute_of(run.started_at) or 0)
        due = (clock if clock is not None else 0.0) + self.pull_event_grace
        # the repositories a pull Event of this container may name and still cover it
        slots = tuple(
            pull_slot(run.namespace, run.pod, run.container, i) for i in (run.image, *run.reported)
        )
        out = []
        for rule, ref, not_allowed in fired:
            repository = ref.repository if ref else repository_of(run.image)
            identity = Identity(rule.short, run.namespace, run.workload.name, repository)
            state, created = self._state_for(
                identity,
                Origin.of_running(run.image, run.node, run.workload, not_allowed),
                reserve=rule is SCANNER_RULE,
            )
            folded = None
            if state.identity.is_overflow:  # past a cap: still evidence, never dropped
                folded = identity
                state.fold(identity, run.image, 0)
            # Started before its Events could still be there (found at start-up, or judged again
            # after a configuration change): whether it had a pull Event cannot be known.
            pull_event = EXPIRED if self._expired(run, clock) else PENDING
            new = state.observe_running(run, when, pull_event, clock, ran_image)
            if created:
                self._note_actor_of(state)
            if new and pull_event == PENDING:
                self.pending[(state.name, run.pod, run.container)] = (due, slots)
            out.append(
                Detection(
                    state, created=created, folded=folded, running=new, changed=new or created
                )
            )
        return out

    def _intent(self, intent: Intent, clock: float | None) -> list[Detection]:
        fired = self.rules_for(intent.namespace, intent.image)
        out = []
        for rule, ref, not_allowed in fired:
            repository = ref.repository if ref else repository_of(intent.image)
            identity = Identity(rule.short, intent.namespace, intent.workload.name, repository)
            state, created = self._state_for(
                identity,
                Origin.of_running(intent.image, None, intent.workload, not_allowed, source="audit"),
            )
            folded = None
            if state.identity.is_overflow:  # past a cap: still evidence, never dropped
                folded = identity
                state.fold(identity, intent.image, 0)
            if created and folded is None:
                self._note_actor_of(state)  # who changed its workload, known already
            changed = state.observe_intent(intent, clock)
            if intent.actor is not None and intent.actor.user:
                changed |= state.note_actor(
                    ActorRecord.of(intent.actor, "create pods", intent.time)
                )
            out.append(Detection(state, created=created, folded=folded, changed=changed or created))
        return out

    def _authored(self, authored: Authored) -> list[Detection]:
        """Who created an Event: the verdict of the pull series it is, in each Finding it counts
        in (or, when the Event has not been seen yet, remembered for when it is). A later write
        (patch, update) changes no verdict, whoever made it: see authorship.py."""
        if authored.verb != "create":
            return []
        series = f"{authored.namespace}/{authored.name}"
        key = short_hash(series, 48)
        verdict = self.authorship.created(series, key, authored.actor, authored.node)
        if verdict is None:
            return []
        out = []
        for rule in RULES_BY_SHORT:
            name = self.routes.get(route(rule, key))
            state = self.states.get(name) if name else None
            if state is None or state.namespace != authored.namespace:
                continue  # a route is a 48-bit hash: only the Event's own namespace counts
            if state.learn_author(series, verdict, authored.actor.user):
                out.append(
                    Detection(state, forged="author" if verdict == FORGED else "", changed=True)
                )
        return out

    def _actor(self, change: ActorChange) -> list[Detection]:
        self.actors.observe(change)
        record = ActorRecord.of(change.actor, change.action, change.time)
        out = []
        for name in self.by_workload.get((change.namespace, change.workload), ()):
            state = self.states.get(name)
            if state is not None and state.note_actor(record):
                out.append(Detection(state, changed=True))
        return out

    def _note_actor_of(self, state: FindingState) -> None:
        """A new Finding learns who changed its workload: the first person known, then the
        latest ones (later changes reach it through ``_actor``)."""
        known = self.actors.get(state.namespace, state.identity.workload)
        if known is not None:
            # Oldest first, so that the newest - who last changed the workload before this
            # Finding was made, e.g. who patched its image - leads as spec.actor.
            changes = tuple(reversed(known.recent))
            for i, change in enumerate(changes):
                record = ActorRecord.from_dict(change.as_dict())
                if record is not None:
                    state.note_actor(record, lead=i == len(changes) - 1)

    def _expired(self, run: Running, clock: float | None) -> bool:
        """A container found at start-up that started before its Events could still be there."""
        started = instant(run.started_at or "")
        return (
            clock is not None
            and started is not None
            and clock - started.timestamp() > self.event_ttl
        )

    def note_pull(self, pull: Pull) -> None:
        """A pull Event of this container was seen, whatever the rules made of it: a container
        found by its digest (whose pull Event names only a tag) had its pull Event all the same,
        in another Finding or none - if the Event names the repository the container ran."""
        inv = pull.involved
        slot = pull_slot(pull.namespace, inv.name, inv.container or "", pull.image)
        remember(self.pulled, slot, None)

    def settle(self, now: float) -> list[Detection]:
        """Containers whose pull Event grace is over (due at or before ``now``): seen, or ran
        with no pull Event. ``scan`` settles everything at the end (now = inf)."""
        out = []
        for key, (due, slots) in list(self.pending.items()):
            if due > now:
                continue
            del self.pending[key]
            state = self.states.get(key[0])
            if state is None:
                continue
            elsewhere = any(slot in self.pulled for slot in slots)
            settled = state.settle_pull_event(key[1], key[2], elsewhere=elsewhere)
            if settled is not None:
                out.append(Detection(state, changed=True, missing=settled == MISSING))
        return out

    def routed(self, pull: Pull) -> bool:
        """Whether the series of ``pull`` is already counted in a Finding for every rule that fires:
        then its workload cannot change where it is counted (``_route``), and the operator need not
        read the pod's owners (a relist after a restart re-reads no pod it has counted)."""
        fired = self.rules_for(pull.namespace, pull.image)
        key = short_hash(series_of(pull), 48)
        return bool(fired) and all(
            self.routes.get(route(rule.short, key)) in self.states for rule, _, _ in fired
        )

    def capped(self, rule: str, namespace: str) -> bool:
        """Whether a new Finding of ``rule`` in ``namespace`` would go to the overflow Finding."""
        return self.caps is not None and not self._admits(rule, namespace)

    # -- suppressions --------------------------------------------------------------------------
    def _cover_latest(
        self, state: FindingState, rule: Rule, identity: Identity, image: str, now: float
    ) -> Suppression | None:
        workload = identity.workload if state.identity.is_overflow else state.identity.workload
        covered = self.suppressions.covering(rule.name, identity.namespace, workload, image, now)
        state.last_image = image
        _cover(state, covered)
        return covered

    def recheck_suppressions(
        self, now: float, namespaces: Iterable[str] | None = None
    ) -> list[FindingState]:
        """After Suppressions changed (or one expired): the Findings whose cover changed. Only
        the namespaces a Suppression can reach are looked at (``namespaces``: only those)."""
        changed = []
        for namespace in list(namespaces if namespaces is not None else self.by_namespace):
            for name in self.by_namespace.get(namespace, ()):
                state = self.states.get(name)
                if state is None or state.last_image is None or state.identity.is_overflow:
                    continue
                rule = RULES_BY_SHORT[state.identity.rule]
                covered = self.suppressions.covering(
                    rule.name, state.namespace, state.identity.workload, state.last_image, now
                )
                if _cover(state, covered):
                    changed.append(state)
        return changed


def _cover(state: FindingState, covered: Suppression | None) -> bool:
    """Record which Suppression covers the Finding's latest pull; whether that changed."""
    wanted = None
    if covered is not None:
        wanted = {"namespace": covered.namespace, "name": covered.name, "reason": covered.reason}
        if covered.expires is not None:
            wanted["expires"] = covered_expiry(covered)
    changed = wanted != state.suppression
    state.suppression = wanted
    return changed


__all__ = [
    "MAX_LIVE",
    "Caps",
    "Detection",
    "Detector",
    "FindingsView",
    "covered_expiry",
    "route",
    "series_of",
    "workload_of",
]
