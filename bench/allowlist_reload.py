#!/usr/bin/env python3
"""Benchmark: many AllowedImages objects against the operator, on a real API server (issue 9).

    .venv/bin/python bench/allowlist_reload.py [--objects 1000] [--patterns 10]

Prints, with N AllowedImages in the cluster (each scoped to its own namespaces, P patterns):
  * first pull judged: from the operator's start to the Finding of a pull made before it started
    (target < 5 s at 1,000 objects; it was 123 s at 600);
  * every object's status written (Ready, observedGeneration current);
  * an edit in force: from `kubectl replace` of one object to its status reporting the new
    generation - written only after the new allowlist replaced the old one - and a pull of a
    newly allowed image making no Finding (target < 1 s);
  * the liveness endpoint: slowest answer while all of that happened.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, LocalCluster, Operator
from kubelet import for_create, image_event


def allowed(i: int, patterns: int, extra: list[str] | None = None) -> dict:
    return {
        "apiVersion": "pullwatch.dev/v1alpha1",
        "kind": "AllowedImages",
        "metadata": {"name": f"team-{i}"},
        "spec": {
            "namespaces": [f"team-{i}", f"team-{i}-*"],
            "images": [f"registry{i}.example.com/app-{j}/*:v*" for j in range(patterns)]
            + (extra or []),
        },
    }


class Prober(threading.Thread):
    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.worst, self.failures, self.stop = url, 0.0, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as rsp:
                    ok = rsp.status == 200
            except OSError:
                ok = False
            self.worst = max(self.worst, time.monotonic() - t)
            self.failures += not ok
            time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objects", type=int, default=1000)
    ap.add_argument("--patterns", type=int, default=10)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pullwatch-bench-"))
    cluster = LocalCluster(workdir).start()
    op = None
    try:
        cluster.kubectl("apply", "-k", str(ROOT / "manifests"))
        cluster.kubectl(
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/allowedimages.pullwatch.dev",
        )
        last = args.objects - 1
        cluster.kubectl("create", "namespace", f"team-{last}")
        t = time.monotonic()
        for start in range(0, args.objects, 200):
            docs = "\n".join(
                json.dumps(allowed(i, args.patterns))
                for i in range(start, min(args.objects, start + 200))
            )
            cluster.kubectl("create", "-f", "-", input=docs, timeout=300)
        print(
            f"{args.objects} AllowedImages x {args.patterns} patterns created in "
            f"{time.monotonic() - t:.1f}s",
            flush=True,
        )
        ev = image_event("Pulling", f"team-{last}", "before-start", "evil/miner:1", seq=1)
        cluster.request("POST", f"/api/v1/namespaces/team-{last}/events", for_create(ev))

        op = Operator(cluster, workdir)
        op.start()
        prober = Prober(f"http://127.0.0.1:{op.health}/healthz")
        prober.start()
        path = f"/apis/pullwatch.dev/v1alpha1/namespaces/team-{last}/findings"
        while not (cluster.request("GET", path)[1] or {}).get("items"):
            time.sleep(0.05)
        judged = time.monotonic() - op.started
        print(
            f"first pull judged {judged:.2f}s after the operator started (target < 5 s)", flush=True
        )

        def statuses_done() -> bool:
            items = (
                cluster.request("GET", "/apis/pullwatch.dev/v1alpha1/allowedimages?limit=5000")[1]
                or {}
            )["items"]
            return all(
                (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"]
                for o in items
            )

        while not statuses_done():
            time.sleep(0.5)
        print(
            f"all {args.objects} statuses written {time.monotonic() - op.started:.1f}s after the "
            "start",
            flush=True,
        )

        edits = []
        for k in range(5):
            name = f"team-{last}"
            obj = allowed(last, args.patterns, [f"evil/newly-allowed-{k}:*"])
            current = cluster.request("GET", f"/apis/pullwatch.dev/v1alpha1/allowedimages/{name}")[
                1
            ]
            obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            t = time.monotonic()
            _status, stored = cluster.request(
                "PUT", f"/apis/pullwatch.dev/v1alpha1/allowedimages/{name}", obj
            )
            gen = stored["metadata"]["generation"]
            while (
                cluster.request("GET", f"/apis/pullwatch.dev/v1alpha1/allowedimages/{name}")[1].get(
                    "status"
                )
                or {}
            ).get("observedGeneration") != gen:
                time.sleep(0.02)
            edits.append(time.monotonic() - t)
            ev = image_event(
                "Pulling",
                f"team-{last}",
                f"now-allowed-{k}",
                f"evil/newly-allowed-{k}:1",
                seq=10 + k,
            )
            cluster.request("POST", f"/api/v1/namespaces/team-{last}/events", for_create(ev))
        time.sleep(3)
        workloads = {
            f["spec"]["workload"]["name"] for f in cluster.request("GET", path)[1]["items"]
        }
        allowed_ok = not any(w.startswith("now-allowed-") for w in workloads)
        print(
            "an edit in force (its status at the new generation): "
            f"{min(edits):.2f}-{max(edits):.2f}s over "
            f"{len(edits)} edits (target < 1 s); the newly allowed images made no Finding: "
            f"{allowed_ok}"
        )
        prober.stop.set()
        print(
            f"liveness: slowest answer {prober.worst:.2f}s, {prober.failures} failures; operator "
            "peak RSS "
            f"{op.peak_rss_mb():.0f} MB"
        )
    finally:
        if op is not None:
            op.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
