"""Decoding kubelet image Events (core/v1 and events.k8s.io/v1) into :class:`Pull` observations.

What counts as a pull, and why:

* reason ``Pulling`` + "Pulling image \\"X\\"": the kubelet starts a pull;
* reason ``Pulled`` + "Successfully pulled image \\"X\\" …": the pull that a Pulling started
  completed (the detector counts the two as one pull);
* reason ``Pulled`` + "Container image \\"X\\" already present on machine": no download, but the
  image runs all the same (a cached scanner is still a scanner run);
* reason ``Failed`` + "Failed to pull image \\"X\\": <error>": an attempt that failed - still an
  attempt, and an attempt to pull a scanner is itself the signal; its error is classified;
* reason ``BackOff`` + "Back-off pulling image \\"X\\"": the kubelet waits before trying again
  (an outcome, not an attempt).

The reason is matched exactly (it is a kubelet constant); the wording case-insensitively (old
kubelets wrote "pulling image"), also behind the event aggregator's "(combined from similar
events): " prefix. Any other reason never counts, whatever its message mentions; nor do
``Failed``/``BackOff`` Events about something else ("Error: ErrImagePull", "Back-off restarting
failed container"). An Event that is not an image event returns ``None``; an image event that
cannot be used raises :class:`DecodeError` with a short, countable reason.

    >>> pull = decode_event({"apiVersion": "v1", "kind": "Event", "reason": "Pulling",
    ...     "message": 'Pulling image "aquasec/kube-hunter:0.6.8"', "count": 2,
    ...     "metadata": {"name": "hunter.1", "namespace": "default", "uid": "u1"},
    ...     "involvedObject": {"kind": "Pod", "name": "hunter", "namespace": "default",
    ...                        "fieldPath": "spec.containers{hunter}"},
    ...     "source": {"host": "node-1"}})
    >>> pull.image, pull.kind, pull.count, pull.involved.container, pull.node, pull.series
    ('aquasec/kube-hunter:0.6.8', 'pulling', 2, 'hunter', 'node-1', 'default/hunter.1')

An Event counts in its own namespace, whatever namespace it names:

    >>> forged = decode_event({"reason": "Pulling", "message": 'Pulling image "kube-hunter"',
    ...     "metadata": {"name": "x", "namespace": "attacker"},
    ...     "involvedObject": {"kind": "Pod", "name": "payments-api-1", "namespace": "prod"}})
    >>> forged.namespace, forged.claimed_namespace
    ('attacker', 'prod')
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple

from .names import MAX_LABEL, is_label, is_subdomain

PULLING, PULLED, PRESENT, FAILED, BACKOFF = "pulling", "pulled", "present", "failed", "backoff"
# Reasons are the kubelet's constants (events.PullingImage, PulledImage, FailedToPullImage's
# "Failed", BackOffPullImage's "BackOff"), matched exactly; only the free-text wording varies
# between kubelet versions and is matched case-insensitively.
IMAGE_REASONS = {"Pulling": "pulling", "Pulled": "pulled", "Failed": "failed", "BackOff": "backoff"}
# Which reasons must be image events (a Pulling without an image is damage); Failed and BackOff
# are also written for containers, so for them another wording is simply not ours.
_MUST_MATCH = {"Pulling", "Pulled"}
# Every image event's message quotes the image after the word "image" (the kubelet's %q), so its
# JSON holds these bytes: a record without them cannot be a pull, and readers skip it unparsed
# (scan and the operator's stream alike).
CANDIDATE = b'image \\"'

# Bounded quantifiers and an anchor: linear on 100 kB messages. An image reference is <= 1024
# characters (imageref.MAX_REFERENCE_LENGTH); a longer quoted string is not an image.
_COMBINED = r"(?:\(combined from similar events\):\s*)?"
_QUOTED = r'"([^"]{0,1100})"'
_WORDINGS = (
    (re.compile(_COMBINED + r"pulling image " + _QUOTED, re.I), PULLING, "pulling"),
    (re.compile(_COMBINED + r"successfully pulled image " + _QUOTED, re.I), PULLED, "pulled"),
    (
        re.compile(
            _COMBINED + r"container image " + _QUOTED + r" already present on machine", re.I
        ),
        PRESENT,
        "pulled",
    ),
    (
        re.compile(_COMBINED + r"failed to pull image " + _QUOTED + r"(?::\s*)?", re.I),
        FAILED,
        "failed",
    ),
    (re.compile(_COMBINED + r"back-off pulling image " + _QUOTED, re.I), BACKOFF, "backoff"),
)
# What a failed pull's error says, in the words registries and runtimes use (checked in order:
# Docker Hub answers "pull access denied … does not exist" for a missing repository, so "not
# found" is looked for first).
ERROR_CLASSES = (
    (
        "not found",
        re.compile(r"not found|manifest unknown|does not exist|NotFound|no such manifest", re.I),
    ),
    # Before "unauthorized": a certificate the node does not trust is a TLS failure, not a
    # refused credential ("x509: certificate signed by unknown authority", "… is not valid for").
    ("tls", re.compile(r"x509:|certificate|tls: |handshake failure", re.I)),
    (
        "unauthorized",
        re.compile(
            r"unauthorized|authentication required|access denied|denied|forbidden|"
            r"\b40[13]\b|insufficient_scope",
            re.I,
        ),
    ),
    (
        "unreachable",
        re.compile(
            r"connection refused|no such host|i/o timeout|dial tcp|handshake timeout|"
            r"network is unreachable|deadline exceeded|connection reset|no route to host|"
            r"server misbehaving|EOF",
            re.I,
        ),
    ),
)


def error_class(message: str) -> str:
    """``not found``, ``tls``, ``unauthorized``, ``unreachable`` or ``other``.

    >>> error_class('rpc error: code = NotFound desc = failed to resolve reference "x": not found')
    'not found'
    >>> error_class('Head "http://127.0.0.1:5999/v2/x": dial tcp: connect: connection refused')
    'unreachable'
    >>> error_class('Get "https://r.example/v2/": x509: certificate is not valid for any names')
    'tls'
    """
    head = message[:2000]
    for name, regex in ERROR_CLASSES:
        if regex.search(head):
            return name
    return "other"


MAX_NAME = 253


class DecodeError(ValueError):
    """An image event that cannot be used; ``str()`` is a short reason for the skip counters."""


# NamedTuples, not frozen dataclasses: just as immutable, and built at C speed. One Pull is made
# per image event on the scan's hot path (see bench/scan_throughput.py).
class InvolvedObject(NamedTuple):
    kind: str
    name: str
    namespace: str
    uid: str | None
    container: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
            "container": self.container,
        }


class Actor(NamedTuple):
    """Who made the API request (audit logs only)."""

    user: str | None
    groups: tuple[str, ...]
    source_ips: tuple[str, ...]
    user_agent: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "groups": list(self.groups),
            "sourceIPs": list(self.source_ips),
            "userAgent": self.user_agent,
        }


class Pull(NamedTuple):
    """One observation of an image Event series: ``count`` is the series' cumulative count."""

    kind: str  # PULLING, PULLED or PRESENT
    image: str  # exactly as the kubelet wrote it
    reason: str  # the Event's reason, as written
    involved: InvolvedObject  # as the Event *claims* it, its namespace included
    node: str | None
    series: str | None  # the Event object: "<namespace>/<name>" (its uid when it has no name)
    count: int
    first_seen: str | None
    last_seen: str | None
    source: str = "events"
    # Who wrote the Event (audit entries only): a kubelet's pulls are written by
    # system:node:<node>; anyone else's are forged.
    actor: Actor | None = None
    # Who the Event says reported it: its source.component / reportingController (the kubelet,
    # unless forged). Not the managedFields manager: kubectl hides managedFields in its dumps, so
    # scan and the operator would disagree, and it is only the user agent.
    component: str | None = None
    error: str | None = None  # a failed pull: the error, as the kubelet wrote it (cut)
    # Where the pull counts: the Event's own metadata.namespace, which RBAC guarantees (the
    # involvedObject's namespace is only a claim: core/v1 checks it only for old-style Events).
    namespace: str = ""
    uid: str | None = None  # the Event's uid (ledgers of pullwatch 0.1 keyed series by it)

    @property
    def claimed_namespace(self) -> str | None:
        """The namespace the Event names when it is not its own: a forgery (or a broken
        client), never where the pull counts."""
        claim = self.involved.namespace
        return claim if claim != self.namespace else None


