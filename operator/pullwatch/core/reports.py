"""OpenReports: the Findings of a namespace as one ``openreports.io/v1alpha1`` Report.

Policy Reporter (its UI and its sinks: Slack, Loki, Splunk, …) reads OpenReports Reports, so a
Report per namespace that mirrors its Findings puts pullwatch there unchanged. The fields follow
the upstream types (openreports/reports-api, ``apis/openreports.io/v1alpha1/report_types.go``):

* ``source: pullwatch``; per result ``policy`` (the rule's name), ``rule`` (its title),
  ``category`` (its ATT&CK mapping), ``severity`` (the rule's, in OpenReports' words),
  ``result: fail`` - or ``skip`` for a Finding a Suppression covers - ``scored: true``,
  ``timestamp`` as the ``{seconds, nanos}`` object the schema defines (the Finding's last pull);
* ``resources``: the workload (for a pod whose controller's kind could not be told apart, the
  most recent pod);
* ``message`` never changes for a Finding (no counts in it: Policy Reporter deduplicates on it),
  and ``properties.resultID`` is the Finding's name; the properties are strings, as the schema
  wants: risk score, count, ATT&CK technique, image, workload, whether it ran, …;
* at most ``MAX_RESULTS`` results, the most severe and then the most recent first.

    >>> from .findings import Identity, Origin
    >>> from .state import FindingState
    >>> state = FindingState(Identity("scanner", "ci", "hunter", "docker.io/aquasec/kube-hunter"),
    ...     Origin("aquasec/kube-hunter:0.6.8", "node-1", "Job", "read", "kubelet", "events"))
    >>> state.last_seen = "2026-11-18T10:00:00Z"
    >>> ledger = state.evidence().ledger
    >>> ledger.observe("ci/hunter.1", ("hunter-x7k2p", "hunter"), "pulling", 1, minute=0)
    1
    >>> result = report_for("ci", [state])["results"][0]
    >>> result["result"], result["severity"], result["timestamp"], result["resources"][0]["kind"]
    ('fail', 'high', {'seconds': 1794996000, 'nanos': 0}, 'Job')
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .findings import RULES_BY_SHORT, build_spec, cut, instant
from .state import FindingState, ran, seen_by

API_VERSION = "openreports.io/v1alpha1"
KIND = "Report"
NAME = "pullwatch"
SOURCE = "pullwatch"
MAX_RESULTS = 100
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
_SEVERITY = {
    "critical": "critical",
    "high": "high",
    "medium": "medium",
    "low": "low",
    "informational": "info",
}
_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
_GROUP_OF = {
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "ReplicaSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "Pod": "v1",
}


def workload_reference(state: FindingState) -> list[dict[str, str]]:
    """The ObjectReference a result points at: the workload."""
    if state.identity.is_overflow:
        return []
    ev = state.evidence()
    kind = ev.origin.workload_kind
    if kind in _GROUP_OF:
        return [
            {
                "apiVersion": _GROUP_OF[kind],
                "kind": kind,
                "name": state.identity.workload,
                "namespace": state.namespace,
            }
        ]
    pod = next(reversed(ev.pods), None)  # a kind that the pod's name could not tell: its pod
    return (
        [{"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": state.namespace}]
        if pod
        else []
    )


def result_of(state: FindingState) -> dict[str, Any]:
    rule = RULES_BY_SHORT[state.identity.rule]
    ev = state.evidence()
    spec = build_spec(state.identity, ev.origin)
    workload = f"{ev.origin.workload_kind}/{state.identity.workload}"
    if state.identity.is_overflow:
        message = (
            f"{rule.title}: detections past pullwatch's cap on Findings in namespace "
            f"{state.namespace}"
        )
    else:
        message = f"{rule.title}: {workload} pulled {state.identity.repository}"
    outcomes = ev.ledger.outcomes()
    properties = {
        "resultID": state.name,
        "finding": state.name,
        "riskScore": str(rule.risk_score),
        "count": str(state.count),
        "mitreTechnique": rule.mitre.technique_id,
        "mitreTactic": rule.mitre.tactic,
        "ran": ran(outcomes, ev.running_count),
        "pods": str(ev.pod_count),
        "nodes": str(ev.node_count),
        "witnesses": ",".join(seen_by(state.witnesses)),
    }
    if not state.identity.is_overflow:
        properties.update(
            image=cut(spec["image"], 512),
            repository=cut(state.identity.repository, 512),
            workload=cut(workload, 300),
            workloadSource=ev.origin.workload_source,
        )
    actor = ev.actors[-1] if ev.actors else ev.origin.actor
    if actor is not None and actor.user:
        properties["actor"] = cut(actor.user, 253)
        if actor.source_ips:
            properties["sourceIPs"] = cut(",".join(actor.source_ips), 300)
    if ev.origin.verified is False or ev.forged_by is not None:
        properties["forgedBy"] = cut(ev.forged_by or ev.origin.author or "unknown", 253)
    if ev.without_pull_event:
        properties["ranWithoutPullEvent"] = str(ev.without_pull_event)
    if state.suppression is not None:
        properties["suppressedBy"] = f"{state.suppression['namespace']}/{state.suppression['name']}"
        properties["suppressionReason"] = cut(state.suppression["reason"], 300)
    moment = instant(state.last_seen or state.first_seen or "")
    return {
        "source": SOURCE,
        "policy": rule.name,
        "rule": rule.title,
        "category": f"MITRE ATT&CK {rule.mitre.technique_id} {rule.mitre.technique}",
        "severity": _SEVERITY[rule.severity],
        "timestamp": {"seconds": int(moment.timestamp()) if moment else 0, "nanos": 0},
        "result": "skip" if state.suppression is not None else "fail",
        "scored": True,
        "resources": workload_reference(state),
        "message": cut(message, 1000),
        "properties": properties,
    }


def report_for(
    namespace: str, states: Iterable[FindingState], max_results: int = MAX_RESULTS
) -> dict[str, Any] | None:
    """The namespace's Report, or None when it has no Finding with pulls (the Report goes)."""
    results = [result_of(s) for s in states if s.has_evidence and s.namespace == namespace]
    if not results:
        return None
    results.sort(
        key=lambda r: (
            _RANK[r["severity"]],
            -r["timestamp"]["seconds"],
            r["properties"]["resultID"],
        )
    )
    results = results[:max_results]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": NAME, "namespace": namespace, "labels": {LABEL_MANAGED_BY: SOURCE}},
        "source": SOURCE,
        "scope": {"apiVersion": "v1", "kind": "Namespace", "name": namespace},
        "configuration": {"limits": {"maxResults": max_results}},
        "summary": {
            "pass": 0,
            "fail": sum(r["result"] == "fail" for r in results),
            "warn": 0,
            "error": 0,
            "skip": sum(r["result"] == "skip" for r in results),
        },
        "results": results,
    }
