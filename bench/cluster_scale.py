#!/usr/bin/env python3
"""Benchmark: Findings at cluster scale, on a real API server (issue 10).

    .venv/bin/python bench/cluster_scale.py [--flood 5000] [--startup 10000 20000]

1. The flood, sent by one client as fast as the API server takes it, with the operator running
   (default caps: 5,000 Findings per rule, 250 per namespace):
   * 5,000 pods in namespace `flood`, each pulling an image of its own that nobody allowed;
   * 50 Deployments x 20 replicas in `apps` (Deployment, ReplicaSet and Pod objects as their
     controllers make them), each replica pulling and re-pulling its Deployment's image;
   * kube-hunter pulls sprinkled in `recon`, one every 100 Events.
   Printed: Findings written against the caps, etcd bytes per Finding (the stored values, from
   etcd itself) and the largest, the operator's peak RSS, API writes per detected pull (from the
   audit log), the scanner Findings' latency during the flood (p50/p99/max).
2. Start-up with N Findings already in the cluster (made as pullwatch makes them): time until a
   new scanner pull is detected, the operator's peak RSS, and its RSS per adopted Finding.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, FindingWatch, LocalCluster, Operator, count_writes, etcd_findings, pct
from kubelet import for_create, image_event
from pullwatch.core.allowlist import Allowlist
from pullwatch.core.detector import Detector
from pullwatch.core.pulls import decode_event

ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def generated(base: str, i: int) -> str:
    return base + "".join(ALPHABET[(i // 27**k) % 27] for k in range(5))


def post(cluster: LocalCluster, path: str, body: dict) -> dict:
    status, stored = cluster.request("POST", path, body)
    if status not in (200, 201):
        raise SystemExit(f"POST {path}: {status} {stored}")
    return stored  # type: ignore[return-value]


def make_apps(cluster: LocalCluster, deployments: int, replicas: int) -> list[tuple[str, str, str]]:
    """Deployments, ReplicaSets and pods as the controllers make them: [(pod, image, namespace)]."""
    ns = "apps"
    post(cluster, f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "default"}})
    pods = []
    for d in range(deployments):
        name, image, h = (
            f"app{d}",
            f"corp/unlisted-app{d}:1",
            f"7d9f8b6c{ALPHABET[d % 10 + 17]}{ALPHABET[d // 10 + 17]}",
        )
        spec = {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        }
        dep = post(
            cluster,
            f"/apis/apps/v1/namespaces/{ns}/deployments",
            {"metadata": {"name": name}, "spec": spec},
        )
        owner = [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
                "uid": dep["metadata"]["uid"],
                "controller": True,
            }
        ]
        rs = post(
            cluster,
            f"/apis/apps/v1/namespaces/{ns}/replicasets",
            {"metadata": {"name": f"{name}-{h}", "ownerReferences": owner}, "spec": spec},
        )
        rs_owner = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": rs["metadata"]["name"],
                "uid": rs["metadata"]["uid"],
                "controller": True,
            }
        ]
        for r in range(replicas):
            pod = generated(f"{name}-{h}-", r)
            post(
                cluster,
                f"/api/v1/namespaces/{ns}/pods",
                {
                    "metadata": {
                        "name": pod,
                        "ownerReferences": rs_owner,
                        "labels": {"pod-template-hash": h},
                    },
                    "spec": {
                        "automountServiceAccountToken": False,
                        "containers": [{"name": "app", "image": image}],
                    },
                },
            )
            pods.append((pod, image, ns))
    # Round-robin over the Deployments: their first replicas come first, as in a rolling start.
    return [pods[d * replicas + r] for r in range(replicas) for d in range(deployments)]


def flood(cluster: LocalCluster, op: Operator, args: argparse.Namespace) -> None:
    for ns in ("flood", "apps", "recon"):
        cluster.kubectl("create", "namespace", ns)
    t = time.monotonic()
    apps = make_apps(cluster, 50, 20)
    print(
        f"   {len(apps)} Deployment pods (and their Deployments and ReplicaSets) created in "
        f"{time.monotonic() - t:.0f}s",
        flush=True,
    )
    watch = FindingWatch(cluster)
    watch.start()
    audit_mark = cluster.audit_log.stat().st_size if cluster.audit_log.exists() else 0
    rng = random.Random(10)
    series: list[tuple[str, str, int]] = []  # apps Events: (namespace, name, count) for re-pulls
    hunters: dict[str, float] = {}
    detected = seq = 0
    t0 = time.monotonic()
    for i in range(args.flood):
        seq += 1
        stored = post(
            cluster,
            "/api/v1/namespaces/flood/events",
            for_create(image_event("Pulling", "flood", f"flood-{i}", f"evil/flood-{i}:1", seq=seq)),
        )
        detected += 1
        if i % 5 == 0:  # the Deployments: new replicas first, then re-pulls (crash loops, restarts)
            seq += 1
            if len(series) < len(apps) and rng.random() < 0.7:
                pod, image, ns = apps[len(series)]
                stored = post(
                    cluster,
                    f"/api/v1/namespaces/{ns}/events",
                    for_create(image_event("Pulling", ns, pod, image, seq=seq)),
                )
                series.append((ns, stored["metadata"]["name"], 1))
            elif series:
                k = rng.randrange(len(series))
                ns, name, count = series[k]
                series[k] = (ns, name, count + 1)
                cluster.request(
                    "PATCH",
                    f"/api/v1/namespaces/{ns}/events/{name}",
                    {"count": count + 1},
                    content_type="application/merge-patch+json",
                )
            detected += 1
        if i % 100 == 50:
            seq += 1
            pod = f"hunter-p{i}"  # a bare pod of its own (hunter-<n> would read as a StatefulSet's)
            post(
                cluster,
                "/api/v1/namespaces/recon/events",
                for_create(
                    image_event("Pulling", "recon", pod, "aquasec/kube-hunter:0.6.8", seq=seq)
                ),
            )
            hunters[pod] = time.monotonic()
            detected += 1
    sent = time.monotonic() - t0
    events = args.flood + (args.flood // 5) + len(hunters)
    print(
        f"1. flood: {events:,} Events ({detected:,} detected pulls) in {sent:.0f}s = "
        f"{events / sent:,.0f}/s",
        flush=True,
    )
    deadline = time.monotonic() + 300
    while (
        op.metric("pullwatch_pulls_detected_total", rule="kubernetes-suspicious-image-pulling")
        < detected
        and time.monotonic() < deadline
    ):
        time.sleep(0.5)
    time.sleep(2.0 + 3)  # the last coalesced writes (--status-interval, 2 s)
    print(
        f"   everything counted {time.monotonic() - t0 - sent:.1f}s after the last Event",
        flush=True,
    )

    by_ns: dict[str, int] = {}
    for ns in ("flood", "apps", "recon"):
        _status, body = cluster.request(
            "GET", f"/apis/pullwatch.dev/v1alpha1/namespaces/{ns}/findings?limit=10000"
        )
        by_ns[ns] = len(body["items"])  # type: ignore[index]
        if ns == "flood":
            overflow = [f for f in body["items"] if f["spec"].get("overflow")]  # type: ignore[index]
            folded = overflow[0]["status"]["count"] if overflow else 0
        if ns == "apps":
            counts = sorted(f["status"]["count"] for f in body["items"])  # type: ignore[index]
    print(
        f"   Findings: flood {by_ns['flood']} (cap 250 per rule and namespace, +1 overflow "
        f"holding {folded:,} pulls), "
        f"apps {by_ns['apps']} (one per Deployment; pulls per Finding {counts[0]}..{counts[-1]}), "
        f"recon {by_ns['recon']} (scanner + suspicious per hunter pod)"
    )
    n, total, largest = etcd_findings(cluster)
    print(
        f"   etcd: {n} Findings, {total / n:,.0f} bytes each on average, largest {largest:,} "
        "bytes (bound 16 KiB)"
    )
    writes = count_writes(cluster, audit_mark)
    print(
        f"   API writes: {writes:,} for {detected:,} detected pulls = {writes / detected:.2f} "
        "per pull (target <= 1)"
    )
    lat = []
    for pod, created in hunters.items():
        seen = [
            watch.seen[name]
            for name, w in watch.workload.items()
            if w == pod and name.startswith("scanner-")
        ]
        if seen:
            lat.append(min(seen) - created)
    print(
        f"   scanner Finding latency during the flood: p50 {pct(lat, 0.5):.2f}s p99 "
        f"{pct(lat, 0.99):.2f}s "
        f"max {max(lat):.2f}s over {len(lat)} pulls (target p99 < 2 s)"
    )
    print(f"   operator peak RSS: {op.peak_rss_mb():.0f} MB", flush=True)
    watch.stop.set()


def seed_findings(cluster: LocalCluster, total: int, have: int) -> None:
    """Findings as pullwatch writes them (made by its own core), 200 per namespace."""
    detector = Detector(Allowlist())
    for i in range(have, total):
        ns = f"seeded-{i // 200}"
        if i % 200 == 0:
            cluster.kubectl("create", "namespace", ns)
        for k in range(1 + i % 3):  # one to three series each, as most Findings have
            ev = image_event(
                "Pulling" if k == 0 else "Pulled",
                ns,
                generated(f"work{i}-7d9f8b6c5d-", k),
                f"corp/seeded{i}:1",
                seq=i * 3 + k,
                node=f"node-{i % 40}",
            )
            detector.observe(decode_event(ev), minute=int(time.time()) // 60)
    for state in detector.states.values():
        body = state.body()
        created = post(
            cluster,
            f"/apis/pullwatch.dev/v1alpha1/namespaces/{state.namespace}/findings",
            {k: v for k, v in body.items() if k != "status"},
        )
        body["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
        status, _ = cluster.request(
            "PUT",
            f"/apis/pullwatch.dev/v1alpha1/namespaces/{state.namespace}/findings/"
            f"{state.name}/status",
            body,
        )
        assert status == 200, status


def startup(cluster: LocalCluster, workdir: Path, sizes: list[int]) -> None:
    have = 0
    rss: dict[int, float] = {}
    for n in sizes:
        t = time.monotonic()
        seed_findings(cluster, n, have)
        have = n
        print(
            f"2. {n:,} Findings in the cluster (seeded in {time.monotonic() - t:.0f}s)", flush=True
        )
        op = Operator(cluster, workdir).start()
        # a bare pod's name (no suffix a controller would add): its Finding's workload is the pod
        probe = f"hunterafter{n}"
        ev = image_event("Pulling", "recon", probe, "aquasec/kube-hunter:0.6.8", seq=10**7 + n)
        post(cluster, "/api/v1/namespaces/recon/events", for_create(ev))
        path = "/apis/pullwatch.dev/v1alpha1/namespaces/recon/findings?limit=10000"
        while not any(
            (f["spec"].get("workload") or {}).get("name") == probe
            for f in cluster.request("GET", path)[1]["items"]
        ):  # type: ignore[index]
            time.sleep(0.1)
        detected = time.monotonic() - op.started
        time.sleep(3)
        print(
            f"   a new scanner pull detected {detected:.1f}s after the start (target < 10 s at "
            "10,000); "
            f"peak RSS {op.peak_rss_mb():.0f} MB, RSS now {op.rss_mb():.0f} MB (targets: < 150 "
            "MB at 10,000, "
            f"< 256 MiB - the Deployment's limit - at 20,000)",
            flush=True,
        )
        rss[n] = op.rss_mb()
        op.stop()
    if len(rss) >= 2:
        (a, ra), (b, rb) = sorted(rss.items())[:2]
        print(
            f"   RSS per adopted Finding: {(rb - ra) * 1024 / (b - a):.2f} KB "
            f"(({rb:.0f} - {ra:.0f} MB) / {b - a:,} Findings; target < 2 KB)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flood", type=int, default=5000)
    ap.add_argument("--startup", type=int, nargs="*", default=[10_000, 20_000])
    ap.add_argument("--skip-flood", action="store_true")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pullwatch-bench-"))
    cluster = LocalCluster(workdir).start()
    op = None
    try:
        cluster.kubectl("apply", "-k", str(ROOT / "manifests"))
        cluster.kubectl(
            "wait", "--for=condition=established", "--timeout=60s", "crd/findings.pullwatch.dev"
        )
        if not args.skip_flood:
            op = Operator(cluster, workdir).start()
            flood(cluster, op, args)
            op.stop()
        else:
            cluster.kubectl("create", "namespace", "recon")
        # A baseline: the operator's RSS with the flood's Findings only.
        startup(cluster, workdir, args.startup)
    finally:
        if op is not None:
            op.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
