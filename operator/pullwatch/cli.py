"""pullwatch command line: scan (offline detection) and run (the operator)."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence

from . import (
    EXIT_FINDINGS,
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WORKER_DIED,
    __version__,
)
from .kube.options import add_run_parser, run_options

SCAN_EXIT_CODES = """exit codes:
  0  every input was read in full (findings or not, unless --fail-on-findings)
  1  --fail-on-findings was given and there is at least one Finding
  2  usage error, or an AllowedImages/scanner file that cannot be read
  3  an input could not be read in full: missing, unreadable, damaged or truncated
     (corrupt gzip, lines that are not JSON, a record cut short), or nothing in it was a
     Kubernetes Event, audit entry or Pod. The Findings of everything that could be read are
     still printed; 3 wins over 1, because the Findings may be incomplete.
  4  internal error (a bug in pullwatch: please report the one-line message)
  5  a worker process of the multi-core scan was killed (out of memory?): the scan is
     incomplete and what it printed must not be used; scan again with more memory"""


def _scan_parser(sub: argparse._SubParsersAction) -> None:
    from .scan.cloud import HELP as OBJECT_STORAGE_HELP

    p = sub.add_parser(
        "scan",
        help="detect scanner and unapproved image pulls in event dumps and audit logs",
        description="Run pullwatch's detection offline. Inputs: kubectl get events -o json/yaml "
        "(also with -w), watch streams and other JSON lines, events.k8s.io/v1 Events, "
        "audit.k8s.io/v1 logs, also as AKS, EKS and GKE export them; Pod lists (kubectl get pods "
        "-o json/yaml); gzip, bzip2 and xz accepted; UTF-8, UTF-16 or UTF-32; "
        "'-' reads stdin. Findings go to stdout, a summary to stderr.",
        epilog=OBJECT_STORAGE_HELP + "\n\n" + SCAN_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE|URL")
    p.add_argument(
        "-a",
        "--allowed-images",
        "-c",
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        dest="allowed_images",
        help="pullwatch configuration, YAML/JSON (repeatable): AllowedImages (without any, no "
        "image is allowed), ScannerImages and Suppressions - as the operator reads them",
    )
    p.add_argument(
        "--operator-namespace",
        default="pullwatch-system",
        metavar="NS",
        help="Suppressions in this namespace may cover the scanner rule and name namespaces "
        "(act cluster-wide), as in the operator",
    )
    p.add_argument("-o", "--output", choices=("table", "json", "yaml", "jsonl"), default="table")
    p.add_argument(
        "--scanner",
        action="append",
        default=[],
        metavar="NAME",
        help="another image name (last path component) to treat as a scanner",
    )
    p.add_argument(
        "--no-default-scanners",
        action="store_true",
        help="use only the --scanner names, not the built-in list",
    )
    p.add_argument(
        "--fail-on-findings", action="store_true", help="exit 1 when there is any Finding"
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no summary on stderr (problems are still reported)",
    )


def _scanners(args: argparse.Namespace, lists: Sequence[object] = ()) -> frozenset[str]:
    from .core.rules import DEFAULT_SCANNER_IMAGES, scanner_names, validate_scanner_names

    names = validate_scanner_names(list(args.scanner))
    return scanner_names(
        lists, names, frozenset() if args.no_default_scanners else DEFAULT_SCANNER_IMAGES
    )  # type: ignore[arg-type]


def cmd_scan(args: argparse.Namespace, keep: list[object] | None = None) -> int:
    """``keep``: where the scan's result is held until the process leaves (``console``)."""
    from .core.allowlist import Allowlist
    from .scan.pipeline import load_config, scan_paths
    from .scan.render import FORMATS, safe, summary
    from .scan.sources import InputError

    try:
        config = load_config(args.allowed_images, args.operator_namespace)
        scanners = _scanners(args, config.scanner_lists)
    except (InputError, ValueError) as exc:
        print(f"pullwatch: {safe(exc)}", file=sys.stderr)
        return EXIT_USAGE
    policies = config.policies
    for policy in policies:
        for problem in policy.problems:
            status = "ignored" if not policy.usable else "pattern ignored"
            print(
                f"pullwatch: AllowedImages {safe(policy.name)}: {status}: {safe(problem)}",
                file=sys.stderr,
            )
    for scanner_list in config.scanner_lists:
        for problem in scanner_list.problems:
            print(
                f"pullwatch: ScannerImages {safe(scanner_list.name)}: {safe(problem)}",
                file=sys.stderr,
            )
    for s in config.suppressions:
        for problem in s.problems:
            print(
                f"pullwatch: Suppression {safe(s.key)}: ignored: {safe(problem)}", file=sys.stderr
            )
    for what in config.unknown:
        print(
            f"pullwatch: {safe(what)}: not a pullwatch configuration object; ignored",
            file=sys.stderr,
        )
    from .scan.parallel import WorkerDied

    try:
        result = scan_paths(args.files, Allowlist(policies), scanners, config=config)
        if keep is not None:
            keep.append(result)
        extra = [result.context] if result.context is not None else []
        out = sys.stdout.buffer
        FORMATS[args.output](result.findings, out, complete=result.complete, extra=extra)
    except WorkerDied as exc:
        # Findings are built while they are written: part of the output may be out already.
        sys.stdout.flush()
        print(f"pullwatch: {exc}", file=sys.stderr)
        return EXIT_WORKER_DIED
    sys.stdout.flush()
    s = result.stats
    if not args.quiet:
        sys.stderr.write(
            summary(s.records, s.examined, result.pulls, len(result.findings), s.skipped, s.damaged)
        )
    for problem in result.input_errors:
        print(f"pullwatch: {safe(problem)}", file=sys.stderr)
    for text in result.notices:
        print(f"pullwatch: note: {safe(text)}", file=sys.stderr)
    if s.unrecognized and not s.recognized:
        print(
            f"pullwatch: none of the {s.unrecognized} records read is a Kubernetes Event, "
            "watch event, audit entry or Pod: is this the right input?",
            file=sys.stderr,
        )
    if not result.complete:
        return EXIT_INPUT
    if args.fail_on_findings and result.findings:
        return EXIT_FINDINGS
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from .kube.app import run_operator  # imported here: `scan` needs neither kopf nor kubernetes

    try:
        options = run_options(args)
    except ValueError as exc:
        print(f"pullwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_operator(args, options)


def _merge_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="join the Findings of several `pullwatch scan` runs into those of one scan over all",
        description="Join the Findings that `pullwatch scan -o json|jsonl|yaml` wrote (each "
        "carries its merge state) into exactly the Findings of one scan over all the inputs: "
        "scan January and February apart, merge, and get the quarter. Nothing is judged again: "
        "merge scans made with the same configuration. Findings of the operator (no merge "
        "state), damaged ones and those of another pullwatch version are refused.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="scan outputs ('-' reads stdin)")
    p.add_argument("-o", "--output", choices=("table", "json", "yaml", "jsonl"), default="json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pullwatch", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"pullwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _scan_parser(sub)
    _merge_parser(sub)
    add_run_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))  # exits 2 on a usage error (argparse)


