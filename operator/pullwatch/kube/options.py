"""``pullwatch run``'s options: its flags, and the engine's ``Options`` they make.

Kept apart from cli.py (which ``scan`` loads too) and from engine.py (the wiring): this module
imports nothing but the standard library and the pure core, so ``pullwatch scan`` never loads
kopf or aiohttp through it.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from ..core.rules import DEFAULT_SCANNER_IMAGES, validate_scanner_names

MIB = 1 << 20
SIZE_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


@dataclass
class AuditWebhook:
    """The audit webhook receiver's settings (``--audit-webhook-*``)."""

    address: str
    cert: str
    key: str
    client_ca: str | None = None
    token_file: str | None = None
    max_body: int = 16 * MIB
    queue_bytes: int = 64 * MIB


@dataclass
class Options:
    namespaces: list[str] = field(default_factory=list)  # Event namespaces; empty: all
    scanner_defaults: frozenset[str] = DEFAULT_SCANNER_IMAGES  # empty with --no-default-scanners
    scanner_extra: frozenset[str] = frozenset()  # --scanner
    operator_namespace: str = "pullwatch-system"  # its Suppressions may act cluster-wide
    flush_interval: float = 0.25
    status_interval: float = 2.0
    watch_timeout: int = 60
    read_timeout: float = 30.0
    max_findings: int = 5000
    max_findings_per_namespace: int = 250
    retention_seconds: float = 30 * 86400
    event_ttl_seconds: float = 3600
    read_workloads: bool = True
    drain_seconds: float = 20.0
    openreports: bool = False
    openreports_interval: float = 5.0
    openreports_max_results: int = 100
    maintenance_interval: float = 60.0
    census_interval: float = 15.0
    pull_event_grace: float = 60.0
    pod_witness: bool = True  # --no-pod-witness: no list/watch of pods
    audit_webhook: AuditWebhook | None = None  # off unless --audit-webhook-address


def size(text: str) -> int:
    """Bytes from ``16Mi``, ``512Ki``, ``1Gi`` or a plain number.

    >>> size("16Mi"), size("4096")
    (16777216, 4096)
    """
    unit = next((u for u in SIZE_UNITS if text.endswith(u)), None)
    try:
        value = int(text[: -len(unit)]) * SIZE_UNITS[unit] if unit else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 16Mi, 512Ki)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a size must be positive: {text!r}")
    return value


