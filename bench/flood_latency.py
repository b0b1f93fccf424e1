#!/usr/bin/env python3
"""Benchmark: a scanner pull's latency to its Finding during a flood at the API server's full rate.

    .venv/bin/python bench/flood_latency.py                 # 6 clients, 20 s of flood
    .venv/bin/python bench/flood_latency.py --py-spy flood.txt   # and profile the operator

Six client processes create unlisted pull Events (each a new pod: a suspicious Finding, and a
workload read unless something spares it) in one namespace as fast as the API server accepts
them; every ``--probe-every`` seconds a kube-hunter pull is created in another namespace. Printed:
the flood's rate (Events/s accepted), each probe's latency from the API server's 201 to its
Finding's ADDED on a watch (p50/p99/max; target: 2 s), the pod reads the operator made (the API
server's own request counter), and the operator's CPU. The operator runs as its ServiceAccount,
as in the end-to-end tests. ``PULLWATCH_SOURCE=<dir>/operator`` runs another source tree of
pullwatch (an older commit, for a before/after) with this venv's packages.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import multiprocessing
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
import localcluster
from benchlib import ROOT, FindingWatch, LocalCluster, Operator, pct
from kubelet import for_create, image_event

# The API server's full rate is measured without its audit log (which would write every Event a
# second time): the pod reads are read from its own request counter instead.
localcluster.AUDIT_POLICY = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: None\n"

HUNTER = "aquasec/kube-hunter:0.6.8"


def flood(port: int, token: str, ns: str, worker: int, seconds: float, out) -> None:
    """One client: create pull Events for ``seconds``; put how many were accepted in ``out``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    end, n, seq = time.monotonic() + seconds, 0, 0
    while time.monotonic() < end:
        seq += 1
        pod = f"f{worker}x{seq}-7d9f8b6c5d-x7k2p"
        ev = for_create(image_event("Pulling", ns, pod, f"evil/flood{worker}-{seq}:1", seq=seq))
        try:
            conn.request("POST", f"/api/v1/namespaces/{ns}/events", json.dumps(ev), headers)
            rsp = conn.getresponse()
            rsp.read()
            n += rsp.status == 201
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    out.put(n)


def pod_reads(cluster: LocalCluster) -> int:
    """GETs of pods the API server has answered (its own apiserver_request_total)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", cluster.port, context=ctx, timeout=30)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {cluster.token}"})
    text = conn.getresponse().read().decode()
    total = 0
    for line in text.splitlines():
        if (
            line.startswith("apiserver_request_total{")
            and 'resource="pods"' in line
            and 'verb="GET"' in line
            and 'subresource=""' in line
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def use_source(workdir: Path) -> None:
    """``PULLWATCH_SOURCE``: run the operator from that source tree (a before/after)."""
    source = os.environ.get("PULLWATCH_SOURCE")
    if source:
        wrapper = workdir / "pullwatch"
        wrapper.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {source!r})\n"
            "from pullwatch.cli import main\nsys.exit(main())\n"
        )
        wrapper.chmod(0o755)
        benchlib.PULLWATCH = str(wrapper)
        print(f"pullwatch from {source}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--probe-every", type=float, default=1.5)
    ap.add_argument("--py-spy", metavar="FILE", help="profile the operator during the flood")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="pullwatch-flood-"))
    use_source(workdir)
    cluster = LocalCluster(workdir).start()
    op = None
    try:
        cluster.kubectl("apply", "-k", str(ROOT / "manifests"))
        cluster.kubectl(
            "wait", "--for=condition=established", "--timeout=60s", "crd/findings.pullwatch.dev"
        )
        for ns in ("flood", "target"):
            cluster.kubectl("create", "namespace", ns)
        op = Operator(cluster, workdir).start()
        watch = FindingWatch(cluster)
        watch.start()
        reads_before = pod_reads(cluster)
        cpu_before = cpu_seconds(op.proc.pid)  # type: ignore[union-attr]
        spy = None
        if args.py_spy:
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(op.proc.pid),  # type: ignore[union-attr]
                    "--duration",
                    str(int(args.seconds)),
                    "--format",
                    "raw",
                    "--output",
                    args.py_spy,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        out: multiprocessing.Queue = multiprocessing.Queue()
        workers = [
            multiprocessing.Process(
                target=flood, args=(cluster.port, cluster.token, "flood", i, args.seconds, out)
            )
            for i in range(args.clients)
        ]
        started = time.monotonic()
        for w in workers:
            w.start()
        probes: dict[str, float] = {}  # workload -> when its Event was accepted
        posted: dict[str, float] = {}  # the same on the wall clock (the API server's too)
        i = 0
        time.sleep(1.0)  # the flood is under way
        while time.monotonic() - started < args.seconds - 1:
            i += 1
            workload = f"hunter{i}"
            status, _ = cluster.request(
                "POST",
                "/api/v1/namespaces/target/events",
                for_create(image_event("Pulling", "target", f"{workload}-x7k2p", HUNTER, seq=i)),
            )
            assert status == 201, status
            probes[workload] = time.monotonic()
            posted[workload] = time.time()
            time.sleep(args.probe_every)
        accepted = sum(out.get() for _ in workers)
        for w in workers:
            w.join()
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(op.proc.pid) - cpu_before  # type: ignore[union-attr]
        deadline = time.monotonic() + 120
        latency: dict[str, float] = {}
        while time.monotonic() < deadline and len(latency) < len(probes):
            for name, workload in list(watch.workload.items()):
                if name.startswith("scanner-") and workload in probes:
                    latency[workload] = watch.seen[name] - probes[workload]
            time.sleep(0.1)
        if spy is not None:
            spy.wait(timeout=120)
        values = sorted(latency.values())
        # The API server's own account, to second resolution: when it created each Finding (a
        # check on the watch above, whose own delays would count as the operator's).
        status, body = cluster.request(
            "GET", "/apis/pullwatch.dev/v1alpha1/namespaces/target/findings"
        )
        created = {
            f["spec"]["workload"]["name"]: datetime.datetime.fromisoformat(
                f["metadata"]["creationTimestamp"].replace("Z", "+00:00")
            ).timestamp()
            for f in (body["items"] if status == 200 else [])  # type: ignore[index]
            if f["spec"]["rule"] == "kubernetes-scanner-image-pulling"
        }
        server = sorted(created[w] - posted[w] for w in posted if w in created)
        print(f"flood: {accepted} Events in {elapsed:.1f} s = {accepted / elapsed:.0f}/s accepted")
        print(
            f"scanner pulls: {len(values)}/{len(probes)} found; latency p50 "
            f"{statistics.median(values):.2f} s, p99 {pct(values, 0.99):.2f} s, max "
            f"{values[-1]:.2f} s (target 2 s)"
            if values
            else f"scanner pulls: none of {len(probes)} found within 120 s"
        )
        if server:
            print(f"  as the API server stamped them (1 s resolution): max {server[-1]:.0f} s")
        print(f"pod reads by the operator: {pod_reads(cluster) - reads_before}")
        print(f"operator CPU during the flood: {cpu:.1f} s ({cpu / elapsed:.0%} of one core)")
    finally:
        if op is not None:
            op.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
