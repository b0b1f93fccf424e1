"""AllowedImages objects and the allowlist they add up to.

An image is allowed in namespace N when any valid AllowedImages whose ``spec.namespaces`` globs
match N (absent = every namespace) has a pattern matching the image's normalized reference.

Never widening is the rule for bad input: an object whose ``namespaces`` is malformed
contributes nothing (ignoring the field would apply it to *every* namespace); a malformed pattern
is dropped and reported while the object's other patterns still apply (narrower than the author
meant, never wider).

    >>> policy = policy_from_object({"apiVersion": "pullwatch.dev/v1alpha1", "kind": "AllowedImages",
    ...     "metadata": {"name": "team-a"},
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
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .. import API_VERSION
from .imageref import InvalidImageReference, parse_image
from .patterns import ImagePattern, PatternSet, compile_patterns

KIND = "AllowedImages"
MAX_NAMESPACE_GLOB_LENGTH = 253


@dataclass(frozen=True)
class Policy:
    """One AllowedImages object, validated. ``usable`` is False when it must contribute nothing."""

    name: str
    namespaces: tuple[str, ...] | None  # None: every namespace
    patterns: tuple[ImagePattern, ...]
    problems: tuple[str, ...] = ()
    usable: bool = True
    _ns_regex: Any = field(default=None, compare=False, repr=False)

    def applies_to(self, namespace: str) -> bool:
        if not self.usable:
            return False
        if self.namespaces is None:
            return True
        return bool(self._ns_regex.match(namespace))


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
                return _unusable(name, f"spec.namespaces[{i}] must be a non-empty string of at most "
                                       f"{MAX_NAMESPACE_GLOB_LENGTH} characters")
        namespaces = tuple(raw_ns)
        # One compiled alternation; namespace names are <= 63 characters, so stdlib re is safe.
        ns_regex = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in namespaces))

    raw_images = spec.get("images")
    if not isinstance(raw_images, list):
        return _unusable(name, "spec.images must be a list of image patterns")
    patterns, problems = compile_patterns(raw_images)
    return Policy(name=name, namespaces=namespaces, patterns=tuple(patterns),
                  problems=tuple(problems), usable=True, _ns_regex=ns_regex)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    policy: str | None = None
    pattern: str | None = None


class Allowlist:
    """An immutable view of all AllowedImages. Build a new one when any of them changes.

    Verdicts are cached per (namespace, image): the same images are pulled again and again.
    """

    CACHE_SIZE = 16384

    def __init__(self, policies: Iterable[Policy] = ()):
        self.policies: tuple[Policy, ...] = tuple(policies)
        self._sets = [(p, PatternSet(p.patterns)) for p in self.policies if p.usable and p.patterns]
        self._cache: OrderedDict[tuple[str, str], Verdict] = OrderedDict()

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
            return Verdict(False, f"not a valid image reference ({exc}); it can never be allowlisted")
        normalized = ref.normalized
        for policy, patterns in self._sets:
            if policy.applies_to(namespace):
                hit = patterns.match(normalized)
                if hit is not None:
                    return Verdict(True, f"allowed by AllowedImages {policy.name} pattern {hit.raw!r}",
                                   policy.name, hit.raw)
        return Verdict(False, f"no AllowedImages pattern for namespace {namespace} matches {normalized}")


def objects_from_documents(docs: Iterable[Any]) -> Iterable[Any]:
    """Flatten YAML/JSON documents: ``v1 List`` (or ``AllowedImagesList``) items are yielded one
    by one; empty documents (a trailing ``---``) are skipped."""
    for doc in docs:
        if doc is None:
            continue
        if isinstance(doc, Mapping) and isinstance(doc.get("kind"), str) \
                and doc["kind"].endswith("List") and isinstance(doc.get("items"), list):
            yield from doc["items"]
        else:
            yield doc