def _str(value: Any) -> str | None:
    return value if value.__class__ is str and value else None


def _count(value: Any) -> int | None:
    if value.__class__ is not int or value < 0:  # bool is excluded: its class is bool, not int
        return None
    return value


def container_of(field_path: str) -> str | None:
    """The container a fieldPath names: ``spec.containers{app}`` -> ``app``.

    String operations, not a regular expression and a cache: every pod names its own
    containers, so a cache of fieldPaths misses on a day's stream, and this is on the path of
    every image Event, most of which no rule fires on.

    >>> container_of("spec.initContainers{setup}"), container_of("spec.volumes")
    ('setup', None)
    >>> container_of("spec.containers{a}b}"), container_of("spec.containers{}")
    (None, None)
    >>> container_of("spec.containers{app}\\n")  # no container the kubelet names
    """
    brace = field_path.find("{")
    if brace == -1 or field_path[-1] != "}" or field_path[:brace] not in _CONTAINER_FIELDS:
        return None
    name = field_path[brace + 1 : -1]
    if not 0 < len(name) <= MAX_NAME or "}" in name:
        return None
    return name


_CONTAINER_FIELDS = frozenset(
    ("spec.containers", "spec.initContainers", "spec.ephemeralContainers")
)


INVALID_NAMESPACE = "image event in an invalid namespace"


