"""Kubernetes names, checked before they are trusted with anything.

Everything pullwatch reads was written by someone who may be the attacker: a name taken from an
Event, an audit entry or a pod reaches API paths, metric labels and Finding names only after it
passed the API server's own rules (apimachinery's ``validation.IsDNS1123Label`` and
``IsDNS1123Subdomain``). What fails them is refused as damage, never "cleaned up" into something
else, and every path segment is quoted besides.

    >>> is_label("prod"), is_label("Prod"), is_label("a" * 64)
    (True, False, False)
    >>> is_subdomain("web-7d9f8b6c5d-x7k2p"), is_subdomain("../../secrets")
    (True, False)
    >>> segment("web.1"), segment("a/b")
    ('web.1', 'a%2Fb')
"""

from __future__ import annotations

import functools
import re
from urllib.parse import quote

MAX_LABEL = 63
MAX_SUBDOMAIN = 253
_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")


def is_label(name: object) -> bool:
    """A DNS-1123 label: what namespaces and container names are."""
    if name.__class__ is str:
        return len(name) <= MAX_LABEL and _label(name)  # type: ignore[arg-type]
    return isinstance(name, str) and len(name) <= MAX_LABEL and _LABEL.fullmatch(name) is not None


def is_subdomain(name: object) -> bool:
    """A DNS-1123 subdomain: what pods, workloads, Events and nodes are named."""
    if name.__class__ is str:
        return len(name) <= MAX_SUBDOMAIN and _subdomain(name)  # type: ignore[arg-type]
    return (
        isinstance(name, str)
        and len(name) <= MAX_SUBDOMAIN
        and _SUBDOMAIN.fullmatch(name) is not None
    )


# Cached: the same namespaces, nodes and pods are checked in record after record. Only an exact
# str is cached (a str subclass could hash or compare in its own way).
@functools.lru_cache(maxsize=16384)
def _label(name: str) -> bool:
    return _LABEL.fullmatch(name) is not None


@functools.lru_cache(maxsize=16384)
def _subdomain(name: str) -> bool:
    return _SUBDOMAIN.fullmatch(name) is not None


def segment(name: str) -> str:
    """One URL path segment: quoted, so that no name can walk a path (defence in depth: every
    name is validated before it gets here)."""
    return quote(name, safe="")
