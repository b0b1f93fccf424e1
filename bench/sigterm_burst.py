#!/usr/bin/env python3
"""Benchmark: SIGTERM right after a burst of pulls - is everything the operator received written?

    .venv/bin/python bench/sigterm_burst.py                  # 400 pulls, SIGTERM 1.2 s after
    PULLWATCH_SOURCE=<dir>/operator .venv/bin/python bench/sigterm_burst.py   # another tree

Four clients create ``--pulls`` pull Events (each a new pod, so a new Finding and a workload read)
as fast as the API server takes them; ``--after`` seconds after the last one was accepted the
operator gets SIGTERM, as Kubernetes sends it. Printed: the Findings written by then, how long it
took to exit, and the pulls the Findings in the cluster count after the exit against those
created (the difference is what a restart would have to recount from the Events - or never,
with ``Recreate`` and a new pod that does not start).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, FindingWatch, LocalCluster, Operator
from flood_latency import use_source
from kubelet import for_create, image_event


def burst(port: int, token: str, ns: str, worker: int, n: int, out) -> None:
    import http.client
    import json
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    accepted = 0
    for i in range(n):
        pod = f"app{worker}x{i}-7d9f8b6c5d-x7k2p"
        ev = for_create(image_event("Pulling", ns, pod, "corp/unlisted:1", seq=i))
        conn.request("POST", f"/api/v1/namespaces/{ns}/events", json.dumps(ev), headers)
        rsp = conn.getresponse()
        rsp.read()
        accepted += rsp.status == 201
    out.put(accepted)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pulls", type=int, default=400)
    ap.add_argument("--after", type=float, default=1.2)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pullwatch-sigterm-"))
    use_source(workdir)
    cluster = LocalCluster(workdir).start()
    op = None
    try:
        cluster.kubectl("apply", "-k", str(ROOT / "manifests"))
        cluster.kubectl(
            "wait", "--for=condition=established", "--timeout=60s", "crd/findings.pullwatch.dev"
        )
        cluster.kubectl("create", "namespace", "burst")
        op = Operator(cluster, workdir, "--max-findings-per-namespace", "1000").start()
        while "processing Events" not in op.logs():
            time.sleep(0.1)
        watch = FindingWatch(cluster)
        watch.start()
        out: multiprocessing.Queue = multiprocessing.Queue()
        workers = [
            multiprocessing.Process(
                target=burst,
                args=(cluster.port, cluster.token, "burst", i, args.pulls // 4, out),
            )
            for i in range(4)
        ]
        started = time.monotonic()
        for w in workers:
            w.start()
        created = sum(out.get() for _ in workers)
        took = time.monotonic() - started
        time.sleep(args.after)
        written = len(watch.seen)
        stopped = time.monotonic()
        os.killpg(op.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        code = op.proc.wait(timeout=60)  # type: ignore[union-attr]
        exit_took = time.monotonic() - stopped
        status, body = cluster.request(
            "GET", "/apis/pullwatch.dev/v1alpha1/namespaces/burst/findings"
        )
        items = body["items"] if status == 200 else []  # type: ignore[index]
        counted = sum((f.get("status") or {}).get("count", 0) for f in items)
        print(f"burst: {created} pulls created in {took:.1f} s; SIGTERM {args.after} s later")
        print(f"Findings written before SIGTERM: {written}")
        print(f"exit code {code}, {exit_took:.1f} s after SIGTERM")
        print(
            f"after the exit: {len(items)} Findings counting {counted} pulls; "
            f"{created - counted} pulls not written"
        )
        print("operator's last words:", " | ".join(op.logs().strip().splitlines()[-3:])[-400:])
    finally:
        if op is not None:
            op.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
