"""Suppressions: detections a team has accepted - still counted, no longer paging anyone.

A ``Suppression`` (namespaced) names the rules, image patterns (the AllowedImages grammar;
absent: any image), workload name globs (absent: any), and must say why (``reason``) and until
when (``expires``). It covers detections in its own namespace.

Who may silence what is decided by RBAC on namespaces, so the rules follow the namespace:

* A Suppression in the operator's own namespace is a cluster administrator's. It may cover the
  scanner rule, and may name ``namespaces`` globs to act cluster-wide.
* Anywhere else it is a tenant's: it can never cover the scanner rule (a team that runs
  kube-hunter in its own namespace must not be the one to decide that nobody hears of it), and
  ``namespaces`` is refused (it would read as if it widened what the object covers). There
  ``rules: ["*"]`` (or no ``rules``) means every rule but the scanner rule, and the status says so;
  naming the scanner rule makes the object cover nothing.
* ``expires`` is at most ``MAX_DAYS`` days after the object was created (its
  ``metadata.creationTimestamp``, which the API server sets): an exception is reviewed at least
  every quarter, and no Suppression silences anything for ever.

A covered pull is still counted in its Finding - evidence is never discarded - and the Finding
says which Suppression covers it; it is left out of the active metrics, of OpenReports ``fail``
results and so of alerts. A malformed or expired Suppression covers nothing and says why.

    >>> body = {"apiVersion": "pullwatch.dev/v1alpha1", "kind": "Suppression",
    ...     "metadata": {"name": "ci", "namespace": "ci",
    ...                  "creationTimestamp": "2026-11-01T00:00:00Z"},
    ...     "spec": {"rules": ["*"], "images": ["aquasec/kube-bench:*"], "workloads": ["cis-*"],
    ...              "reason": "weekly CIS benchmark", "expires": "2026-12-31T00:00:00Z"}}
    >>> s = suppression_from_object(body, "pullwatch-system")
    >>> image = "docker.io/aquasec/kube-bench:v0.7.0"
    >>> s.covers("kubernetes-suspicious-image-pulling", "ci", "cis-weekly", image, 0)
    True
    >>> s.covers("kubernetes-scanner-image-pulling", "ci", "cis-weekly", image, 0)  # a tenant's
    False
    >>> s.notes[0][:60]
    "rules: ['*'] means every rule but kubernetes-scanner-image-p"
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .. import API_VERSION
from .patterns import PatternSet, compile_patterns
from .rules import RULES, SCANNER_RULE

KIND = "Suppression"
MAX_DAYS = 90
# The CRD's bounds too (crds/suppressions.pullwatch.dev.yaml), held here as well for objects that
# never passed through it (files for `pullwatch scan`, a CRD installed from an older release). An
# exception a person writes and reviews names a few images and workloads; these leave room for
# ten times that, and keep one object's compiled cost at about 0.34 MB (core/budgets.py).
MAX_ITEMS = {"rules": 16, "images": 32, "workloads": 16, "namespaces": 32}
MAX_IMAGE_LENGTH = 256  # an image pattern; globs of names are at most 253 (a DNS subdomain)
MAX_GLOB_LENGTH = 253
RULE_NAMES = {r.name for r in RULES} | {r.short for r in RULES}
_BY_SHORT = {r.short: r.name for r in RULES}
_ALL_RULES = frozenset(r.name for r in RULES)


@dataclass(frozen=True)
class Suppression:
    namespace: str
    name: str
    reason: str
    rules: frozenset[str]  # full rule names
    expires: float | None  # epoch seconds; None only for an object refused for lacking it
    problems: tuple[str, ...] = ()
    namespaces: tuple[str, ...] | None = None  # cluster-wide ones only
    images: tuple[str, ...] = ()
    workloads: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # how it was read narrower than written (not problems)
    _patterns: PatternSet | None = field(default=None, compare=False, repr=False)
    _workloads: Any = field(default=None, compare=False, repr=False)
    _namespaces: Any = field(default=None, compare=False, repr=False)
    uid: str = field(default="", compare=False)  # metadata.uid and .generation: which version
    generation: Any = field(default=None, compare=False)
    over_budget: bool = False  # not compiled: over a budget of core/budgets.py

    @property
    def usable(self) -> bool:
        return not self.problems

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def cluster_wide(self) -> bool:
        return self._namespaces is not None

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def covers(self, rule: str, namespace: str, workload: str, image: str, now: float) -> bool:
        """Does it cover a pull of ``image`` (normalized) by ``workload`` in ``namespace`` that
        ``rule`` fired on, at ``now`` (epoch seconds)?"""
        if not self.usable or self.expired(now) or rule not in self.rules:
            return False
        if self._namespaces is not None:
            if not self._namespaces.match(namespace):
                return False
        elif namespace != self.namespace:
            return False
        if self._workloads is not None and not self._workloads.match(workload):
            return False
        return self._patterns is None or self._patterns.match(image) is not None

    def describe(self) -> str:
        """What it covers, in one line (for its status and `kubectl get suppressions`)."""
        rules = "all rules" if self.rules == _ALL_RULES else ", ".join(sorted(self.rules))
        where = (
            f"namespaces {', '.join(self.namespaces)}"
            if self.namespaces
            else f"namespace {self.namespace}"
        )
        images = ", ".join(self.images) if self.images else "any image"
        workloads = ", ".join(self.workloads) if self.workloads else "any workload"
        return f"{rules}; {where}; {images}; {workloads}"


def _globs(values: list[str]) -> Any:
    return re.compile("|".join(f"(?:{fnmatch.translate(v)})" for v in values))


def _strings(spec: Mapping[str, Any], key: str, problems: list[str]) -> list[str] | None:
    value = spec.get(key)
    if value is None:
        return None
    longest = MAX_IMAGE_LENGTH if key == "images" else MAX_GLOB_LENGTH
    if (
        not isinstance(value, list)
        or not value
        or len(value) > MAX_ITEMS[key]
        or not all(isinstance(v, str) and v and len(v) <= longest for v in value)
    ):
        problems.append(
            f"spec.{key} must be a non-empty list of at most {MAX_ITEMS[key]} non-empty strings "
            f"of at most {longest} characters (leave it out for any)"
        )
        return None
    return value


def suppression_cost(obj: Any) -> int:
    """What compiling the object would cost, in units of core/budgets.py: one, plus one per
    pattern or glob written. Read from the lengths alone, so that an object over the budget is
    never compiled (nor its lists looked into)."""
    spec = obj.get("spec") if isinstance(obj, Mapping) else None
    if not isinstance(spec, Mapping):
        return 1
    return 1 + sum(
        len(v) for k in ("images", "workloads", "namespaces") if isinstance(v := spec.get(k), list)
    )


def refused_suppression(namespace: str, name: str, why: str) -> Suppression:
    """The stand-in for an object that was not compiled (over a budget): covers nothing."""
    return Suppression(namespace, name, "", frozenset(), None, (why,), over_budget=True)


def parse_time(value: Any) -> float:
    """Epoch seconds of an RFC 3339 time; raises ValueError."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _rules(
    spec: Mapping[str, Any], admin: bool, operator_namespace: str, problems: list[str]
) -> tuple[frozenset[str], tuple[str, ...]]:
    """The rules it covers, and how they were read narrower than written."""
    raw = _strings(spec, "rules", problems)
    if raw is not None and "*" not in raw:
        unknown = [r for r in raw if r not in RULE_NAMES]
        if unknown:
            problems.append(f"spec.rules names no known rule: {', '.join(unknown)}")
        rules = frozenset(_BY_SHORT.get(r, r) for r in raw)
        if SCANNER_RULE.name in rules and not admin:
            problems.append(
                f"{SCANNER_RULE.name} can be suppressed only by a Suppression in "
                f"{operator_namespace} (cluster administrators); this one covers nothing"
            )
        return rules, ()
    if admin:
        return _ALL_RULES, ()
    written = "rules: ['*']" if raw is not None else "no spec.rules"
    note = (
        f"{written} means every rule but {SCANNER_RULE.name} here: only Suppressions in "
        f"{operator_namespace} can cover it"
    )
    return _ALL_RULES - {SCANNER_RULE.name}, (note,)


