"""A Finding's body: rendered from its state (never changing it), and read back when adopted.

``render`` is a pure function of the state: the same state always renders the same body, and
rendering never trims the state itself. The body stays within ``BUDGET`` bytes of JSON whatever
the inputs: lists are capped and strings cut as they are noted, and when a body is still too
big, fewer pods, images, running containers and ledger series are *written* (the ledger's stored
form folds what it leaves out into its closed totals, exactly; see ledger.py).

``state_from_body`` is the other way: a stored Finding adopted at start-up or re-read after a
conflict. It refuses an object that pullwatch did not write (its name must be the one its spec's
identity gives), and shows but never trusts the rest.
"""

from __future__ import annotations

import functools
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from .. import API_VERSION
from .evidence import Evidence, hashes_text, running_dict
from .findings import (
    KIND,
    LABEL_OVERFLOW,
    LABEL_RULE,
    LABEL_SEVERITY,
    RULES_BY_SHORT,
    SALT_ROUNDS,
    Identity,
    Origin,
    build_spec,
    cut,
    finding_name,
)
from .ledger import MAX_SERIES, Ledger
from .state import WITNESSES, FindingState, ran, seen_by

BUDGET = 12 * 1024
# (pods, images, running containers, ledger series) written, tried in turn until the body fits.
_STEPS = ((10, 10, 10, MAX_SERIES), (3, 3, 3, MAX_SERIES // 2), (1, 1, 1, 20), (0, 0, 0, 0))


def labels_of(identity: Identity) -> dict[str, str]:
    """The labels pullwatch sets: evidence too (selectors and alerts read them)."""
    rule = RULES_BY_SHORT[identity.rule]
    labels = {LABEL_RULE: rule.name, LABEL_SEVERITY: rule.severity}
    if identity.is_overflow:
        labels[LABEL_OVERFLOW] = "true"
    return labels


@functools.lru_cache(maxsize=4)  # a scan builds every Finding at its one clock
def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_status(
    state: FindingState,
    pods: int = 10,
    images: int = 10,
    running: int = 10,
    series: int | None = MAX_SERIES,
) -> dict[str, Any]:
    ev = state.evidence()
    outcomes: dict[str, Any] = ev.ledger.outcomes()
    outcomes["ran"] = ran(outcomes, ev.running_count)
    if ev.last_error is not None:
        outcomes["lastError"] = {
            "class": ev.last_error[0],
            "message": ev.last_error[1],
            "time": ev.last_error[2],
        }
    by_count = sorted(ev.images.items(), key=lambda kv: (-kv[1], kv[0]))
    shown, hidden = by_count[:images], by_count[images:]
    status: dict[str, Any] = {
        "count": ev.ledger.count,
        "firstSeen": state.first_seen,
        "lastSeen": state.last_seen,
    }
    if state.last_observed:
        status["lastObserved"] = stamp(state.last_observed)
    status.update(
        outcomes=outcomes,
        images=[{"image": i, "count": n} for i, n in shown],
        imagesOther=ev.images_other + sum(n for _, n in hidden),
        pods=[
            {"name": p, "node": e[0], "container": e[1], "count": e[2], "lastSeen": e[3]}
            for p, e in list(ev.pods.items())[::-1][:pods]
        ],
        podCount=ev.pod_count,
        nodeCount=ev.node_count,
    )
    if ev.running:
        status["running"] = {
            "containers": ev.running_count,
            "sample": [running_dict(e) for e in list(ev.running.values())[::-1][:running]],
        }
        status["digests"] = [{"digest": d, "containers": n} for d, n in sorted(ev.digests.items())]
    if ev.without_pull_event:
        status["ranWithoutPullEvent"] = ev.without_pull_event
    witnesses = seen_by(state.witnesses)
    status["witnesses"] = witnesses
    status["seenBy"] = ",".join(witnesses) or "none"
    reporters = ev.ledger.reporters()
    if reporters["verified"] or reporters["forged"]:  # else: no author known (no audit)
        status["reporters"] = reporters
    if ev.forged_by is not None:
        status["forgedBy"] = ev.forged_by
    if ev.actors:
        status["actors"] = [a.as_dict() for a in ev.actors[::-1]]
    if ev.intent is not None:
        status["intent"] = ev.intent
    status["origin"] = ev.origin.as_dict()
    if state.last_image is not None:
        status["lastImage"] = state.last_image
    if state.suppression is not None:
        status["suppression"] = state.suppression
    if state.suppressed_pulls:
        status["suppressedPulls"] = state.suppressed_pulls
    if state.identity.is_overflow:
        status["folded"] = {
            "identities": ev.folded_count,
            "sample": [
                {"what": k, "count": n}
                for k, n in sorted(ev.folded.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
        }
    ledger = ev.ledger.encode(max_series=series)
    # Only what is there: the API server refuses an empty string in these (422, "null"), and a
    # Finding of containers seen running has no pulled pods.
    if ev.pod_hashes:
        ledger["pods"] = hashes_text(ev.pod_hashes)
    if ev.node_hashes:
        ledger["nodes"] = hashes_text(ev.node_hashes)
    if ev.running_hashes:
        ledger["running"] = hashes_text(ev.running_hashes)
    if ev.intent_hashes:
        ledger["intents"] = hashes_text(ev.intent_hashes)
    if ev.folded_hashes:
        ledger["foldedIdentities"] = hashes_text(ev.folded_hashes)
    status["ledger"] = ledger
    return status


def render(state: FindingState, budget: int | None = BUDGET) -> dict[str, Any]:
    """The whole Finding, within ``budget`` bytes of JSON (None: no bound). Pure."""
    spec = build_spec(state.identity, state.evidence().origin)
    body: dict[str, Any] = {}
    for pods, images, running, series in _STEPS:
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": state.name,
                "namespace": state.namespace,
                "labels": labels_of(state.identity),
            },
            "spec": spec,
            "status": render_status(state, pods, images, running, series),
        }
        if budget is None or len(orjson.dumps(body)) <= budget:
            break
    return body


def identity_of(body: Any) -> Identity:
    """The identity of a Finding body; raises ValueError when it is not one pullwatch wrote (its
    name must be the one its identity gives, so a renamed or hand-made object is refused)."""
    try:
        meta, spec = body["metadata"], body["spec"]
        name, namespace = meta["name"], sys.intern(meta["namespace"])  # shared by its Findings
        if body.get("kind") != KIND or body.get("apiVersion") != API_VERSION:
            raise ValueError(f"not a {API_VERSION} {KIND}")
        rule = sys.intern(name.split("-", 1)[0])
        if rule not in RULES_BY_SHORT:
            raise ValueError(f"no rule is called {rule!r}")
        if spec.get("overflow"):
            identity = Identity.overflow(rule, namespace)
        else:
            identity = Identity(rule, namespace, spec["workload"]["name"], spec["repository"])
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"not a Finding pullwatch wrote ({type(exc).__name__}: {exc})") from None
    if identity.name != name and all(
        finding_name(*identity, salt) != name for salt in range(1, SALT_ROUNDS + 1)
    ):
        raise ValueError(f"its name is not the one its spec gives ({identity.name})")
    return identity


def state_from_body(body: Any) -> FindingState:
    """A state from a stored Finding. Raises ValueError when it is not one pullwatch wrote (see
    ``identity_of``) or its ledger cannot be read (tampered with: the caller decides what that
    means)."""
    identity = identity_of(body)
    try:
        spec, status = body["spec"], body.get("status") or {}
        origin = Origin.from_dict(status.get("origin") or _origin_from_spec(spec))
        ledger = Ledger.decode(status.get("ledger") or {"v": 2})
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"not a Finding pullwatch wrote ({type(exc).__name__}: {exc})") from None
    state = FindingState(identity, origin, ledger, name=body["metadata"]["name"])
    state._ev = Evidence.from_status(status, origin, ledger)
    state.first_seen, state.last_seen = _str(status.get("firstSeen")), _str(status.get("lastSeen"))
    observed = _str(status.get("lastObserved"))
    if observed is not None:
        try:
            state.last_observed = datetime.fromisoformat(
                observed.replace("Z", "+00:00")
            ).timestamp()
        except ValueError:
            pass
    last_image = status.get("lastImage")
    state.last_image = cut(last_image, 1100) if isinstance(last_image, str) else None
    suppressed = status.get("suppressedPulls")
    state.suppressed_pulls = suppressed if isinstance(suppressed, int) and suppressed > 0 else 0
    witnesses = status.get("witnesses")
    names = set(witnesses) if isinstance(witnesses, list) else set()
    state.witnesses = sum(bit for n, bit in WITNESSES if n in names) or (1 if ledger.count else 0)
    return state


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _origin_from_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored Finding without status.origin (its first status write never happened)."""
    if not spec.get("image"):
        return {"image": "", "source": "events"}
    workload = spec.get("workload") or {}
    reported = spec.get("reportedBy") or {}
    return {
        "image": spec.get("image"),
        "node": spec.get("node"),
        "workloadKind": workload.get("kind"),
        "workloadSource": workload.get("source"),
        "component": reported.get("component"),
        "source": spec.get("source"),
        "author": reported.get("user"),
        "verified": reported.get("verified"),
        "claimedNamespace": reported.get("claimedNamespace"),
        "notAllowedReason": spec.get("notAllowedReason"),
        "actor": spec.get("actor"),
    }
