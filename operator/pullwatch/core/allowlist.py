"""AllowedImages objects and the allowlist they add up to.

An image is allowed in namespace N when any valid AllowedImages whose ``spec.namespaces`` globs
match N (absent = every namespace) has a pattern matching the image's normalized reference.

Never widening is the rule for bad input: an object whose ``namespaces`` is malformed
contributes nothing (ignoring the field would apply it to *every* namespace); a malformed pattern
is dropped and reported while the object's other patterns still apply (narrower than the author
meant, never wider). Empty means empty: ``namespaces: []`` applies to no namespace and
``images: []`` allows nothing - both are reported, because neither is likely what was meant.
(``namespaces: null`` is the field left out: the API server drops a null field before it stores
the object, so the operator could not tell the two apart, and ``scan`` reads files the same way.)

    >>> policy = policy_from_object({"apiVersion": "pullwatch.dev/v1alpha1",
    ...     "kind": "AllowedImages", "metadata": {"name": "team-a"},
    ...     "spec": {"namespaces": ["team-a-*"], "images": ["quay.io/prometheus/**"]}})
    >>> allow = Allowlist([policy])
    >>> allow.check("team-a-web", "quay.io/prometheus/node-exporter:v1.8.0").allowed
    True
    >>> allow.check("team-b", "quay.io/prometheus/node-exporter:v1.8.0").reason
    'no AllowedImages pattern for namespace team-b matches quay.io/prometheus/node-exporter:v1.8.0'
"""

from __future__ import annotations

import fnmatch
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import API_VERSION
from .imageref import InvalidImageReference, parse_image
from .patterns import ImagePattern, PatternSet, compile_patterns

KIND = "AllowedImages"
MAX_NAMESPACE_GLOB_LENGTH = 253


@dataclass(frozen=True)
class Policy:
    """One AllowedImages object, validated and compiled (once: an Allowlist only assembles them).
    ``usable`` is False when it must contribute nothing."""

    name: str
    namespaces: tuple[str, ...] | None  # None: every namespace; (): none
    patterns: tuple[ImagePattern, ...]
    problems: tuple[str, ...] = ()
    usable: bool = True
    _ns_regex: Any = field(default=None, compare=False, repr=False)
    matcher: PatternSet | None = field(default=None, compare=False, repr=False)

    def applies_to(self, namespace: str) -> bool:
        if not self.usable or not self.patterns:
            return False
        if self.namespaces is None:
            return True
        return self._ns_regex is not None and self._ns_regex.match(namespace) is not None


def _unusable(name: str, problem: str) -> Policy:
    return Policy(name=name, namespaces=(), patterns=(), problems=(problem,), usable=False)


def policy_from_object(obj: Any) -> Policy:
    """Validate one AllowedImages body. Never raises: problems are listed on the Policy."""
    if not isinstance(obj, Mapping):
        return _unusable("<unnamed>", f"object must be a mapping, not {type(obj).__name__}")
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    name = name if isinstance(name, str) and name else "<unnamed>"
    if obj.get("kind") != KIND:
        return _unusable(name, f"kind must be {KIND}, not {obj.get('kind')!r}")
    if obj.get("apiVersion") != API_VERSION:
        return _unusable(name, f"apiVersion must be {API_VERSION}, not {obj.get('apiVersion')!r}")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return _unusable(name, "spec must be a mapping")

    namespaces: tuple[str, ...] | None = None
    ns_regex = None
    raw_ns = spec.get("namespaces")
    if raw_ns is not None:
        if not isinstance(raw_ns, list):
            return _unusable(name, "spec.namespaces must be a list of globs")
        for i, glob in enumerate(raw_ns):
            if not isinstance(glob, str) or not glob or len(glob) > MAX_NAMESPACE_GLOB_LENGTH:
                return _unusable(
                    name,
                    f"spec.namespaces[{i}] must be a non-empty string of at most "
                    f"{MAX_NAMESPACE_GLOB_LENGTH} characters",
                )
        namespaces = tuple(raw_ns)
        # One compiled alternation (namespace names are <= 63 characters, so stdlib re is safe);
        # none at all for an empty list: an empty alternation would match every namespace.
        if namespaces:
            ns_regex = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in namespaces))

    raw_images = spec.get("images")
    if not isinstance(raw_images, list):
        return _unusable(name, "spec.images must be a list of image patterns")
    patterns, problems = compile_patterns(raw_images)
    matcher = PatternSet(patterns)
    if matcher.rejected:  # never matched by the matcher; listed as problems
        problems += matcher.rejected.values()
        patterns = [p for i, p in enumerate(patterns) if i not in matcher.rejected]
    if namespaces == ():
        problems.append(
            "spec.namespaces is empty: this object applies to no namespace "
            "(leave the field out for every namespace)"
        )
    if not raw_images:
        problems.append("spec.images is empty: this object allows nothing")
    return Policy(
        name=name,
        namespaces=namespaces,
        patterns=tuple(patterns),
        problems=tuple(problems),
        usable=True,
        _ns_regex=ns_regex,
        matcher=matcher,
    )


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    policy: str | None = None
    pattern: str | None = None


