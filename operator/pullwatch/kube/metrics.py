"""Prometheus metrics, with ``prometheus_client``, on a port of their own (``--metrics-address``).

Names are ``pullwatch_*``, counters end in ``_total``, and label sets are bounded: rule, severity
and, where it says so, namespace - never a pod, a workload or an image (each would be a new
series per pod: an attacker could blow up the monitoring with them).

    pullwatch_pulls_detected_total{rule,severity}     pulls counted into Findings (suppressed too)
    pullwatch_pulls_suppressed_total{rule,severity}   of those, pulls a Suppression covers
    pullwatch_findings{rule,severity}                 Findings with pulls, suppressed ones left out
    pullwatch_findings_suppressed{rule,severity}      Findings a Suppression covers
    pullwatch_findings_folded_total{rule,namespace}   pulls counted into overflow Findings
    pullwatch_events_examined_total                   candidate Events decoded
    pullwatch_events_skipped_total{reason}            malformed image Events, by reason
    pullwatch_event_to_finding_seconds                from an Event's arrival to its Finding's write
    pullwatch_api_writes_total{verb,outcome}          writes of Findings, by verb and HTTP outcome
    pullwatch_allowlist_objects                       AllowedImages in force
    pullwatch_allowlist_refused_patterns              patterns refused (they allow nothing)
    pullwatch_active                                  1 on the replica that processes Events
    pullwatch_stream_relists_total{stream}            lists after 410 Gone (events, findings)
    pullwatch_stream_silences_total{stream}           watches dropped as silent (half-open)
    pullwatch_stream_oversize_total{stream}           watch lines over the line bound, skipped
    pullwatch_audit_requests_total{outcome}           audit webhook POSTs, by outcome
    pullwatch_audit_entries_total{kind}               audit entries received, by what they are
    pullwatch_audit_queue_bytes                       bytes waiting in the audit queue
    pullwatch_audit_event_creates_missing             1 while no Event creation arrives by audit
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

PULLS = Counter(
    "pullwatch_pulls_detected_total",
    "Pulls counted into Findings.",
    ["rule", "severity"],
    registry=REGISTRY,
)
SUPPRESSED_PULLS = Counter(
    "pullwatch_pulls_suppressed_total",
    "Pulls counted into Findings that a Suppression covers.",
    ["rule", "severity"],
    registry=REGISTRY,
)
FINDINGS = Gauge(
    "pullwatch_findings",
    "Findings with at least one pull, suppressed ones left out.",
    ["rule", "severity"],
    registry=REGISTRY,
)
SUPPRESSED_FINDINGS = Gauge(
    "pullwatch_findings_suppressed",
    "Findings a Suppression covers.",
    ["rule", "severity"],
    registry=REGISTRY,
)
FOLDED = Counter(
    "pullwatch_findings_folded_total",
    "Pulls counted into overflow Findings, past a cap.",
    ["rule", "namespace"],
    registry=REGISTRY,
)
SERIES_TRIMMED = Counter(
    "pullwatch_live_series_trimmed_total",
    "Findings whose oldest ledger slots were closed early: a namespace, or all, held more live "
    "Event series than the memory budget allows (a flood of distinct Event names).",
    registry=REGISTRY,
)
EXAMINED = Counter(
    "pullwatch_events_examined_total", "Candidate Events decoded.", registry=REGISTRY
)
SKIPPED = Counter(
    "pullwatch_events_skipped_total",
    "Malformed image Events skipped, by reason.",
    ["reason"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "pullwatch_event_to_finding_seconds",
    "Seconds from an Event's arrival to the write of its Finding.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
WRITES = Counter(
    "pullwatch_api_writes_total",
    "Writes of Findings, by verb and outcome.",
    ["verb", "outcome"],
    registry=REGISTRY,
)
ALLOWLIST_OBJECTS = Gauge(
    "pullwatch_allowlist_objects", "AllowedImages objects in force.", registry=REGISTRY
)
REFUSED_PATTERNS = Gauge(
    "pullwatch_allowlist_refused_patterns",
    "Allowlist patterns refused (they allow nothing).",
    registry=REGISTRY,
)
ACTIVE = Gauge(
    "pullwatch_active", "1 on the replica that processes Events, 0 on a standby.", registry=REGISTRY
)
CONTAINERS_RUNNING = Counter(
    "pullwatch_containers_running_total",
    "Containers first seen running an image a rule fired on (the Pod witness).",
    ["rule", "severity"],
    registry=REGISTRY,
)
RAN_WITHOUT_PULL_EVENT = Counter(
    "pullwatch_ran_without_pull_event_total",
    "Containers that ran an image a rule fired on with no pull Event for them.",
    ["rule", "severity"],
    registry=REGISTRY,
)
FORGED_PULLS = Counter(
    "pullwatch_forged_pulls_total",
    "Pull Events not written by the kubelet of their node (author) or naming another "
    "namespace than their own (namespace).",
    ["reason"],
    registry=REGISTRY,
)
SUPPRESSION_CHANGES = Counter(
    "pullwatch_suppression_changes_total",
    "Suppression versions (uid and generation) pullwatch's status did not record yet: created, "
    "or changed - while it ran, or while no operator ran (cluster: in its own namespace).",
    ["scope", "change"],
    registry=REGISTRY,
)
SUPPRESSIONS = Gauge(
    "pullwatch_suppressions",
    "Suppression objects, by scope and state.",
    ["scope", "state"],
    registry=REGISTRY,
)
SUPPRESSIONS_OVER_BUDGET = Gauge(
    "pullwatch_suppressions_over_budget",
    "Suppressions not compiled because they are over a budget (the namespace's or the "
    "cluster's), covering nothing.",
    ["budget"],
    registry=REGISTRY,
)
SCANNER_DEFAULTS_REPLACED = Gauge(
    "pullwatch_scanner_defaults_replaced",
    "1 while a ScannerImages object replaces the built-in scanner names.",
    registry=REGISTRY,
)
PODS_EXAMINED = Counter(
    "pullwatch_pods_examined_total",
    "Pods decoded by the Pod witness (new, or what their containers run changed).",
    registry=REGISTRY,
)
PODS_SKIPPED = Counter(
    "pullwatch_pods_skipped_total",
    "Malformed pods the Pod witness skipped, by reason.",
    ["reason"],
    registry=REGISTRY,
)
PODS_REMEMBERED = Gauge(
    "pullwatch_pods_remembered",
    "Pods the Pod witness remembers (a fingerprint each, no copy of the pod).",
    registry=REGISTRY,
)
RELISTS = Counter(
    "pullwatch_stream_relists_total", "Lists after 410 Gone.", ["stream"], registry=REGISTRY
)
SILENCES = Counter(
    "pullwatch_stream_silences_total",
    "Watches dropped as silent (half-open connections).",
    ["stream"],
    registry=REGISTRY,
)

OVERSIZE = Counter(
    "pullwatch_stream_oversize_total",
    "Watch lines over the line bound (4 MiB), and listed objects over the page bound (8 MiB) "
    "alone, skipped; the stream or list moves past them.",
    ["stream"],
    registry=REGISTRY,
)


AUDIT_REQUESTS = Counter(
    "pullwatch_audit_requests_total",
    "Audit webhook POSTs, by outcome (ok, unauthenticated, too_large, bad, dropped, standby).",
    ["outcome"],
    registry=REGISTRY,
)
AUDIT_ENTRIES = Counter(
    "pullwatch_audit_entries_total",
    "Audit entries received, by what they are (events, pods, workloads, other, malformed).",
    ["kind"],
    registry=REGISTRY,
)
AUDIT_QUEUE_BYTES = Gauge(
    "pullwatch_audit_queue_bytes",
    "Bytes of audit webhook POSTs waiting to be processed.",
    registry=REGISTRY,
)
AUDIT_EVENT_CREATES_MISSING = Gauge(
    "pullwatch_audit_event_creates_missing",
    "1 while audit entries arrive without any Event creation among them (the policy drops events).",
    registry=REGISTRY,
)
AUDIT_OUTCOMES = ("ok", "unauthenticated", "too_large", "bad", "dropped", "standby")
AUDIT_KINDS = ("events", "pods", "workloads", "other", "malformed")


def _zero_series() -> None:
    """Every labelled counter an alert reads exists at 0 from the start: Prometheus'
    ``increase()`` sees a series only from its second sample, so one born at the first pull
    would never page for that pull."""
    from ..core.rules import RULES

    for rule in RULES:
        for counter in (PULLS, SUPPRESSED_PULLS, CONTAINERS_RUNNING, RAN_WITHOUT_PULL_EVENT):
            counter.labels(rule.name, rule.severity)
    for reason in ("namespace", "author", "generated-name"):
        FORGED_PULLS.labels(reason)
    for scope in ("cluster", "namespace"):
        for change in ("created", "changed"):
            SUPPRESSION_CHANGES.labels(scope, change)
        SUPPRESSIONS_OVER_BUDGET.labels(scope)
    for outcome in AUDIT_OUTCOMES:
        AUDIT_REQUESTS.labels(outcome)
    for kind in AUDIT_KINDS:
        AUDIT_ENTRIES.labels(kind)


_zero_series()


def serve(address: str) -> None:
    """Serve /metrics on ``host:port`` (a thread of prometheus_client's, not the event loop)."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0", registry=REGISTRY)