def _expiry(
    spec: Mapping[str, Any], meta: Mapping[str, Any], now: float | None, problems: list[str]
) -> float | None:
    if spec.get("expires") is None:
        problems.append(
            f"spec.expires is required (at most {MAX_DAYS} days after the object's creation): "
            "an accepted detection is reviewed, not forgotten"
        )
        return None
    try:
        expires = parse_time(spec["expires"])
    except (ValueError, TypeError):
        problems.append("spec.expires must be an RFC 3339 time, e.g. 2026-12-31T00:00:00Z")
        return None
    try:
        created = parse_time(meta.get("creationTimestamp"))
    except (ValueError, TypeError):
        created = now  # a file of objects never stored: judged from the moment it is read
    if created is not None and expires > created + MAX_DAYS * 86400:
        problems.append(
            f"spec.expires is more than {MAX_DAYS} days after the object was created: "
            "renew the Suppression when it expires instead"
        )
    return expires


def suppression_from_object(
    obj: Any, operator_namespace: str, now: float | None = None
) -> Suppression:
    """Validate one Suppression. Never raises: what is wrong is listed, and then it covers
    nothing. ``now`` (epoch seconds) stands in for the creation time of an object that has none
    (a file); an object with neither is not held to the longest expiry."""
    meta = (
        obj.get("metadata")
        if isinstance(obj, Mapping) and isinstance(obj.get("metadata"), Mapping)
        else {}
    )
    name = meta.get("name") if isinstance(meta.get("name"), str) else "<unnamed>"
    namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else "default"
    problems: list[str] = []
    spec = obj.get("spec") if isinstance(obj, Mapping) else None
    if (
        not isinstance(obj, Mapping)
        or obj.get("kind") != KIND
        or obj.get("apiVersion") != API_VERSION
    ):
        problems.append(f"not a {API_VERSION} {KIND}")
    if not isinstance(spec, Mapping):
        return Suppression(
            namespace,
            name,
            "",
            frozenset(),
            None,
            tuple(problems or ["spec must be a mapping"]),
        )
    admin = namespace == operator_namespace
    reason = spec.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        problems.append("spec.reason is required: say why these detections are accepted")
        reason = ""
    rules, notes = _rules(spec, admin, operator_namespace, problems)
    images = _strings(spec, "images", problems) or []
    patterns = None
    if images:
        compiled, bad = compile_patterns(images)
        problems.extend(f"spec.{p}" for p in bad)
        patterns = PatternSet(compiled)
    workloads = _strings(spec, "workloads", problems) or []
    namespaces = _strings(spec, "namespaces", problems)
    if namespaces is not None and not admin:
        problems.append(
            f"spec.namespaces is allowed only on Suppressions in {operator_namespace} (those act "
            f"cluster-wide); this one can only cover namespace {namespace}"
        )
    expires = _expiry(spec, meta, now, problems)
    return Suppression(
        namespace,
        name,
        reason.strip()[:1000],
        rules,
        expires,
        tuple(problems),
        tuple(namespaces) if namespaces else None,
        tuple(images),
        tuple(workloads),
        notes,
        patterns,
        _globs(workloads) if workloads else None,
        _globs(namespaces) if namespaces and admin else None,
        uid=meta.get("uid") if isinstance(meta.get("uid"), str) else "",
        generation=meta.get("generation"),
    )