class Allowlist:
    """An immutable view of all AllowedImages. Build a new one when any of them changes: that is
    cheap, because each Policy carries its compiled patterns.

    Verdicts are cached per (namespace, image): the same images are pulled again and again; and
    the policies that apply to a namespace are worked out once per namespace.
    """

    CACHE_SIZE = 16384

    def __init__(self, policies: Iterable[Policy] = ()):
        self.policies: tuple[Policy, ...] = tuple(policies)
        self._usable = [
            p for p in self.policies if p.usable and p.patterns and p.matcher is not None
        ]
        self._cache: OrderedDict[tuple[str, str], Verdict] = OrderedDict()
        self._by_namespace: dict[str, list[Policy]] = {}

    def check(self, namespace: str, image: str) -> Verdict:
        key = (namespace, image)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        verdict = self._decide(namespace, image)
        self._cache[key] = verdict
        if len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)
        return verdict

    def _decide(self, namespace: str, image: str) -> Verdict:
        try:
            ref = parse_image(image)
        except InvalidImageReference as exc:
            return Verdict(
                False, f"not a valid image reference ({exc}); it can never be allowlisted"
            )
        normalized = ref.normalized
        applicable = self._by_namespace.get(namespace)
        if applicable is None:
            if len(self._by_namespace) >= self.CACHE_SIZE:
                self._by_namespace.clear()
            applicable = self._by_namespace[namespace] = [
                p for p in self._usable if p.applies_to(namespace)
            ]
        # With a tag and a digest (what a pod ran), a pin of the digest allows it whatever the
        # tag: the digest is what ran, the tag only what it was called.
        pinned = f"{ref.repository}@{ref.digest}" if ref.digest and ref.tag else None
        for policy in applicable:
            hit = policy.matcher.match(normalized)  # type: ignore[union-attr]
            if hit is None and pinned is not None:
                hit = policy.matcher.match(pinned)  # type: ignore[union-attr]
            if hit is not None:
                return Verdict(
                    True,
                    f"allowed by AllowedImages {policy.name} pattern {hit.raw!r}",
                    policy.name,
                    hit.raw,
                )
        return Verdict(
            False, f"no AllowedImages pattern for namespace {namespace} matches {normalized}"
        )


def objects_from_documents(docs: Iterable[Any]) -> Iterable[Any]:
    """Flatten YAML/JSON documents: ``v1 List`` (or ``AllowedImagesList``) items are yielded one
    by one; empty documents (a trailing ``---``) are skipped."""
    for doc in docs:
        if doc is None:
            continue
        if (
            isinstance(doc, Mapping)
            and isinstance(doc.get("kind"), str)
            and doc["kind"].endswith("List")
            and isinstance(doc.get("items"), list)
        ):
            yield from doc["items"]
        else:
            yield doc
