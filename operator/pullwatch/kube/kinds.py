"""The three configuration kinds: how each is compiled, put in force, and reported in its status.

* AllowedImages (cluster-scoped): the allowlist. Status: patterns in use, the first 20 problems
  and normalized patterns, Ready.
* ScannerImages (cluster-scoped): names added to the scanner rule's list, or replacing the
  built-in list (``replaceDefaults: true``), and digests that are scanners whatever the image is
  called. Status: the names and digests in force, Ready.
* Suppression (namespaced): accepted detections. Status: what it covers, the pulls it has hidden
  and the Findings it covers now, Ready (False once expired, malformed or over the budget of
  core/budgets.py, saying which). Every version (uid and generation) its status does not record
  yet - created or changed, while pullwatch runs or while none ran - is logged and counted
  (``pullwatch_suppression_changes_total{scope,change}``); at start-up every one in force is
  logged once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..core.allowlist import Allowlist, Policy, policy_from_object
from ..core.budgets import admit
from ..core.detector import Detector
from ..core.findings import cut
from ..core.rules import ScannerList, scanner_digests, scanner_list_from_object, scanner_names
from ..core.suppressions import (
    Suppression,
    Suppressions,
    refused_suppression,
    suppression_cost,
    suppression_from_object,
)
from . import metrics
from .config import SAMPLE, Configs, Kind
from .stream import ListWatch

log = logging.getLogger("pullwatch.config")


def condition(ok: bool, reason: str, message: str, generation: Any) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message[:1000],
        "observedGeneration": generation,
    }


def allowlist_gauges(policies: list[Any]) -> None:
    metrics.ALLOWLIST_OBJECTS.set(len(policies))
    metrics.REFUSED_PATTERNS.set(sum(len(p.problems) for p in policies))


def allowed_images(detector: Detector) -> Kind:
    def install(policies: list[Policy]) -> None:
        detector.allowlist = Allowlist(policies)
        allowlist_gauges(policies)

    def status(policy: Policy, body: dict[str, Any]) -> dict[str, Any]:
        generation = body["metadata"].get("generation")
        problems = list(policy.problems)
        if not policy.usable:
            ready = condition(False, "Invalid", "; ".join(problems[:3]), generation)
        elif problems:
            ready = condition(
                False,
                "InvalidPatterns",
                f"{len(problems)} problem(s); the valid patterns still apply: "
                + "; ".join(problems[:3]),
                generation,
            )
        else:
            ready = condition(
                True, "Valid", f"{len(policy.patterns)} pattern(s) in use", generation
            )
        return {
            "observedGeneration": generation,
            "patterns": len(policy.patterns),
            "patternsWritten": body.get("sizes", {}).get("images", 0),
            "normalizedPatterns": [cut(p.normalized, 256) for p in policy.patterns[:SAMPLE]],
            "problems": [cut(p, 300) for p in problems[:SAMPLE]],
            "problemCount": len(problems),
            "conditions": [ready],
        }

    return Kind("AllowedImages", "allowedimages", False, policy_from_object, install, status)


def scanner_images(detector: Detector, extra: frozenset[str], defaults: frozenset[str]) -> Kind:
    said: set[str] = set()

    def install(lists: list[ScannerList]) -> None:
        detector.scanners = scanner_names(lists, extra, defaults)
        detector.scanner_digests = scanner_digests(lists)
        # Replacing the built-in names can turn scanner detection off for the whole cluster:
        # whoever may edit ScannerImages is trusted with that, and everyone else hears of it.
        replacing = {s.name for s in lists if s.replace_defaults}
        metrics.SCANNER_DEFAULTS_REPLACED.set(1 if replacing else 0)
        for name in sorted(replacing - said):
            log.warning(
                "ScannerImages %s replaces the built-in scanner names: %d scanner name(s) in "
                "force in all",
                name,
                len(detector.scanners),
            )
        said.clear()
        said.update(replacing)

    def status(lst: ScannerList, body: dict[str, Any]) -> dict[str, Any]:
        generation = body["metadata"].get("generation")
        problems = list(lst.problems)
        how = "replacing the built-in list" if lst.replace_defaults else "added"
        message = (
            f"{len(lst.names)} name(s) {how}; "
            f"{len(detector.scanners)} scanner name(s) in force in all"
        )
        if lst.digests or detector.scanner_digests:
            message += (
                f"; {len(lst.digests)} digest(s) added, "
                f"{len(detector.scanner_digests)} in force in all"
            )
        ready = condition(
            not problems,
            "InvalidNames" if problems else "Valid",
            ("; ".join(problems[:3]) + "; the valid names and digests still apply")
            if problems
            else message,
            generation,
        )
        return {
            "observedGeneration": generation,
            "names": len(lst.names),
            "replacesDefaults": lst.replace_defaults,
            "namesInForce": len(detector.scanners),
            "digests": len(lst.digests),
            "digestsInForce": len(detector.scanner_digests),
            "problems": [cut(p, 300) for p in problems[:SAMPLE]],
            "conditions": [ready],
        }

    return Kind("ScannerImages", "scannerimages", False, scanner_list_from_object, install, status)


def suppressions(
    detector: Detector,
    operator_namespace: str,
    changed: Callable[[set[str] | None], None],
    hidden: Counter[str],
) -> Kind:
    """``hidden``: pulls hidden per Suppression (``namespace/name``), counted by the engine.
    ``changed(namespaces)``: the namespaces whose Findings' cover may have changed (None: all)."""
    covering: Counter[tuple[str, str]] = Counter()  # per Suppression: Findings it covers now

    started = False  # the first install (at start-up) logs what is in force

    def scope(s: Suppression) -> str:
        return "cluster" if s.namespace == operator_namespace else "namespace"

    def state(s: Suppression, now: float) -> str:
        return "invalid" if s.problems else "expired" if s.expired(now) else "active"

    def install(items: list[Suppression]) -> None:
        nonlocal started
        before = set(detector.suppressions.items)
        detector.suppressions = Suppressions(items)
        moved = before ^ set(detector.suppressions.items)
        changed(None if any(s.cluster_wide for s in moved) else {s.namespace for s in moved})
        now = time.time()
        states: Counter[tuple[str, str]] = Counter()
        over: Counter[str] = Counter()
        for s in items:
            states[(scope(s), state(s, now))] += 1
            if s.over_budget:
                over["cluster" if "cluster-wide" in s.problems[0] else "namespace"] += 1
            elif not started and state(s, now) == "active":
                log.info("Suppression %s in force at start-up: %s", s.key, s.describe())
        started = True
        for sc in ("cluster", "namespace"):
            for st in ("active", "expired", "invalid"):
                metrics.SUPPRESSIONS.labels(sc, st).set(states[(sc, st)])
            metrics.SUPPRESSIONS_OVER_BUDGET.labels(sc).set(over[sc])

    def noticed(s: Suppression, body: dict[str, Any]) -> None:
        """A version its status does not record: new, or changed (since the last status any
        pullwatch wrote - a change made while none ran is told at start-up). Those over the
        budget are counted but not logged one by one (the budget's warning says how many)."""
        recorded = (body.get("status") or {}).get("observedGeneration")
        change = "created" if recorded is None else "changed"
        metrics.SUPPRESSION_CHANGES.labels(scope(s), change).inc()
        if not s.over_budget:
            log.warning(
                "Suppression %s %s (generation %s, %s): %s; reason: %s",
                s.key,
                change,
                body["metadata"].get("generation"),
                state(s, time.time()),
                s.describe(),
                s.reason or "none given",
            )

    def prepare() -> None:
        """One pass over the Findings for every status of the pass (not one per Suppression:
        200 Suppressions x 10,000 Findings on the event loop stalled it for seconds)."""
        covering.clear()
        for st in detector.states.values():
            if st.suppression is not None:
                covering[(st.suppression["namespace"], st.suppression["name"])] += 1

    def status(s: Suppression, body: dict[str, Any]) -> dict[str, Any]:
        generation = body["metadata"].get("generation")
        stored = body.get("status") if isinstance(body.get("status"), dict) else {}
        if isinstance(stored.get("hidden"), int) and stored["hidden"] > hidden[s.key]:
            hidden[s.key] = stored["hidden"]  # counted before this process started: go on
        if s.problems:
            ready = condition(
                False, "Invalid", "covers nothing: " + "; ".join(s.problems[:3]), generation
            )
        elif s.expired(time.time()):
            ready = condition(False, "Expired", "expired: covers nothing any more", generation)
        else:
            # how it was read narrower than written ("every rule but the scanner rule") is said
            ready = condition(True, "Active", "; ".join((s.describe(), *s.notes)), generation)
        return {
            "observedGeneration": generation,
            "covers": cut(s.describe(), 1000),
            "hidden": hidden[s.key],
            "findings": covering[(s.namespace, s.name)],
            "problems": [cut(p, 300) for p in s.problems[:SAMPLE]],
            "notes": [cut(n, 300) for n in s.notes[:SAMPLE]],
            "conditions": [ready],
        }

    return Kind(
        "Suppression",
        "suppressions",
        True,
        lambda b: suppression_from_object(b, operator_namespace),
        install,
        status,
        prepare,
        cost=suppression_cost,
        budget=lambda claims: admit(claims, operator_namespace),
        refused=lambda meta, why: refused_suppression(meta["namespace"], meta["name"], why),
        noticed=noticed,
    )


def watch_of(stream: Callable[..., ListWatch], configs: Configs) -> ListWatch:
    """The watch of one kind, for ``configs`` (``stream``: the engine's ListWatch, with its
    deadlines, health and log): our list + watch, not kopf's, whose watcher ends the operator on
    the 404 that an API server which restarts answers for a custom resource until it has loaded
    the CRDs again. A whole relist (after 410) tells ``configs`` the uids it held, so that what
    was deleted while nobody watched is dropped."""
    return stream(
        configs.kind.path(),
        configs.apply,
        name=f"{configs.kind.name} watch",
        metric=configs.kind.plural,
        listed=configs.drop_unlisted,
    )
