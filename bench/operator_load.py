#!/usr/bin/env python3
"""Benchmark: the operator against a real API server (etcd + kube-apiserver on loopback).

    .venv/bin/python bench/operator_load.py                    # all phases
    .venv/bin/python bench/operator_load.py --cluster-events 20000   # a lighter memory phase

Phases, each printing its figures:
 1. ceiling   - Events one client gets the API server to accept per second (no operator).
 2. max rate  - the operator running while one client creates Events as fast as it can
                (~10 % pulls: new pods and repeats of existing series): the operator's processed
                rate, and whether its lag grows (Event->Finding latency, first vs last fifth).
 3. 200/s     - Events paced at 200/s: Event->Finding latency p50/p99 (target p99 < 1 s).
 4. writes    - API writes pullwatch made (from the API server's audit log) per detected pull
                (target <= 1 on average; repeats of one series are coalesced).
 5. memory    - the operator's peak RSS after starting with N Events in the cluster
                (default 100,000; target < 150 MB).
The operator runs as its ServiceAccount, exactly as in the end-to-end tests.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, FindingWatch, LocalCluster, Operator, count_writes, pct
from kubelet import for_create, image_event, other_event

NOISE = ["Scheduled", "Created", "Started", "Killing", "BackOff", "Unhealthy"]
# Throughput, not bounds, is measured here: the caps (bench/cluster_scale.py measures them) are
# raised out of the way so that every new pod is a Finding of its own.
OPERATOR_ARGS: list[str] = ["--max-findings", "1000000", "--max-findings-per-namespace", "1000000"]


class Player:
    """Plays the kubelet in one namespace. ~10 % of the Events are pulls a rule fires on: a new
    pod (a new Finding) with probability ``new``, else a repeat of an existing pod's series (the
    kubelet re-pulling on restart or back-off), as long as fewer than ``pods`` exist."""

    def __init__(
        self, cluster: LocalCluster, ns: str, seed: int, new: float = 0.3, pods: int = 10**9
    ):
        self.cluster, self.ns, self.rng = cluster, ns, random.Random(seed)
        self.new, self.pods = new, pods
        self.series: list[tuple[str, str, int]] = []  # (pod, event name, count)
        self.created_at: dict[str, float] = {}  # pod -> when its first pull was accepted
        self.detected_pulls = 0
        self.seq = 0

    def one(self) -> None:
        self.seq += 1
        if self.rng.random() >= 0.10:
            ev = other_event(
                self.rng.choice(NOISE), self.ns, f"noise-{self.seq % 997}", "x", seq=self.seq
            )
            self._post(ev)
            return
        self.detected_pulls += 1
        if self.series and (len(self.series) >= self.pods or self.rng.random() >= self.new):
            i = self.rng.randrange(len(self.series))
            pod, name, count = self.series[i]
            self.series[i] = (pod, name, count + 1)
            self.cluster.request(
                "PATCH",
                f"/api/v1/namespaces/{self.ns}/events/{name}",
                {"count": count + 1},
                content_type="application/merge-patch+json",
            )
            return
        pod = f"p{self.seq}"
        image = "aquasec/kube-hunter:0.6.8" if self.rng.random() < 0.3 else "evil/miner:1"
        stored = self._post(image_event("Pulling", self.ns, pod, image, seq=self.seq))
        self.created_at[pod] = time.monotonic()
        self.series.append((pod, stored["metadata"]["name"], 1))

    def _post(self, ev: dict) -> dict:
        status, body = self.cluster.request(
            "POST", f"/api/v1/namespaces/{self.ns}/events", for_create(ev)
        )
        if status != 201:
            raise SystemExit(f"event create failed: {status} {body}")
        return body  # type: ignore[return-value]


def wait_all_found(watch: FindingWatch, pods, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        found = set(watch.workload.values())
        if all(p in found for p in pods):
            return time.monotonic() - start
        time.sleep(0.05)
    missing = [p for p in pods if p not in set(watch.workload.values())]
    raise SystemExit(f"{len(missing)} pulls never became Findings (first: {missing[:3]})")


def latencies(player: Player, watch: FindingWatch) -> list[float]:
    first = {}
    for name, workload in watch.workload.items():
        first[workload] = min(first.get(workload, float("inf")), watch.seen[name])
    return [first[p] - t for p, t in player.created_at.items() if p in first]


def wait_counts(cluster: LocalCluster, player: Player, timeout: float) -> None:
    """Until every Finding in the player's namespace has its series' exact count."""
    truth = {pod: n for pod, _, n in player.series}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = cluster.request(
            "GET", f"/apis/pullwatch.dev/v1alpha1/namespaces/{player.ns}/findings"
        )
        got = {}
        for f in body.get("items", []) if status == 200 else []:  # type: ignore[union-attr]
            got.setdefault((f["spec"].get("workload") or {}).get("name"), set()).add(
                (f.get("status") or {}).get("count")
            )
        if all(got.get(pod) == {n} for pod, n in truth.items()):
            return
        time.sleep(0.2)
    raise SystemExit(f"counts in {player.ns} not exact after {timeout}s")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ceiling-events", type=int, default=3000)
    ap.add_argument("--max-rate-events", type=int, default=6000)
    ap.add_argument("--paced-seconds", type=int, default=30)
    ap.add_argument("--cluster-events", type=int, default=100_000)
    ap.add_argument(
        "--status-interval",
        type=float,
        default=None,
        help="passed to pullwatch run (default: pullwatch's own)",
    )
    args = ap.parse_args()
    if args.status_interval is not None:
        OPERATOR_ARGS.extend(["--status-interval", str(args.status_interval)])

    workdir = Path(tempfile.mkdtemp(prefix="pullwatch-bench-"))
    cluster = LocalCluster(workdir).start()
    proc = None
    try:
        cluster.kubectl("apply", "-k", str(ROOT / "manifests"))
        cluster.kubectl(
            "wait", "--for=condition=established", "--timeout=60s", "crd/findings.pullwatch.dev"
        )
        for ns in ("ceiling", "maxrate", "paced", "memory"):
            cluster.kubectl("create", "namespace", ns)

        # 1. ceiling
        p = Player(cluster, "ceiling", 1)
        t = time.monotonic()
        for _ in range(args.ceiling_events):
            p.one()
        ceiling = args.ceiling_events / (time.monotonic() - t)
        print(
            f"1. API server accepted rate, one client, no operator: {ceiling:,.0f} Events/s",
            flush=True,
        )

        proc = Operator(cluster, workdir, *OPERATOR_ARGS).start()
        watch = FindingWatch(cluster)
        watch.start()
        time.sleep(2)  # let the re-list of phase 1's Events settle
        audit_mark = cluster.audit_log.stat().st_size

        # 2. max rate: detected pulls concentrate on 50 pods, as in a crash-looping storm
        p2 = Player(cluster, "maxrate", 2, new=0.3, pods=50)
        t = time.monotonic()
        for _ in range(args.max_rate_events):
            p2.one()
        sent = time.monotonic() - t
        caught_up = wait_all_found(watch, list(p2.created_at), 120)
        wait_counts(cluster, p2, 60)
        caught_counts = time.monotonic() - t - sent
        lat = latencies(p2, watch)
        print(
            f"2. max rate: created {args.max_rate_events:,} Events in {sent:.1f}s "
            f"({args.max_rate_events / sent:,.0f}/s); "
            f"every Finding existed {caught_up:.2f}s and every count was exact "
            f"{caught_counts:.2f}s after the "
            f"last Event -> processed rate {args.max_rate_events / (sent + caught_counts):,.0f} "
            "Events/s",
            flush=True,
        )
        fifth = max(1, len(lat) // 5)
        print(
            f"   Event->Finding latency of its {len(lat)} new Findings: first fifth median "
            f"{statistics.median(lat[:fifth]):.3f}s, last fifth median "
            f"{statistics.median(lat[-fifth:]):.3f}s"
        )
        time.sleep(2)
        writes2 = count_writes(cluster, audit_mark)
        audit_mark = cluster.audit_log.stat().st_size
        print(
            f"   API writes: {writes2} for {p2.detected_pulls} detected pulls = "
            f"{writes2 / p2.detected_pulls:.2f} per pull (target <= 1)",
            flush=True,
        )

        # 3. paced at 200/s: every third detected pull is a new pod
        p3 = Player(cluster, "paced", 3, new=0.3)
        n = 200 * args.paced_seconds
        t0 = time.monotonic()
        for i in range(n):
            delay = t0 + i / 200 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            p3.one()
        achieved = n / (time.monotonic() - t0)
        wait_all_found(watch, list(p3.created_at), 60)
        wait_counts(cluster, p3, 60)
        lat = latencies(p3, watch)
        time.sleep(2)
        writes3 = count_writes(cluster, audit_mark)
        print(
            f"3. paced {achieved:.0f} Events/s for {args.paced_seconds}s: {len(lat)} new Findings, "
            f"Event->Finding latency p50 {pct(lat, 0.5):.3f}s p99 {pct(lat, 0.99):.3f}s max "
            f"{max(lat):.3f}s "
            f"(target p99 < 1 s)"
        )
        print(
            f"   API writes: {writes3} for {p3.detected_pulls} detected pulls = "
            f"{writes3 / p3.detected_pulls:.2f} per pull ({len(p3.series)} Findings' pods, "
            f"{p3.detected_pulls - len(p3.series)} repeats)",
            flush=True,
        )
        print(
            f"4. writes per detected pull over phases 2 and 3: "
            f"{(writes2 + writes3) / (p2.detected_pulls + p3.detected_pulls):.2f}"
        )
        print(f"   operator peak RSS so far: {proc.peak_rss_mb():.0f} MB", flush=True)
        watch.stop.set()
        proc.stop()
        proc = None

        # 5. memory with N Events in the cluster
        p5 = Player(cluster, "memory", 5, new=0.3)
        t = time.monotonic()
        for _ in range(args.cluster_events):
            p5.one()
        print(
            f"5. created {args.cluster_events:,} more Events in {time.monotonic() - t:.0f}s; "
            "starting the operator",
            flush=True,
        )
        proc = Operator(cluster, workdir, *OPERATOR_ARGS).start()
        t = time.monotonic()
        wait_counts(cluster, p5, 600)
        print(
            f"   operator listed and caught up in {time.monotonic() - t:.1f}s; peak RSS "
            f"{proc.peak_rss_mb():.0f} MB (target < 150 MB)"
        )
    finally:
        if proc is not None:
            proc.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
