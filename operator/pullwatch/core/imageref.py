"""Image references, parsed and normalized exactly as Docker's distribution/reference does.

The grammar itself comes from ``docker-image-py`` (a line-by-line port of distribution/reference,
checked against upstream's own test tables in ``tests/test_imageref.py``). This module adds what
pullwatch needs on top: one frozen value type, a canonical string with the default tag, a bound
on input length and a cache, because the same few hundred images are pulled over and over.

Worked examples::

    >>> parse_image("nginx").normalized
    'docker.io/library/nginx:latest'
    >>> parse_image("index.docker.io/aquasec/kube-hunter:0.6.8").normalized
    'docker.io/aquasec/kube-hunter:0.6.8'
    >>> parse_image("registry.example.net:5000/mirrors/aquasec/kube-hunter").last_component
    'kube-hunter'
    >>> parse_image("busybox@sha256:" + "a" * 64).tag is None      # a digest never gets 'latest'
    True
    >>> parse_image("Nginx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pullwatch.core.imageref.InvalidImageReference: invalid reference format: ... must be lowercase
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from docker_image import digest as _digest
from docker_image import reference as _reference

DEFAULT_TAG = "latest"

# No valid reference is this long: a DNS host is at most 253 characters (+ a port), the path
# 255, a tag 128 and a registered digest 7 + 128. The cap keeps the backtracking regex engine
# that docker-image-py uses away from attacker-sized inputs (event messages can be 100 kB).
MAX_REFERENCE_LENGTH = 1024


# Every character the grammar can produce. Checked first because docker-image-py anchors its
# patterns with '$', which in Python (unlike Go) also matches before a trailing newline: without
# this, "nginx\n" would parse.
_GRAMMAR_CHARS = re.compile(r"[A-Za-z0-9._:/@\[\]+-]*")


class InvalidImageReference(ValueError):
    """The string is not an image reference under the distribution/reference grammar."""


@dataclass(frozen=True)
class ImageRef:
    """A parsed, normalized image reference. ``raw`` is kept exactly as it was written."""

    raw: str
    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        """``domain/path`` with no tag or digest: ``docker.io/library/nginx``."""
        return f"{self.domain}/{self.path}"

    @property
    def last_component(self) -> str:
        """The image's own name, whatever registry or mirror serves it: ``kube-hunter``."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def normalized(self) -> str:
        """The canonical form allowlist patterns are matched against.

        ``domain/path:tag``, ``domain/path@digest`` or ``domain/path:tag@digest``; the tag
        defaults to ``latest`` only when no digest is given (as the container runtimes do).
        """
        out = self.repository
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


def _reason(exc: Exception) -> str:
    text = str(exc.args[0]) if exc.args else ""
    return text or type(exc).__name__


# Bounded for memory: image strings come from anyone who can write an Event (up to ~1.6 KB per
# parsed long reference, ~27 MB at most); a real cluster has far fewer distinct images.
@functools.lru_cache(maxsize=16384)
def parse_image(raw: str) -> ImageRef:
    """Parse and normalize ``raw``; raise :class:`InvalidImageReference` with the reason.

    Cached: images repeat far more than they vary, and ``ImageRef`` is immutable.
    (Exceptions are not cached by ``lru_cache``; invalid strings are rare and cheap to re-reject.)
    """
    if not isinstance(raw, str):
        raise InvalidImageReference(f"image reference must be a string, not {type(raw).__name__}")
    if len(raw) > MAX_REFERENCE_LENGTH:
        raise InvalidImageReference(
            f"image reference is {len(raw)} characters long; no valid reference exceeds "
            f"{MAX_REFERENCE_LENGTH}"
        )
    if not _GRAMMAR_CHARS.fullmatch(raw):
        bad = next(c for c in raw if not _GRAMMAR_CHARS.fullmatch(c))
        raise InvalidImageReference(f"invalid reference format: character {bad!r} is not allowed")
    try:
        ref = _reference.Reference.parse_normalized_named(raw)
    except (_reference.InvalidReference, _digest.InvalidDigest) as exc:
        raise InvalidImageReference(_reason(exc)) from None
    tag = ref["tag"]
    digest = ref["digest"]
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return ImageRef(raw=raw, domain=ref.domain(), path=ref.path(), tag=tag, digest=digest)


def split_domain(name: str) -> tuple[str, str]:
    """Docker's rule for where the registry ends, applied to a name that may hold wildcards.

    The first ``/``-component is a domain only if it contains ``.`` or ``:`` or is
    ``localhost``; ``index.docker.io`` is ``docker.io``; a one-component Docker Hub name gets
    ``library/``. Used for allowlist patterns, which must normalize exactly like images::

        >>> split_domain("nginx:1.25.*")
        ('docker.io', 'library/nginx:1.25.*')
        >>> split_domain("quay.io/prometheus/**")
        ('quay.io', 'prometheus/**')
    """
    return _reference.Reference.split_docker_domain(name)
