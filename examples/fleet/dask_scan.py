#!/usr/bin/env python3
"""Scan a fleet's archive on Dask: one task per shard, the merge as a tree reduce.

    pip install 'pullwatch[dask,cloud]'
    # locally: a LocalCluster of two worker processes on 127.0.0.1
    python examples/fleet/dask_scan.py -c config.yaml -o q1.json \\
        s3://audit-archive/prod-eu/2026-01/ s3://audit-archive/prod-eu/2026-02/ \\
        s3://audit-archive/prod-us/2026-01/ s3://audit-archive/prod-us/2026-02/
    # on a Dask cluster (every worker has pullwatch installed, and the same credentials)
    python examples/fleet/dask_scan.py --scheduler tcp://scheduler.example:8786 -c … -o … SHARD…

Each SHARD is one task: a file, an object, a prefix (trailing /) or a glob, or several joined by
commas. A worker scans its shard where it runs (``pullwatch.scan.fleet.scan_shard``: the worker
reads the objects itself, through fsspec; nothing but the shard's names and the configuration
files' bytes is shipped to it) and returns the shard's Findings with their merge state. Those are
merged ``--fan-in`` at a time on the workers (``merge_results``) until one result is left: the
Findings of one ``pullwatch scan`` over all the shards, written as ``pullwatch scan -o json``
writes them. Exit status: 0, or 3 when some input could not be read in full (its problems are
printed; the Findings of what could be read are written all the same).

No scheduling of our own: placement, a lost worker's tasks and backpressure are Dask's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dask.distributed import Client, LocalCluster

from pullwatch.scan.fleet import ShardResult, merge_results, read_config, scan_shard
from pullwatch.scan.render import safe, write_json


def fleet_scan(
    client: Client,
    shards: Sequence[Sequence[str]],
    allowed_images: Sequence[str] = (),
    fan_in: int = 8,
    **options,
) -> ShardResult:
    """The merged result of scanning every shard as a Dask task. ``options``: those of
    ``scan_shard`` (``scanners``, ``default_scanners``, ``operator_namespace``)."""
    # The configuration files' bytes go with each task: a real cluster's workers do not share
    # this machine's disk. Only the package's functions are shipped, by name.
    config = read_config(allowed_images)
    futures = client.map(
        scan_shard, [list(s) for s in shards], allowed_images=config, pure=False, **options
    )
    if not futures:
        return ShardResult()
    # A tree reduce: each level merges fan_in results, so no one task holds every shard's.
    while len(futures) > 1:
        futures = [
            client.submit(merge_results, *futures[i : i + fan_in], pure=False)
            for i in range(0, len(futures), fan_in)
        ]
    return futures[0].result()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("shards", nargs="+", metavar="SHARD", help="one task each (a,b: several)")
    ap.add_argument(
        "-c",
        "--config",
        "-a",
        "--allowed-images",
        dest="allowed_images",
        action="append",
        default=[],
        metavar="FILE",
        help="AllowedImages, ScannerImages, Suppressions (as for `pullwatch scan -c`)",
    )
    ap.add_argument("--scanner", action="append", default=[], metavar="NAME")
    ap.add_argument("--no-default-scanners", action="store_true")
    ap.add_argument("-o", "--output", default="-", help="where the JSON List goes ('-': stdout)")
    ap.add_argument("--scheduler", help="a Dask scheduler's address (default: a LocalCluster)")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    ap.add_argument("--fan-in", type=int, default=8, help="results merged by one task")
    args = ap.parse_args(argv)

    shards = [[p for p in s.split(",") if p] for s in args.shards]
    options = {"scanners": args.scanner, "default_scanners": not args.no_default_scanners}
    if args.scheduler:
        with Client(args.scheduler) as client:
            result = fleet_scan(client, shards, args.allowed_images, args.fan_in, **options)
    else:
        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",  # a free loopback port: two clusters never clash
            ) as cluster,
            Client(cluster) as client,
        ):
            result = fleet_scan(client, shards, args.allowed_images, args.fan_in, **options)

    if args.output == "-":
        write_json(result.documents, sys.stdout.buffer)
        sys.stdout.flush()
    else:
        with open(args.output, "wb") as f:
            write_json(result.documents, f)
    for problem in result.errors:  # object keys and servers' words: shown, never obeyed
        print(f"pullwatch: {safe(problem)}", file=sys.stderr)
    for text in result.notices:
        print(f"pullwatch: note: {safe(text)}", file=sys.stderr)
    print(
        f"{len(shards)} shards: {result.records} records, {len(result.findings())} Findings",
        file=sys.stderr,
    )
    return 3 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
