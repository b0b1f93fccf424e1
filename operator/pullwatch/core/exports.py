"""Managed clusters' audit exports, unwrapped into the ``audit.k8s.io/v1`` entries they carry.

Managed control planes do not hand out the API server's audit log; they export it in their
cloud's wrapper. Each wrapper below is recognized by its own fields and yields exactly the
entries the plain log would hold, so that ``pullwatch scan`` of an export finds what a scan of
the plain log finds:

* **AKS** diagnostic logs (categories ``kube-audit`` and ``kube-audit-admin``; others, such as
  ``kube-apiserver``, are the components' text logs). A record is ``{"category", "time",
  "resourceId", "operationName", "properties": {"log", "stream", "pod", "containerID"}}``;
  ``properties.log`` is the entry as a JSON string (with a trailing newline, and ``/`` escaped
  as ``\\/`` by some exporters) or, in some storage containers, as an object. Event Hubs deliver
  ``{"records": [record, …]}``; a storage account writes one record per line. AKS cuts
  ``properties.log`` at 16 KiB (Azure/AKS#4635): such a record is damage, and said so.
* **EKS** control plane logs in CloudWatch Logs (log streams ``kube-apiserver-audit-*``): as
  ``aws logs filter-log-events`` prints them, ``{"events": [{"logStreamName", "timestamp",
  "message", "ingestionTime", "eventId"}], "searchedLogStreams", "nextToken"}``, the entry being
  ``message``; and as a subscription filter delivers them (through Firehose to S3: gzip'd
  documents back to back), ``{"messageType": "DATA_MESSAGE", "owner", "logGroup", "logStream",
  "subscriptionFilters", "logEvents": [{"id", "timestamp", "message"}]}``. A
  ``CONTROL_MESSAGE`` is CloudWatch checking that the destination is reachable: no log in it.
* **GKE** Cloud Audit Logs: a ``LogEntry`` (as ``gcloud logging read --format=json`` prints
  it) whose ``protoPayload`` is an ``AuditLog`` of the service ``k8s.io``. It is mapped back
  onto the audit.k8s.io/v1 fields: ``methodName`` ``io.k8s.<group>.<version>.<resource>
  [.<subresource>].<verb>`` and ``resourceName`` ``<group>/<version>/namespaces/<ns>/<resource>
  /<name>[/<subresource>]`` give the verb and ``objectRef`` (group ``core`` is the core
  group); ``authenticationInfo.principalEmail`` the user (GKE logs no groups);
  ``requestMetadata.callerIp`` / ``callerSuppliedUserAgent`` the source IP and user agent;
  ``request`` / ``response`` the logged objects (without their ``@type``); ``status.code`` a
  gRPC code (0: success); ``operation.id`` (else ``insertId``) the auditID; ``timestamp`` the
  time; ``labels`` the annotations.

``unwrap(obj)`` yields ``(what, value)``: ``("audit", entry)``; ``("unread", None)`` for an entry
a byte pre-filter (``wanted``) showed cannot be an observation, counted but not parsed;
``("skip", reason)`` for a record of no use; ``("damage", reason)`` for one that cannot be read.

    >>> record = {"category": "kube-audit", "properties": {"log": '{"kind":"Event",'
    ...           '"apiVersion":"audit.k8s.io\\\\/v1","auditID":"a1","verb":"get"}\\n'}}
    >>> list(unwrap({"records": [record, {"category": "kube-scheduler"}]}))
    ... # doctest: +NORMALIZE_WHITESPACE
    [('audit', {'kind': 'Event', 'apiVersion': 'audit.k8s.io/v1', 'auditID': 'a1', 'verb': 'get'}),
     ('skip', 'AKS log of another category (not an audit log)')]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson

from .audit import is_audit_entry

AKS_AUDIT_CATEGORIES = ("kube-audit", "kube-audit-admin")
AUDIT_KINDS = frozenset({"audit", "export"})  # record_kind()s that hold audit entries
GKE_SERVICE = "k8s.io"
MAX_ENTRY = 16 << 20
# gRPC status codes (google.rpc.Code) as the HTTP codes the API server answered
_GRPC_HTTP = {
    1: 499,
    3: 400,
    4: 504,
    5: 404,
    6: 409,
    7: 403,
    8: 429,
    9: 400,
    10: 409,
    11: 400,
    12: 501,
    13: 500,
    14: 503,
    15: 500,
    16: 401,
}

Entries = Iterator[tuple[str, Any]]
Wanted = Callable[[str], bool] | None


def export_kind(obj: Any) -> str | None:
    """Which wrapper this object is, ``None`` when it is none of them.

    >>> export_kind({"messageType": "CONTROL_MESSAGE", "logEvents": []})
    'subscription'
    >>> export_kind({"kind": "Event"}) is None
    True
    """
    if not isinstance(obj, Mapping) or "kind" in obj:
        return None
    if isinstance(obj.get("records"), list):
        return "eventhub"
    if "category" in obj and ("properties" in obj or "operationName" in obj):
        return "aks"
    if "messageType" in obj and "logEvents" in obj:
        return "subscription"
    if isinstance(obj.get("events"), list) and (
        "searchedLogStreams" in obj or "nextToken" in obj or "NextToken" in obj
    ):
        return "cloudwatch"
    if isinstance(obj.get("message"), str) and ("logStreamName" in obj or "eventId" in obj):
        return "logevent"
    if isinstance(obj.get("protoPayload"), Mapping):
        return "gke"
    return None


def record_kind(obj: Any, depth: int = 0) -> str | None:
    """``audit`` (an audit entry), ``export`` (a cloud's export of them), ``pod`` or ``None``:
    what the first records of an input hold, for the readers to choose their byte pre-filters
    (a watch event and a List are looked into).

    >>> record_kind({"type": "ADDED", "object": {"kind": "Pod"}})
    'pod'
    >>> record_kind({"records": []}), record_kind({"kind": "Event", "reason": "Pulled"})
    ('export', None)
    """
    if depth > 4:  # as deep as the readers look for records (records.py)
        return None
    if not isinstance(obj, Mapping):
        if isinstance(obj, list):
            for item in obj[:8]:
                found = record_kind(item, depth + 1)
                if found:
                    return found
        return None
    if "object" in obj and "type" in obj:
        obj = obj["object"]
        if not isinstance(obj, Mapping):
            return None
    kind = obj.get("kind")
    if kind == "Pod":
        return "pod"
    if is_audit_entry(obj):
        return "audit"
    if export_kind(obj) is not None:
        return "export"
    if isinstance(kind, str) and kind.endswith("List") and isinstance(obj.get("items"), list):
        return "pod" if kind == "PodList" else record_kind(obj["items"], depth + 1)
    return None


def unwrap(obj: Any, wanted: Wanted = None) -> Entries:
    """The audit entries an export record carries (see the module docstring). ``wanted``: a
    test on an entry's JSON text, before it is parsed (``audit.wanted_text``)."""
    kind = export_kind(obj)
    if kind == "eventhub":
        for record in obj["records"]:
            yield from _aks(record, wanted)
    elif kind == "aks":
        yield from _aks(obj, wanted)
    elif kind == "subscription":
        yield from _subscription(obj, wanted)
    elif kind == "cloudwatch":
        for event in obj["events"]:
            yield from _log_event(event, wanted)
    elif kind == "logevent":
        yield from _log_event(obj, wanted)
    elif kind == "gke":
        yield _gke(obj)
    else:
        yield "skip", "not an audit export"


def _text_entry(text: str, wanted: Wanted, where: str) -> tuple[str, Any]:
    if len(text) > MAX_ENTRY:
        return "damage", f"{where} is longer than 16 MiB (not read)"
    if wanted is not None and not wanted(text):
        return "unread", None
    try:
        entry = orjson.loads(text)
    except orjson.JSONDecodeError:
        return "damage", f"{where} is not JSON (cut short?)"
    return _entry(entry, where)


def _entry(entry: Any, where: str) -> tuple[str, Any]:
    if isinstance(entry, dict) and is_audit_entry(entry):
        return "audit", entry
    return "skip", f"{where} is not an audit entry"


def _aks(record: Any, wanted: Wanted) -> Entries:
    if not isinstance(record, Mapping):
        yield "damage", "AKS record that is not an object"
        return
    if record.get("category") not in AKS_AUDIT_CATEGORIES:
        yield "skip", "AKS log of another category (not an audit log)"
        return
    properties = record.get("properties")
    log = properties.get("log") if isinstance(properties, Mapping) else None
    if isinstance(log, str):
        # AKS cuts properties.log at 16 KiB, leaving JSON that does not parse (Azure/AKS#4635)
        yield _text_entry(log, wanted, "AKS kube-audit record whose properties.log")
    elif isinstance(log, Mapping):
        yield _entry(dict(log), "AKS kube-audit record whose properties.log")
    else:
        yield "damage", "AKS kube-audit record without properties.log"


def _subscription(doc: Mapping[str, Any], wanted: Wanted) -> Entries:
    kind = doc.get("messageType")
    if kind == "CONTROL_MESSAGE":
        yield "skip", "CloudWatch Logs control message (no logs in it)"
        return
    events = doc.get("logEvents")
    if kind != "DATA_MESSAGE" or not isinstance(events, list):
        yield "damage", "CloudWatch Logs subscription message of an unknown kind"
        return
    stream = doc.get("logStream")
    for event in events:
        yield from _log_event(event, wanted, stream)


def _log_event(event: Any, wanted: Wanted, stream: Any = None) -> Entries:
    if not isinstance(event, Mapping) or not isinstance(event.get("message"), str):
        yield "damage", "CloudWatch log event without a message"
        return
    message = event["message"]
    stream = event.get("logStreamName", stream)
    if not message.lstrip().startswith("{"):
        # EKS writes each component's log to its own stream: only kube-apiserver-audit-* holds
        # the audit log, the others are klog text lines.
        if isinstance(stream, str) and stream.startswith("kube-apiserver-audit"):
            yield "damage", "CloudWatch audit log event that is not JSON"
        else:
            yield "skip", "CloudWatch log event that is not JSON (another log stream)"
        return
    yield _text_entry(message, wanted, "CloudWatch log event whose message")


# -- GKE --------------------------------------------------------------------------------------


def _gke(log_entry: Mapping[str, Any]) -> tuple[str, Any]:
    payload = log_entry["protoPayload"]
    method = payload.get("methodName")
    if payload.get("serviceName") != GKE_SERVICE and not (
        isinstance(method, str) and method.startswith("io.k8s.")
    ):
        return "skip", "Cloud Audit log entry of another service"
    try:
        return "audit", gke_entry(log_entry)
    except ValueError as exc:
        return "damage", f"GKE audit log entry whose {exc}"


def gke_entry(log_entry: Mapping[str, Any]) -> dict[str, Any]:
    """The audit.k8s.io/v1 entry a GKE ``LogEntry`` records; ``ValueError`` (naming the field)
    when it cannot be read.

    >>> entry = gke_entry({"protoPayload": {"serviceName": "k8s.io",
    ...     "methodName": "io.k8s.apps.v1.deployments.scale.patch",
    ...     "resourceName": "apps/v1/namespaces/shop/deployments/web/scale",
    ...     "authenticationInfo": {"principalEmail": "alice@example.com"},
    ...     "requestMetadata": {"callerIp": "10.0.9.9"}, "status": {"code": 0}},
    ...     "operation": {"id": "a1", "first": True, "last": True},
    ...     "timestamp": "2026-11-18T11:06:40Z"})
    >>> entry["verb"], entry["user"]["username"], entry["sourceIPs"]
    ('patch', 'alice@example.com', ['10.0.9.9'])
    >>> entry["objectRef"]  # doctest: +NORMALIZE_WHITESPACE
    {'resource': 'deployments', 'namespace': 'shop', 'name': 'web', 'apiGroup': 'apps',
     'apiVersion': 'v1', 'subresource': 'scale'}
    """
    payload = log_entry["protoPayload"]
    method, resource_name = payload.get("methodName"), payload.get("resourceName")
    if not isinstance(method, str) or method.count(".") < 4:
        raise ValueError("methodName cannot be read")
    if not isinstance(resource_name, str) or resource_name.count("/") < 2:
        raise ValueError("resourceName cannot be read")
    verb = method.rsplit(".", 1)[1]
    parts = resource_name.split("/")
    group, version, rest = parts[0], parts[1], parts[2:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    ref: dict[str, Any] = {"resource": rest[0]}
    if namespace is not None:
        ref["namespace"] = namespace
    if len(rest) > 1:
        ref["name"] = rest[1]
    if group != "core":
        ref["apiGroup"] = group
    ref["apiVersion"] = version
    if len(rest) > 2:
        ref["subresource"] = rest[2]
    operation = log_entry.get("operation")
    operation = operation if isinstance(operation, Mapping) else {}
    audit_id = operation.get("id") or log_entry.get("insertId")
    if not isinstance(audit_id, str) or not audit_id:
        raise ValueError("operation.id and insertId are missing")
    auth = payload.get("authenticationInfo")
    meta = payload.get("requestMetadata")
    meta = meta if isinstance(meta, Mapping) else {}
    request, response = _body(payload.get("request")), _body(payload.get("response"))
    when = log_entry.get("timestamp")
    entry: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse" if response else "Request" if request else "Metadata",
        "auditID": audit_id,
        "stage": "ResponseStarted" if operation.get("last") is False else "ResponseComplete",
        "requestURI": ("/api/" if group == "core" else "/apis/")
        + resource_name.removeprefix("core/"),
        "verb": verb,
        "user": {"username": auth.get("principalEmail")} if isinstance(auth, Mapping) else {},
        "sourceIPs": [meta["callerIp"]] if isinstance(meta.get("callerIp"), str) else [],
        "objectRef": ref,
        "responseStatus": {"code": _http_code(payload.get("status"), verb)},
        "requestReceivedTimestamp": when,
        "stageTimestamp": when,
    }
    if isinstance(meta.get("callerSuppliedUserAgent"), str):
        entry["userAgent"] = meta["callerSuppliedUserAgent"]
    if request is not None:
        entry["requestObject"] = request
    if response is not None:
        entry["responseObject"] = response
    if isinstance(log_entry.get("labels"), Mapping):
        entry["annotations"] = dict(log_entry["labels"])
    return entry


def _body(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if k != "@type"}
    return value


def _http_code(status: Any, verb: str) -> int:
    code = status.get("code", 0) if isinstance(status, Mapping) else 0
    if code.__class__ is not int or code == 0:
        return 201 if verb == "create" else 200
    return _GRPC_HTTP.get(code, 500)
