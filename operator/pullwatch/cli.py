"""``pullwatch`` command line: ``scan`` (offline detection) and ``run`` (the operator).

Exit codes of ``pullwatch scan``:
  0  scanned (findings or not, unless --fail-on-findings)
  1  --fail-on-findings was given and there is at least one Finding
  2  usage error, or an input or AllowedImages file could not be read
"""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Sequence

from . import __version__

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _scan_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scan", help="detect scanner and unapproved image pulls in event dumps and audit logs",
        description="Run pullwatch's detection offline. Inputs: kubectl get events -o json/yaml, "
                    "watch streams (JSON lines), events.k8s.io/v1 Events, audit.k8s.io/v1 logs; "
                    "gzip accepted; '-' reads stdin. Findings go to stdout, a summary to stderr.",
        epilog="exit codes: 0 scanned; 1 findings and --fail-on-findings; 2 usage or input error",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-a", "--allowed-images", action="append", default=[], metavar="FILE",
                   help="AllowedImages YAML/JSON (repeatable). Without any, no image is allowed.")
    p.add_argument("-o", "--output", choices=("table", "json", "yaml", "jsonl"), default="table")
    p.add_argument("--scanner", action="append", default=[], metavar="NAME",
                   help="another image name (last path component) to treat as a scanner")
    p.add_argument("--no-default-scanners", action="store_true",
                   help="use only the --scanner names, not the built-in list")
    p.add_argument("--fail-on-findings", action="store_true", help="exit 1 when there is any Finding")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")


def _run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the operator (kopf) against the current cluster",
                       description="Watch Events and AllowedImages; write Findings.")
    p.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                   help="watch Events only in this namespace (repeatable). Default: all namespaces.")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces (default)")
    p.add_argument("--standalone", action="store_true", help="no peering: do not coordinate with other replicas")
    p.add_argument("--peering", default="pullwatch", metavar="NAME",
                   help="peering object for leader election (default: %(default)s)")
    p.add_argument("--priority", type=int, default=None,
                   help="peering priority; the highest live replica is active (default: random)")
    p.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", metavar="URL",
                   help="liveness endpoint (default: %(default)s; 'none' disables)")
    p.add_argument("--scanner", action="append", default=[], metavar="NAME")
    p.add_argument("--no-default-scanners", action="store_true")
    p.add_argument("--watch-timeout", type=int, default=300, metavar="SECONDS",
                   help="how long the API server keeps a watch open before it is renewed (default: %(default)s)")
    p.add_argument("--flush-interval", type=float, default=0.25, metavar="SECONDS",
                   help="how soon a new Finding is written (default: %(default)s)")
    p.add_argument("--status-interval", type=float, default=2.0, metavar="SECONDS",
                   help="how long count updates of one Finding are coalesced into one write (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")


def _scanners(args: argparse.Namespace) -> frozenset[str]:
    from .core.rules import DEFAULT_SCANNER_IMAGES, validate_scanner_names
    names = validate_scanner_names(list(args.scanner))
    return names if args.no_default_scanners else DEFAULT_SCANNER_IMAGES | names


def cmd_scan(args: argparse.Namespace) -> int:
    from .core.allowlist import Allowlist
    from .scan.records import InputError
    from .scan.render import FORMATS, safe, summary
    from .scan.pipeline import load_policies, scan_paths

    try:
        scanners = _scanners(args)
        policies = load_policies(args.allowed_images)
    except (InputError, ValueError) as exc:
        print(f"pullwatch: {safe(exc)}", file=sys.stderr)
        return EXIT_ERROR
    for policy in policies:
        for problem in policy.problems:
            status = "ignored" if not policy.usable else "pattern ignored"
            print(f"pullwatch: AllowedImages {safe(policy.name)}: {status}: {safe(problem)}", file=sys.stderr)
    # The scan builds no reference cycles (parsed JSON and our own records), so reference
    # counting frees everything; the cyclic collector would only re-walk the growing Finding
    # state over and over (a third of the scan time in bench/scan_throughput.py).
    gc.disable()
    try:
        result = scan_paths(args.files, Allowlist(policies), scanners)
    except InputError as exc:
        print(f"pullwatch: {safe(exc)}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        gc.enable()
    FORMATS[args.output](result.findings, sys.stdout.buffer)
    sys.stdout.flush()
    if not args.quiet:
        s = result.stats
        sys.stderr.write(summary(s.records, s.examined, result.pulls, len(result.findings), s.skipped))
    if args.fail_on_findings and result.findings:
        return EXIT_FINDINGS
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from .kube.app import run_operator  # imported here: `scan` needs neither kopf nor kubernetes
    return run_operator(args, _scanners(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pullwatch", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"pullwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _scan_parser(sub)
    _run_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "scan":
            return cmd_scan(args)
        return cmd_run(args)
    except BrokenPipeError:
        return EXIT_OK  # `pullwatch scan … | head`: the reader left; not an error
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
