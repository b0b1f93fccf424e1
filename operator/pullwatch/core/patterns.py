"""Allowlist image patterns: normalized like images, matched whole, in linear time.

Semantics (the README's "Allowlist patterns" section says the same for users):

* A pattern is normalized with Docker's own rule (:func:`pullwatch.imageref.split_domain`):
  ``nginx:1.25.*`` means ``docker.io/library/nginx:1.25.*``. One exception: ``library/`` is not
  added where the one component holds ``**``, which may stand for several components, so
  ``docker.io/**`` and ``**`` mean all of Docker Hub.
* A pattern with no tag, no digest and no trailing wildcard gets ``:latest``, exactly as the
  image ``nginx`` means ``nginx:latest``. A trailing wildcard already spans the tag.
* It is then matched against the *whole* normalized reference: ``*`` matches any run of
  characters except ``/``; ``**`` matches any run including ``/``. Nothing else is special.
  There is no implicit prefix match, so ``quay.io/**`` can never match
  ``quay.io.attacker.example/x`` and ``docker.io/mycorp/**`` never ``docker.io/mycorpevil/x``.
* A digest-only reference (``nginx@sha256:…``) has no tag, so a tag pattern such as
  ``nginx:1.25.*`` never matches it: the tag cannot be known from a digest. Allow digests with
  a pattern that names them (``nginx@sha256:<hex>``) or with a wildcard that spans them
  (``docker.io/library/*``); wildcards inside a digest are not valid.
* A pattern is valid when putting a letter in place of every wildcard gives a valid image
  reference; anything else is rejected with the parser's reason, never loosened.

Matching uses RE2 (``google-re2``), which runs in time linear in the input whatever the pattern,
so no pattern (``**a**a**a**b``…) can make the operator backtrack catastrophically.

    >>> p = compile_pattern("quay.io/prometheus/**")
    >>> p.normalized
    'quay.io/prometheus/**'
    >>> compile_pattern("nginx").normalized
    'docker.io/library/nginx:latest'
    >>> compile_pattern("docker.io/mycorp/*").normalized
    'docker.io/mycorp/*'
    >>> compile_pattern("**").normalized        # all of Docker Hub (not only its library/)
    'docker.io/**'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import re2

from .imageref import DEFAULT_TAG, InvalidImageReference, parse_image, split_domain

MAX_PATTERN_LENGTH = 512
_WILDCARD_RUN = re.compile(r"\*+")


class InvalidPattern(ValueError):
    """An allowlist pattern that cannot be used (and so allows nothing)."""


@dataclass(frozen=True)
class ImagePattern:
    raw: str
    normalized: str
    regex: str  # RE2 syntax, to be full-matched


def _glob_to_re2(normalized: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(normalized):
        if normalized.startswith("**", i):
            out.append(".*")
            i += 2
        elif normalized[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            j = i
            while j < len(normalized) and normalized[j] != "*":
                j += 1
            out.append(re2.escape(normalized[i:j]))
            i = j
    return "".join(out)


def normalize_pattern(raw: str) -> str:
    """Normalize ``raw`` like an image; raise :class:`InvalidPattern` with the reason."""
    if not isinstance(raw, str):
        raise InvalidPattern(f"pattern must be a string, not {type(raw).__name__}")
    if not raw:
        raise InvalidPattern("pattern is empty")
    if len(raw) > MAX_PATTERN_LENGTH:
        raise InvalidPattern(f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    if any(len(run) > 2 for run in _WILDCARD_RUN.findall(raw)):
        raise InvalidPattern(f"{raw!r}: use '*' or '**', not longer runs of '*'")
    domain, remainder = split_domain(raw)
    if domain == "docker.io" and remainder.startswith("library/") and "**" in remainder:
        # Docker adds 'library/' to a one-component Hub name. '**' may stand for several
        # components, so 'docker.io/**' (or '**') means all of Docker Hub, not its library.
        written = raw.split("/", 1)[1] if "/" in raw else raw
        if "/" not in written:
            remainder = written
    if "**" in domain:
        # '**' crosses '/', so in the host it would reach into another registry's paths
        # ('**.example.com/app' would match 'evil.com/x.example.com/app').
        raise InvalidPattern(f"{raw!r}: '**' cannot stand in the registry host; use '*'")
    last = remainder.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in remainder and not remainder.endswith("*"):
        remainder += f":{DEFAULT_TAG}"
    normalized = f"{domain}/{remainder}"
    # Valid when some reading of the wildcards gives a canonical image reference ('**' may be
    # one path component or several).
    error = ""
    for multi in ("x", "x/x"):
        probe = normalized.replace("**", multi).replace("*", "x")
        try:
            parsed = parse_image(probe)
        except InvalidImageReference as exc:
            error = error or str(exc)
            continue
        if parsed.normalized in (probe, f"{probe}:{DEFAULT_TAG}"):
            return normalized
        error = error or f"it does not normalize unambiguously (as {parsed.normalized!r})"
    raise InvalidPattern(f"{raw!r} is not an image pattern: {error}")


def compile_pattern(raw: str) -> ImagePattern:
    normalized = normalize_pattern(raw)
    return ImagePattern(raw=raw, normalized=normalized, regex=_glob_to_re2(normalized))


class PatternSet:
    """Many patterns matched together; reports the first (in list order) that matches.

    Exact patterns (no wildcard) are a dict lookup. Wildcard patterns are compiled into RE2 sets
    of at most ``CHUNK`` patterns each, because one RE2 set over thousands of wildcard patterns
    runs out of its memory budget and fails to compile; a chunk that still fails is split in two
    until it compiles (a single pattern that cannot is rejected as too complex). Chunks are
    indexed by the registry host when it is literal, so a lookup only runs the sets that can
    match its registry. Each set matches in time linear in the image's length.

        >>> s = PatternSet([compile_pattern("nginx:1.25.*"), compile_pattern("quay.io/**")])
        >>> s.match("docker.io/library/nginx:1.25.3").raw, s.match("quay.io/a/b:1").raw
        ('nginx:1.25.*', 'quay.io/**')
        >>> s.match("quay.io.evil.example/a:1") is None
        True
    """

    CHUNK = 1000
    MAX_MEM = 256 << 20  # per set: RE2's own default (8 MiB) fails at a few hundred wildcards

    def __init__(self, patterns: Sequence[ImagePattern]):
        self.patterns: tuple[ImagePattern, ...] = tuple(patterns)
        self.rejected: dict[int, str] = {}  # index -> why: patterns RE2 cannot compile even alone
        self._exact: dict[str, int] = {}
        for i, p in enumerate(self.patterns):
            if "*" not in p.normalized:
                self._exact.setdefault(p.normalized, i)
        by_host: dict[str | None, list[int]] = {}
        for i, p in enumerate(self.patterns):
            if "*" in p.normalized:
                host = p.normalized.split("/", 1)[0]
                by_host.setdefault(None if "*" in host else host, []).append(i)
        self._chunks: dict[str | None, list[tuple[Any, list[int]]]] = {}
        for host, indices in by_host.items():
            for start in range(0, len(indices), self.CHUNK):
                self._compile(host, indices[start : start + self.CHUNK])

    def _compile(self, host: str | None, indices: list[int]) -> None:
        options = re2.Options()
        options.max_mem = self.MAX_MEM
        s = re2.Set.FullMatchSet(options)
        for i in indices:
            s.Add(self.patterns[i].regex)
        try:
            s.Compile()
        except Exception:
            if len(indices) == 1:
                self.rejected[indices[0]] = (
                    f"{self.patterns[indices[0]].raw!r}: too complex to match in linear time"
                )
                return
            half = len(indices) // 2
            self._compile(host, indices[:half])
            self._compile(host, indices[half:])
            return
        self._chunks.setdefault(host, []).append((s, indices))

    def match(self, normalized_image: str) -> ImagePattern | None:
        best = self._exact.get(normalized_image)
        host = normalized_image.split("/", 1)[0]
        for key in (host, None):
            for s, indices in self._chunks.get(key, ()):
                found = s.Match(normalized_image)
                if found:
                    first = indices[min(found)]
                    if best is None or first < best:
                        best = first
        return None if best is None else self.patterns[best]

    def __len__(self) -> int:
        return len(self.patterns)


def compile_patterns(raws: Iterable[object]) -> tuple[list[ImagePattern], list[str]]:
    """Compile what can be compiled; return (patterns, one problem string per rejected one)."""
    good: list[ImagePattern] = []
    problems: list[str] = []
    for index, raw in enumerate(raws):
        try:
            good.append(compile_pattern(raw))  # type: ignore[arg-type]
        except InvalidPattern as exc:
            problems.append(f"images[{index}]: {exc}")
    return good, problems