def console() -> None:
    """The ``pullwatch`` command. A scan or a merge ends without tearing down what it built:
    freeing a large scan's records object by object, then the modules, costs time for nothing
    (0.14 s for the records alone on bench/scan_throughput.py's Finding-heavy stream) - its
    worker pools are shut down and its output is flushed. So the command's result is held here
    (``held``), past the return of the function that made it, until ``os._exit``. The
    operator (``run``) exits the ordinary way.

    For the same reason a scan or a merge runs without the cyclic garbage collector from start
    to end (``collector_off`` in scan/pipeline.py says why it is kept off while records are read
    and Findings built): turned back on in between, its first pass walked every record kept -
    0.13-0.21 s on the Finding-heavy stream after reading, to find nothing: what the command
    builds (parsed records, Findings) holds no cycles."""
    args = build_parser().parse_args()
    if args.command in ("scan", "merge"):
        gc.disable()
        held: list[object] = []
        leave_now(run_command(args, held))
    sys.exit(run_command(args))


def leave_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the reader left (`| head`), or the stream was closed
            pass
    os._exit(code)


def run_command(args: argparse.Namespace, keep: list[object] | None = None) -> int:
    try:
        if args.command == "scan":
            return cmd_scan(args, keep)
        if args.command == "merge":
            from .scan.merge import run

            return run(args.files, args.output, keep)
        return cmd_run(args)
    except BrokenPipeError:
        return EXIT_OK  # `pullwatch scan … | head`: the reader left; not an error
    except KeyboardInterrupt:
        return 130
    except MemoryError:
        print("pullwatch: internal error: out of memory", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as exc:
        where = exc.__traceback__
        while where is not None and where.tb_next is not None:
            where = where.tb_next
        at = (
            f" at {where.tb_frame.f_code.co_filename.rsplit('/', 2)[-1]}:{where.tb_lineno}"
            if where
            else ""
        )
        print(
            f"pullwatch: internal error: {type(exc).__name__}: {str(exc)[:300]}{at} "
            "(please report this)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
