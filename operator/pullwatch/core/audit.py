"""Decoding API server audit entries (audit.k8s.io/v1 ``Event``) into :class:`Pull` observations.

The kubelet reports a pull by *creating* an Event; with a RequestResponse or Request audit policy
for ``events`` the audit log holds that Event as ``requestObject``, plus who sent it. So:

* only ``verb: create`` on ``resource: events`` of the core group or ``events.k8s.io`` can be a
  pull; entries for any other resource, verb or API group never fire, whatever they contain (a
  custom resource whose plural is ``events`` must not let its creators forge Findings);
* one request is logged at several stages (RequestReceived, ResponseComplete…) under one
  ``auditID``: :class:`AuditDeduper` makes it one pull;
* a create the server refused (status >= 400) created nothing and is skipped.

The actor (user, groups, source IPs, user agent) is attached to the Pull and ends up in the
Finding and its message.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from .pulls import Actor, DecodeError, Pull, decode_event, event_head

AUDIT_API_PREFIX = "audit.k8s.io/"
EVENT_GROUPS = (None, "", "events.k8s.io")  # the core group is logged without apiGroup


def is_audit_entry(obj: Mapping[str, Any]) -> bool:
    api = obj.get("apiVersion")
    return obj.get("kind") == "Event" and isinstance(api, str) and api.startswith(AUDIT_API_PREFIX)


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def actor_of(entry: Mapping[str, Any]) -> Actor:
    user = entry.get("user") if isinstance(entry.get("user"), Mapping) else {}
    # With impersonation the request acts as impersonatedUser; the authenticated user did it.
    username = user.get("username") if isinstance(user.get("username"), str) else None
    agent = entry.get("userAgent")
    return Actor(
        user=username,
        groups=_strings(user.get("groups")),
        source_ips=_strings(entry.get("sourceIPs")),
        user_agent=agent if isinstance(agent, str) else None,
    )


class AuditDeduper:
    """Remembers recent auditIDs so that the stages of one request count once.

    Bounded: a request's stages are logged within seconds of each other, so a window of the last
    ``capacity`` pull-creating requests is plenty while memory stays flat on any log size.
    """

    def __init__(self, capacity: int = 200_000):
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first_time(self, audit_id: str) -> bool:
        if audit_id in self._seen:
            return False
        self._seen[audit_id] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True


def _created_event(entry: Mapping[str, Any]) -> tuple[Any, str] | None:
    """(the created Event, its namespace) for a successful create of an Event, else None."""
    ref = entry.get("objectRef")
    if not isinstance(ref, dict) or ref.get("resource") != "events" or ref.get("subresource"):
        return None
    if ref.get("apiGroup") not in EVENT_GROUPS:
        return None
    if entry.get("verb") != "create":
        return None
    request = entry.get("requestObject")
    if request is None:
        # Metadata-level policy, or the RequestReceived stage of a Request-level one: no Event
        # body to read here (the ResponseComplete stage, if logged, carries it).
        return None
    status = entry.get("responseStatus")
    if (
        isinstance(status, Mapping)
        and isinstance(status.get("code"), int)
        and status["code"] >= 400
    ):
        return None
    namespace = ref.get("namespace")
    return request, namespace if isinstance(namespace, str) and namespace else "default"


def audit_head(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(namespace, image)`` when the entry records a kubelet image Event's creation."""
    created = _created_event(entry)
    return None if created is None else event_head(created[0], created[1])


def decode_audit_entry(entry: Mapping[str, Any], deduper: AuditDeduper) -> Pull | None:
    """A Pull for a kubelet Event create, ``None`` for anything else (and for repeated stages)."""
    created = _created_event(entry)
    if created is None:
        return None
    pull = decode_event(created[0], source="audit", actor=actor_of(entry), namespace=created[1])
    if pull is None:
        return None
    audit_id = entry.get("auditID")
    if not isinstance(audit_id, str) or not audit_id:
        raise DecodeError("audit entry without auditID")
    if not deduper.first_time(audit_id):
        return None
    # The series is the Event's namespace/name, as the Event watch names it (so that the two
    # witnesses count it once, and every stage of the request is the same series); only an
    # Event created by generateName is named by its response.
    series = pull.series if pull.series and "/" in pull.series else None
    response = entry.get("responseObject")
    if series is None and isinstance(response, Mapping):
        meta = response.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if isinstance(name, str) and name:
            series = f"{pull.namespace}/{name}"
    if series is None:
        # A create whose Event names no object: each request is its own series.
        series = f"audit:{audit_id}"
    when = entry.get("requestReceivedTimestamp")
    when = when if isinstance(when, str) else None
    return pull._replace(
        series=series, first_seen=pull.first_seen or when, last_seen=pull.last_seen or when
    )
