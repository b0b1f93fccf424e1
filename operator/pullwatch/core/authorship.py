"""Who wrote a pull Event: the verdict of its series, decided by the Event's *create* alone.

A kubelet's pull Event is created by ``system:node:<node>`` naming that node in ``source.host``.
Anyone allowed to patch Events in a namespace can later rewrite ``source.host`` or write the
Event at all; were later writers believed, a tenant could make a real kubelet pull look forged
(or hide who did). So the series' author is the authenticated user of its create, judged
against the node named by that create's own logged Event - or, when the audit entry logged no
Event (``Metadata`` level), against the first node the Event watch saw. Later patches and
updates, whoever sends them, change neither (docs/threat-model.md).

    >>> from .pulls import Actor, decode_event
    >>> a = Authorship()
    >>> ev = {"reason": "Pulling", "message": 'Pulling image "x"', "source": {"host": "node-1"},
    ...       "metadata": {"name": "p.17f3a", "namespace": "ci"},
    ...       "involvedObject": {"kind": "Pod", "name": "p", "namespace": "ci"}}
    >>> pull = decode_event(ev)
    >>> a.judge(pull, "ci/p.17f3a", 1)[0] == UNKNOWN  # the watch first: the author is not known
    True
    >>> moved = decode_event({**ev, "source": {"host": "x"}})  # a tenant patched source.host
    >>> a.judge(moved, "ci/p.17f3a", 1)[0] == UNKNOWN
    True
    >>> kubelet = Actor("system:node:node-1", (), (), None)
    >>> a.created("ci/p.17f3a", 1, kubelet, None) == VERIFIED  # judged against the first node
    True
    >>> verdict, seen = a.judge(moved, "ci/p.17f3a", 1)
    >>> verdict == VERIFIED, seen.actor.user
    (True, 'system:node:node-1')
"""

from __future__ import annotations

from typing import Any

from .findings import verdict_of
from .ledger import FORGED, UNKNOWN, VERIFIED
from .pulls import Actor, Pull

# The series of an audit pull entry whose Event's name was not logged (created with
# ``generateName``; the kubelet never uses it): never counted, since the Event watch counts
# the same Event under its real name.
NAMELESS = "audit:"
MAX_REMEMBERED = 50_000
_NOT_SEEN = object()


class Authorship:
    """The creator of each pull Event series, and the first node the watch saw of each series
    counted before its creator was known. Bounded: an Event's author matters for minutes."""

    def __init__(self) -> None:
        self.creators: dict[str, tuple[Actor, str | None]] = {}  # series -> (creator, node)
        self.unjudged: dict[int, str | None] = {}  # series hash -> the first node it named

    def judge(self, pull: Pull, series: str, key: int) -> tuple[int, Pull]:
        """The verdict of one observation of a series, and the pull with its author."""
        if pull.actor is not None:  # the audit entry of its create, judged on its own
            return _verdict(pull), pull
        known = self.creators.get(series)
        if known is None:
            if pull.claimed_namespace is not None:
                return FORGED, pull
            if key not in self.unjudged:  # the first node seen; a later (patched) one is not
                remember(self.unjudged, key, pull.node)
            return UNKNOWN, pull
        actor, node = known
        return _verdict(pull._replace(actor=actor, node=node)), pull._replace(actor=actor)

    def created(self, series: str, key: int, actor: Actor, node: str | None) -> int | None:
        """The create of a series' Event by ``actor``, naming ``node`` (``None``: not logged).
        Returns the verdict to learn for a series already counted unjudged, else ``None``."""
        if series in self.creators:
            return None  # the first create stands (a name is created once)
        first = self.unjudged.pop(key, _NOT_SEEN)
        if node is None and first is not _NOT_SEEN:
            node = first  # type: ignore[assignment]
        remember(self.creators, series, (actor, node))
        if first is _NOT_SEEN:
            return None
        verified = node is not None and actor.user == f"system:node:{node}"
        return VERIFIED if verified else FORGED


def _verdict(pull: Pull) -> int:
    return {None: UNKNOWN, True: VERIFIED, False: FORGED}[verdict_of(pull)]


def remember(table: dict[Any, Any], key: Any, value: Any) -> None:
    """A bounded table: the oldest entry goes first (dicts keep insertion order)."""
    table.pop(key, None)
    table[key] = value
    if len(table) > MAX_REMEMBERED:
        del table[next(iter(table))]