def parse_message(reason: Any, message: Any) -> tuple[str, str] | None:
    """(kind, image) for an image event's wording, ``None`` when it is not an image pull event.

    Raises :class:`DecodeError` for an image reason whose message cannot be read.
    """
    if (
        reason.__class__ is str
        and message.__class__ is str
        and len(message) <= 512
        and len(reason) <= 64  # the image reasons are short: no cache keeps a long one
    ):
        # A stream repeats a few wordings of a few images: each is matched once.
        return _parse_cached(reason, message)
    return _parse_message(reason, message)


@functools.lru_cache(maxsize=8192)
def _parse_cached(reason: str, message: str) -> tuple[str, str] | None:
    return _parse_message(reason, message)


def _parse_message(reason: Any, message: Any) -> tuple[str, str] | None:
    if not isinstance(reason, str):
        return None
    wanted = IMAGE_REASONS.get(reason)
    if wanted is None:
        return None
    if not isinstance(message, str):
        if reason not in _MUST_MATCH:
            return None
        raise DecodeError("image event without a message")
    for regex, kind, for_reason in _WORDINGS:
        if for_reason != wanted:
            continue
        m = regex.match(message)
        if m:
            image = m.group(1)
            if not image:
                raise DecodeError("image event with an empty image")
            return kind, image
    if reason not in _MUST_MATCH:
        return None  # a Failed or BackOff about something else than pulling an image
    raise DecodeError("image event with no quoted image in its message")


def event_parts(obj: Any) -> Head | None:
    """The cheap first look at an Event: enough (its namespace and image) to ask which rules fire,
    so that the many pulls no rule fires on never pay for a full :func:`decode_event`, which goes
    on from it. ``None`` for an Event that is no image pull; raises :class:`DecodeError` like
    :func:`decode_event` does.

    >>> parts = event_parts({"reason": "Pulling", "message": 'Pulling image "nginx"',
    ...                      "metadata": {"namespace": "web"}, "involvedObject": {"name": "p"}})
    >>> parts[4], parts[2]
    ('web', 'nginx')
    """
    return _head(obj, "default")


def _head(obj: Any, default_namespace: str) -> Head | None:
    if not isinstance(obj, dict):
        raise DecodeError("Event is not an object")
    api = obj.get("apiVersion")
    if api is None:
        # An item of a raw events.k8s.io List names no apiVersion: tell the API by the fields.
        new_api = "regarding" in obj or ("note" in obj and "involvedObject" not in obj)
    else:
        new_api = api.__class__ is str and api.startswith("events.k8s.io/")
    parsed = parse_message(obj.get("reason"), message_of(obj, new_api))
    if parsed is None:
        return None
    involved = obj.get("regarding") if new_api else obj.get("involvedObject")
    if not isinstance(involved, dict):
        raise DecodeError("image event without involvedObject")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    namespace = _str(metadata.get("namespace")) or _str(involved.get("namespace"))
    return new_api, parsed[0], parsed[1], involved, namespace or default_namespace, metadata


