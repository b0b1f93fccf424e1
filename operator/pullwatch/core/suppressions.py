"""Suppressions: detections a team has accepted - still counted, no longer paging anyone.

A ``Suppression`` (namespaced) names the rules (``*`` for all), image patterns (the AllowedImages
grammar; absent: any image), workload name globs (absent: any), a required ``reason`` and an
optional ``expires``. It covers detections in its own namespace; one in the operator's own
namespace may also name ``namespaces`` globs and act cluster-wide (RBAC decides who may create
objects there). Anywhere else a ``namespaces`` field is refused, because it would read as if it
widened what the object covers.

A covered pull is still counted in its Finding - evidence is never discarded - and the Finding
says which Suppression covers it; it is left out of the active metrics, of OpenReports ``fail``
results and so of alerts. A malformed or expired Suppression covers nothing and says why.

    >>> s = suppression_from_object({"apiVersion": "pullwatch.dev/v1alpha1", "kind": "Suppression",
    ...     "metadata": {"name": "ci-scanner", "namespace": "ci"},
    ...     "spec": {"rules": ["kubernetes-scanner-image-pulling"], "images": ["aquasec/kube-bench:*"],
    ...              "workloads": ["cis-*"], "reason": "weekly CIS benchmark"}}, "pullwatch-system")
    >>> s.covers("kubernetes-scanner-image-pulling", "ci", "cis-weekly", "docker.io/aquasec/kube-bench:v0.7.0", 0)
    True
    >>> s.covers("kubernetes-scanner-image-pulling", "prod", "cis-weekly", "docker.io/aquasec/kube-bench:v0.7.0", 0)
    False
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
from .rules import RULES

KIND = "Suppression"
RULE_NAMES = {r.name for r in RULES} | {r.short for r in RULES}
_BY_SHORT = {r.short: r.name for r in RULES}


@dataclass(frozen=True)
class Suppression:
    namespace: str
    name: str
    reason: str
    rules: frozenset[str] | None  # full rule names; None: every rule
    expires: float | None  # epoch seconds
    problems: tuple[str, ...] = ()
    namespaces: tuple[str, ...] | None = None  # cluster-wide ones only
    images: tuple[str, ...] = ()
    workloads: tuple[str, ...] = ()
    _patterns: PatternSet | None = field(default=None, compare=False, repr=False)
    _workloads: Any = field(default=None, compare=False, repr=False)
    _namespaces: Any = field(default=None, compare=False, repr=False)

    @property
    def usable(self) -> bool:
        return not self.problems

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def covers(self, rule: str, namespace: str, workload: str, image: str, now: float) -> bool:
        """Does it cover a pull of ``image`` (normalized) by ``workload`` in ``namespace`` that
        ``rule`` fired on, at ``now`` (epoch seconds)?"""
        if not self.usable or self.expired(now):
            return False
        if self.rules is not None and rule not in self.rules:
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
        rules = "all rules" if self.rules is None else ", ".join(sorted(self.rules))
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


def _strings(
    spec: Mapping[str, Any], key: str, problems: list[str], max_items: int = 256
) -> list[str] | None:
    value = spec.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or len(value) > max_items
        or not all(isinstance(v, str) and v and len(v) <= 512 for v in value)
    ):
        problems.append(
            f"spec.{key} must be a non-empty list of non-empty strings (leave it out for any)"
        )
        return None
    return value


def parse_time(value: Any) -> float | None:
    """Epoch seconds of an RFC 3339 time; raises ValueError."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def suppression_from_object(obj: Any, operator_namespace: str) -> Suppression:
    """Validate one Suppression. Never raises: what is wrong is listed, and then it covers nothing."""
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
            namespace, name, "", None, None, tuple(problems or ["spec must be a mapping"])
        )
    reason = spec.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        problems.append("spec.reason is required: say why these detections are accepted")
        reason = ""
    rules = None
    raw_rules = _strings(spec, "rules", problems, max_items=16)
    if raw_rules is not None and "*" not in raw_rules:
        unknown = [r for r in raw_rules if r not in RULE_NAMES]
        if unknown:
            problems.append(f"spec.rules names no known rule: {', '.join(unknown)}")
        rules = frozenset(_BY_SHORT.get(r, r) for r in raw_rules)
    images = _strings(spec, "images", problems, max_items=1000) or []
    patterns = None
    if images:
        compiled, bad = compile_patterns(images)
        problems.extend(f"spec.{p}" for p in bad)
        patterns = PatternSet(compiled)
    workloads = _strings(spec, "workloads", problems) or []
    namespaces = _strings(spec, "namespaces", problems)
    if namespaces is not None and namespace != operator_namespace:
        problems.append(
            f"spec.namespaces is allowed only on Suppressions in {operator_namespace} (those act "
            f"cluster-wide); this one can only cover namespace {namespace}"
        )
    expires = None
    if spec.get("expires") is not None:
        try:
            expires = parse_time(spec["expires"])
        except (ValueError, TypeError):
            problems.append("spec.expires must be an RFC 3339 time, e.g. 2026-12-31T00:00:00Z")
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
        patterns,
        _globs(workloads) if workloads else None,
        _globs(namespaces) if namespaces else None,
    )


class Suppressions:
    """The Suppressions in force. ``covering`` answers with the first (by namespace and name)."""

    def __init__(self, items: Iterable[Suppression] = ()):
        self.items = tuple(sorted(items, key=lambda s: (s.namespace, s.name)))

    def covering(
        self, rule: str, namespace: str, workload: str, image: str, now: float
    ) -> Suppression | None:
        for s in self.items:
            if s.covers(rule, namespace, workload, image, now):
                return s
        return None

    def __len__(self) -> int:
        return len(self.items)