def duration(text: str) -> float:
    """Seconds from ``30d``, ``12h``, ``15m``, ``45s`` or a plain number of seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    try:
        value = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (use e.g. 30d, 12h, 15m, 45s)"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a duration must be positive: {text!r}")
    return value


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the operator (kopf) against the current cluster",
        description="Watch Events and AllowedImages; write Findings.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (its Events, Pods and Findings; repeatable); all "
        "namespaces when none is given",
    )
    p.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="watch all namespaces (as when no -n is given)",
    )
    p.add_argument(
        "--standalone",
        action="store_true",
        help="no peering: do not coordinate with other replicas",
    )
    p.add_argument(
        "--peering", default="pullwatch", metavar="NAME", help="peering object for leader election"
    )
    p.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority; the highest live replica is active (None: a random one)",
    )
    p.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        metavar="URL",
        help="liveness endpoint ('none' disables)",
    )
    p.add_argument(
        "--metrics-address",
        default="0.0.0.0:9090",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics ('none' disables)",
    )
    p.add_argument(
        "--scanner",
        action="append",
        default=[],
        metavar="NAME",
        help="another image name to treat as a scanner (ScannerImages objects add more)",
    )
    p.add_argument(
        "--no-default-scanners", action="store_true", help="leave out the built-in scanner names"
    )
    p.add_argument(
        "--operator-namespace",
        default=os.environ.get("POD_NAMESPACE", "pullwatch-system"),
        metavar="NS",
        help="the operator's own namespace: Suppressions there may cover the scanner rule and "
        "act cluster-wide ($POD_NAMESPACE if set)",
    )
    p.add_argument(
        "--watch-timeout",
        type=int,
        default=60,
        metavar="SECONDS",
        help="the longest the API server keeps a watch open before it is resumed (the Event "
        "and Finding watches also end within two thirds of --read-timeout)",
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a watch that delivers nothing for this long is dropped and resumed (half-open "
        "connections)",
    )
    p.add_argument(
        "--flush-interval",
        type=float,
        default=0.25,
        metavar="SECONDS",
        help="how soon a new Finding is written",
    )
    p.add_argument(
        "--status-interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long count updates of one Finding are coalesced into one write",
    )
    p.add_argument(
        "--max-findings",
        type=int,
        default=5000,
        metavar="N",
        help="Findings per rule in the whole cluster; past it, detections go to overflow Findings",
    )
    p.add_argument(
        "--max-findings-per-namespace",
        type=int,
        default=250,
        metavar="N",
        help="Findings per rule in one namespace; past it, detections go to its overflow Finding",
    )
    p.add_argument(
        "--retention",
        type=duration,
        default=duration("30d"),
        metavar="DURATION",
        help="Findings not seen for this long are deleted, unless labelled pullwatch.dev/keep=true "
        "(seconds, or 30d / 12h / 15m)",
    )
    p.add_argument(
        "--event-ttl",
        type=duration,
        default=duration("1h"),
        metavar="DURATION",
        help="the API server's --event-ttl: how long an Event can be delivered again after its "
        "last update",
    )
    p.add_argument(
        "--openreports",
        action="store_true",
        help="keep one openreports.io/v1alpha1 Report per namespace mirroring its Findings (for "
        "Policy Reporter; needs the Report CRD: manifests/components/openreports)",
    )
    p.add_argument(
        "--openreports-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long changes to one namespace's Report are coalesced",
    )
    p.add_argument(
        "--openreports-max-results",
        type=int,
        default=100,
        metavar="N",
        help="results per Report, the most severe and most recent first",
    )
    p.add_argument(
        "--no-workload-reads",
        action="store_true",
        help="infer workloads from pod names only (no get on pods, replicasets, jobs)",
    )
    p.add_argument(
        "--drain-seconds",
        type=duration,  # positive: a stop of 0 s would write nothing and call every task stuck
        default=20.0,
        metavar="SECONDS",
        help="at shutdown, how long to keep writing what was counted (keep it under the pod's "
        "termination grace period)",
    )
    p.add_argument(
        "--maintenance-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how often expired ledger entries are closed and Suppressions' expiry is applied; "
        "retention runs every tenth time",
    )
    p.add_argument(
        "--census-interval",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="how often the Findings gauges and the Suppressions' counts are brought up to date",
    )
    p.add_argument(
        "--pull-event-grace",
        type=duration,
        default=60.0,
        metavar="DURATION",
        help="how long a container seen running may wait for its pull Event before it is said to "
        "have run with none (the evasion signal)",
    )
    audit = p.add_argument_group(
        "audit webhook",
        "the API server's audit webhook as the third witness (who did it); off unless "
        "--audit-webhook-address is set: examples/audit/README.md",
    )
    audit.add_argument(
        "--audit-webhook-address",
        default=None,
        metavar="HOST:PORT",
        help="serve the audit webhook at https://HOST:PORT/audit (HTTPS only; /readyz answers "
        "200 on the active replica only)",
    )
    audit.add_argument("--audit-webhook-cert", metavar="FILE", help="serving certificate (PEM)")
    audit.add_argument("--audit-webhook-key", metavar="FILE", help="its private key (PEM)")
    audit.add_argument(
        "--audit-webhook-client-ca",
        metavar="FILE",
        help="accept POSTs with a client certificate signed by this CA",
    )
    audit.add_argument(
        "--audit-webhook-token-file",
        metavar="FILE",
        help="accept POSTs with this bearer token (what the webhook kubeconfig's user sends)",
    )
    audit.add_argument(
        "--audit-webhook-max-body",
        type=size,
        default=16 * MIB,
        metavar="BYTES",
        help="larger POSTs are refused (413) and counted (bytes, or 16Mi / 512Ki)",
    )
    audit.add_argument(
        "--audit-webhook-queue",
        type=size,
        default=64 * MIB,
        metavar="BYTES",
        help="bytes of POSTs waiting to be processed at most; past it a POST is dropped "
        "(answered 200, counted: a slow pullwatch must not hold the API server)",
    )
    p.add_argument("--no-pod-witness", action="store_true", help="never list or watch pods")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")


def run_options(args: argparse.Namespace) -> Options:
    """The engine's Options from ``pullwatch run``'s arguments; ValueError for a usage error."""
    extra = validate_scanner_names(list(args.scanner))
    return Options(
        namespaces=list(args.namespace),
        scanner_extra=extra,
        scanner_defaults=frozenset() if args.no_default_scanners else DEFAULT_SCANNER_IMAGES,
        operator_namespace=args.operator_namespace,
        flush_interval=args.flush_interval,
        status_interval=args.status_interval,
        watch_timeout=args.watch_timeout,
        read_timeout=args.read_timeout,
        max_findings=args.max_findings,
        max_findings_per_namespace=args.max_findings_per_namespace,
        retention_seconds=args.retention,
        event_ttl_seconds=args.event_ttl,
        read_workloads=not args.no_workload_reads,
        drain_seconds=args.drain_seconds,
        maintenance_interval=args.maintenance_interval,
        openreports=args.openreports,
        openreports_interval=args.openreports_interval,
        openreports_max_results=args.openreports_max_results,
        census_interval=args.census_interval,
        pull_event_grace=args.pull_event_grace,
        pod_witness=not args.no_pod_witness,
        audit_webhook=audit_webhook(args),
    )


def audit_webhook(args: argparse.Namespace) -> AuditWebhook | None:
    """The receiver's settings, or None when it is off. It never runs unauthenticated: a client
    CA or a token file (or both) is required, as are the serving certificate and key."""
    others = [
        flag
        for flag in ("cert", "key", "client_ca", "token_file")
        if getattr(args, f"audit_webhook_{flag}")
    ]
    if not args.audit_webhook_address:
        if others:
            raise ValueError("--audit-webhook-* flags given without --audit-webhook-address")
        return None
    host, _, port = args.audit_webhook_address.rpartition(":")
    if not (host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"--audit-webhook-address is not HOST:PORT: {args.audit_webhook_address}")
    if not (args.audit_webhook_cert and args.audit_webhook_key):
        raise ValueError("the audit webhook is HTTPS only: give --audit-webhook-cert and -key")
    if not (args.audit_webhook_client_ca or args.audit_webhook_token_file):
        raise ValueError(
            "the audit webhook needs client authentication: --audit-webhook-client-ca, "
            "--audit-webhook-token-file, or both"
        )
    return AuditWebhook(
        address=args.audit_webhook_address,
        cert=args.audit_webhook_cert,
        key=args.audit_webhook_key,
        client_ca=args.audit_webhook_client_ca,
        token_file=args.audit_webhook_token_file,
        max_body=args.audit_webhook_max_body,
        queue_bytes=args.audit_webhook_queue,
    )