# What _head found: (events.k8s.io?, kind, image, involved object, namespace, metadata)
Head = tuple[bool, str, str, dict[str, Any], str, dict[str, Any]]


def decode_event(
    obj: Any,
    *,
    source: str = "events",
    actor: Actor | None = None,
    default_namespace: str = "default",
    namespace: str | None = None,
    head: Head | None = None,
) -> Pull | None:
    """Decode one core/v1 or events.k8s.io/v1 Event. ``None``: not an image pull event.

    ``namespace``: where the Event is, when the caller knows it better than the object (an
    audit entry's ``objectRef.namespace``, which is the request's URL); else the Event's own
    ``metadata.namespace``, and only for a hand-made file without one, what it names.
    ``head``: what :func:`event_parts` said of this very object (scan looks before it decodes)."""
    if head is None:
        head = _head(obj, default_namespace)
        if head is None:
            return None
    new_api, kind, image, involved, found, metadata = head
    namespace = namespace or found
    if not is_label(namespace):
        raise DecodeError(INVALID_NAMESPACE)
    inv_name = _str(involved.get("name"))
    if inv_name is None:
        raise DecodeError("image event without involvedObject.name")
    if not is_subdomain(inv_name):
        raise DecodeError("image event whose involvedObject.name is not a valid name")
    claimed = _str(involved.get("namespace")) or namespace
    field_path = _str(involved.get("fieldPath"))
    container = container_of(field_path) if field_path else None
    if container is not None and not is_label(container):
        container = None  # not a container the kubelet could have written: no slot of its own

    if new_api:
        src = obj.get("deprecatedSource")
        count_field = obj.get("deprecatedCount")
        first = _str(obj.get("deprecatedFirstTimestamp")) or _str(obj.get("eventTime"))
        last = _str(obj.get("deprecatedLastTimestamp"))
    else:
        src = obj.get("source")
        count_field = obj.get("count")
        first = _str(obj.get("firstTimestamp")) or _str(obj.get("eventTime"))
        last = _str(obj.get("lastTimestamp"))
    node = (_str(src.get("host")) if isinstance(src, dict) else None) or _str(
        obj.get("reportingInstance")
    )
    if node is not None and not is_subdomain(node):
        node = None  # shown as unknown rather than as whatever the writer put there
    component = (
        (_str(src.get("component")) if isinstance(src, dict) else None)
        or _str(obj.get("reportingController"))
        or _str(obj.get("reportingComponent"))
    )
    series_obj = obj.get("series")
    if not isinstance(series_obj, dict):
        series_obj = {}
    count = max(_count(count_field) or 0, _count(series_obj.get("count")) or 0) or 1
    last = _str(series_obj.get("lastObservedTime")) or last or first
    first = first or last

    uid = _str(metadata.get("uid"))
    ev_name = _str(metadata.get("name"))
    # By name, not uid: an audit entry of the create names the Event but (below RequestResponse
    # level) carries no uid, and the two witnesses must count the same series once.
    series = f"{namespace}/{ev_name}" if ev_name else uid

    error = None
    if kind == FAILED:
        m = _FAILED_ERROR.search(message_of(obj, new_api) or "")
        error = m.group(1)[:500] if m else ""
    return Pull(
        kind,
        image,
        obj["reason"],
        InvolvedObject(
            _str(involved.get("kind")) or "Pod",
            inv_name,
            claimed[:MAX_LABEL],
            _str(involved.get("uid")),
            container,
        ),
        node,
        series,
        count,
        first,
        last,
        source,
        actor,
        _short(component),
        error,
        namespace,
        uid,
    )


def slot_of(involved: dict[str, Any]) -> tuple[str, str] | None:
    """(pod, container) an image Event's involved object names, cheaply (no validation: a key,
    never shown)."""
    name, field_path = involved.get("name"), involved.get("fieldPath")
    if not isinstance(name, str):
        return None
    container = container_of(field_path) if isinstance(field_path, str) else None
    return name, container or ""


_FAILED_ERROR = re.compile(r'image "[^"]{0,1100}":\s*(.*)', re.S)


def message_of(obj: dict[str, Any], new_api: bool) -> Any:
    message = obj.get("note") if new_api else obj.get("message")
    return obj.get("message") if new_api and message is None else message


def _short(value: str | None) -> str | None:
    return value[:MAX_NAME] if value else None
