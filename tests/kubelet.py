"""Events exactly as a kubelet writes them (pkg/kubelet/images, client-go's event recorder).

Used by the unit tests, the golden data, the end-to-end tests (which play the kubelet against a
real API server that has none) and the benchmarks.
"""

from __future__ import annotations

import hashlib
from typing import Any

EPOCH = 1_795_000_000  # a fixed moment (2026-11-18), so data and golden files are reproducible


def stamp(offset_s: int = 0) -> str:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(EPOCH + offset_s, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _uid(*parts: Any) -> str:
    h = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


MESSAGES = {
    "Pulling": 'Pulling image "{image}"',
    "Pulled": 'Successfully pulled image "{image}" in 2.104s (2.104s including waiting). '
    "Image size: 31841502 bytes.",
    "Present": 'Container image "{image}" already present on machine',
}


def image_event(
    kind: str,
    namespace: str,
    pod: str,
    image: str,
    *,
    node: str = "worker-1",
    container: str | None = None,
    count: int = 1,
    seq: int = 0,
    t: int = 0,
    with_uid: bool = True,
) -> dict[str, Any]:
    """kind: Pulling, Pulled (successfully pulled) or Present (already present on machine)."""
    container = container or pod.split("-")[0]
    reason = "Pulling" if kind == "Pulling" else "Pulled"
    name = f"{pod}.{(EPOCH * 10**9 + seq * 7919 + hash_int(kind, namespace, pod, image)):x}"
    ev = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod,
            "namespace": namespace,
            "uid": _uid("pod", namespace, pod),
            "resourceVersion": "4211",
            "fieldPath": f"spec.containers{{{container}}}",
        },
        "reason": reason,
        "message": MESSAGES[kind].format(image=image),
        "source": {"component": "kubelet", "host": node},
        "firstTimestamp": stamp(t),
        "lastTimestamp": stamp(t + (count - 1) * 30),
        "count": count,
        "type": "Normal",
        "eventTime": None,
        "reportingComponent": "kubelet",
        "reportingInstance": node,
    }
    if with_uid:
        ev["metadata"]["uid"] = _uid("event", name, kind)
    return ev


def hash_int(*parts: Any) -> int:
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:6], 16)


def other_event(
    reason: str,
    namespace: str,
    pod: str,
    message: str,
    *,
    node: str = "worker-1",
    seq: int = 0,
    t: int = 0,
) -> dict[str, Any]:
    ev = image_event("Pulling", namespace, pod, "x", node=node, seq=seq, t=t)
    ev["reason"] = reason
    ev["message"] = message
    ev["metadata"]["name"] = f"{pod}.{(EPOCH * 10**9 + seq * 7919 + hash_int(reason, pod)):x}"
    ev["metadata"]["uid"] = _uid("event", ev["metadata"]["name"], reason)
    return ev


def with_count(ev: dict[str, Any], count: int) -> dict[str, Any]:
    """The same Event object after the recorder raised its count (a series)."""
    out = {**ev, "count": count}
    out["lastTimestamp"] = stamp(count * 30)
    return out


def as_events_v1(ev: dict[str, Any]) -> dict[str, Any]:
    """The same Event through the events.k8s.io/v1 API."""
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": ev["metadata"],
        "eventTime": None,
        "reason": ev["reason"],
        "note": ev["message"],
        "regarding": ev["involvedObject"],
        "reportingController": "kubelet",
        "reportingInstance": ev["source"]["host"],
        "deprecatedSource": ev["source"],
        "deprecatedFirstTimestamp": ev["firstTimestamp"],
        "deprecatedLastTimestamp": ev["lastTimestamp"],
        "deprecatedCount": ev["count"],
        "type": "Normal",
    }


def for_create(ev: dict[str, Any]) -> dict[str, Any]:
    """The body a kubelet POSTs (no uid or resourceVersion: the server assigns them)."""
    body = {k: v for k, v in ev.items() if v is not None}
    body["metadata"] = {k: v for k, v in ev["metadata"].items() if k in ("name", "namespace")}
    return body


def audit_entries(
    ev: dict[str, Any],
    audit_id: str,
    *,
    node: str = "worker-1",
    ip: str = "10.0.3.7",
    stages: tuple[str, ...] = ("RequestReceived", "ResponseComplete"),
    verb: str = "create",
    resource: str = "events",
    code: int = 201,
) -> list[dict[str, Any]]:
    """The audit.k8s.io/v1 entries a RequestResponse policy logs for the kubelet's create."""
    request = for_create(ev)
    response = {**ev, "metadata": {**ev["metadata"], "resourceVersion": "5120"}}
    first = ev.get("firstTimestamp") or ev.get("deprecatedFirstTimestamp")
    out = []
    for stage in stages:
        entry: dict[str, Any] = {
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "RequestResponse",
            "auditID": audit_id,
            "stage": stage,
            "requestURI": f"/api/v1/namespaces/{ev['metadata']['namespace']}/{resource}",
            "verb": verb,
            "user": {
                "username": f"system:node:{node}",
                "groups": ["system:nodes", "system:authenticated"],
            },
            "sourceIPs": [ip],
            "userAgent": "kubelet/v1.29.4 (linux/amd64) kubernetes/55019c8",
            "objectRef": {
                "resource": resource,
                "namespace": ev["metadata"]["namespace"],
                "name": ev["metadata"]["name"],
                "apiVersion": "v1",
            },
            "requestReceivedTimestamp": first.replace("Z", ".000000Z"),
            "stageTimestamp": first.replace("Z", ".004000Z"),
            "requestObject": request,
        }
        if stage == "ResponseComplete":
            entry["responseStatus"] = {"metadata": {}, "code": code}
            entry["responseObject"] = response
        out.append(entry)
    return out


# -- reading a real kubelet's Events (tests/e2e/test_realnode.py, tests/data/real-kubelet.json) ----
def reported(
    events: list[dict[str, Any]], pod: str, namespace: str | None = None
) -> dict[str, int]:
    """What a kubelet reported doing for one pod, summed over its Events' counts, in its own words
    (1.20's texts; a later kubelet adds a tail to some): attempts are its "Pulling image" and
    "already present" Events; the others say how attempts ended; ``errors`` are the
    "Error: ErrImagePull/ImagePullBackOff" that name no image."""
    out = dict.fromkeys(("pulling", "pulled", "present", "failed", "backoff", "errors"), 0)
    for e in events:
        involved = e["involvedObject"]
        if involved["name"] != pod or (namespace and involved.get("namespace") != namespace):
            continue
        reason, message, count = e["reason"], e["message"], e.get("count") or 1
        if reason == "Pulling" and message.startswith("Pulling image "):
            out["pulling"] += count
        elif reason == "Pulled" and message.startswith("Successfully pulled image "):
            out["pulled"] += count
        elif reason == "Pulled" and message.endswith(" already present on machine"):
            out["present"] += count
        elif reason == "Failed" and message.startswith("Failed to pull image "):
            out["failed"] += count
        elif reason == "BackOff" and message.startswith("Back-off pulling image "):
            out["backoff"] += count
        elif reason == "Failed" and message.startswith("Error: "):
            out["errors"] += count
    return out


def expected_outcomes(did: dict[str, int]) -> dict[str, Any]:
    """A Finding's status.outcomes (without lastError) for what :func:`reported` says happened."""
    ran = (
        "yes"
        if did["pulled"] or did["present"]
        else ("no" if did["failed"] or did["backoff"] else "unknown")
    )
    return {
        "succeeded": did["pulled"],
        "cached": did["present"],
        "failed": did["failed"],
        "backoff": did["backoff"],
        "ran": ran,
    }