class Suppressions:
    """The Suppressions in force, indexed by the namespace they cover: a lookup costs the
    Suppressions of one namespace and the cluster-wide ones, never all of them. ``covering``
    answers with the first that covers (by namespace and name)."""

    def __init__(self, items: Iterable[Suppression] = ()):
        self.items = tuple(sorted(items, key=lambda s: (s.namespace, s.name)))
        self._cluster = tuple(s for s in self.items if s.usable and s.cluster_wide)
        self._by_namespace: dict[str, tuple[Suppression, ...]] = {}
        for s in self.items:
            if s.usable and not s.cluster_wide:
                self._by_namespace[s.namespace] = (*self._by_namespace.get(s.namespace, ()), s)

    def covering(
        self, rule: str, namespace: str, workload: str, image: str, now: float
    ) -> Suppression | None:
        found = None
        for s in (*self._by_namespace.get(namespace, ()), *self._cluster):
            if s.covers(rule, namespace, workload, image, now) and (
                found is None or (s.namespace, s.name) < (found.namespace, found.name)
            ):
                found = s
        return found

    def could_cover(self, namespace: str) -> bool:
        """Whether any Suppression could cover a detection in ``namespace`` (a cheap first
        look before rechecking a namespace's Findings)."""
        return namespace in self._by_namespace or bool(self._cluster)

    def __len__(self) -> int:
        return len(self.items)
