#!/usr/bin/env python3
"""Benchmark: `pullwatch scan` vs jq vs a parse-every-line floor, on two realistic watch streams.

    python bench/scan_throughput.py                 # 1,000,000 events (~1 GB), cached in bench/out/
    python bench/scan_throughput.py --events 100000 # a quicker look
    python bench/scan_throughput.py --stream heavy  # only the Finding-heavy stream
    python bench/scan_throughput.py --rounds 3      # each command three times, the best kept

The stream is what `kubectl get events -A -w -o json` writes: one watch event per line, each an
Event with managedFields as the API server returns them (~1 kB), from 20,000 pods. About 10 % are
image events (Pulling / Successfully pulled / already present); 3 % of the pods run a scanner and
3 % an unlisted image; the rest are Scheduled, Created, Started, Killing, BackOff, Unhealthy…
The Finding-heavy stream is the same but for its pulls: one Event in every 12, each of a scanner
or an unlisted image, spread over 5,000 workloads (three pods each) in 100 namespaces - about
7,500 Findings, so that building Findings, not reading, is the cost.

Measured, each in its own process, with its own peak RSS (wait4's rusage):
  * pullwatch scan FILE -a examples/allowed-images.yaml -o json
  * jq doing the seed detection's filter (Pulling messages naming kube-hunter/kube-bench/kube-recon)
  * a minimal Python loop that only orjson.loads every line (the floor pullwatch must beat)
Targets (issues 3 and 19): >= 10x jq's throughput on both streams, >= 1.0x the floor, peak RSS
< 200 MB on ~1 GB. Each command's CPU seconds (user + system, its children included) are printed
too: on a shared machine they move less than wall time.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PULLWATCH = Path(sys.executable).parent / "pullwatch"

NORMAL = [
    ("Scheduled", "Successfully assigned {ns}/{pod} to {node}"),
    ("Created", "Created container {c}"),
    ("Started", "Started container {c}"),
    ("Killing", "Stopping container {c}"),
    ("BackOff", "Back-off restarting failed container {c} in pod {pod}_{ns}({uid})"),
    ("Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503"),
    ("SuccessfulCreate", "Created pod: {pod}"),
    ("ScalingReplicaSet", "Scaled up replica set {c}-7d9f to 3"),
]
ALLOWED_IMAGES = [
    "quay.io/prometheus/node-exporter:v1.8.1",
    "nginx:1.25.3",
    "registry.k8s.io/pause:3.9",
    "registry.k8s.io/coredns/coredns:v1.11.1",
    "docker.io/library/redis:7.2",
]
SCANNERS = [
    "aquasec/kube-hunter:0.6.8",
    "aquasec/kube-bench:v0.7.0",
    "registry.example.net:5000/mirrors/aquasec/kube-hunter:v0.6.7",
    "bishopfox/peirates:1.1.13",
]
UNLISTED = ["docker.io/randomuser/xmrig:latest", "ghcr.io/someone/tool:1.0", "evil.example/miner:2"]


PODS = 20_000  # a day of a mid-size cluster: pods come and go, each writes several events


def pod_profile(p: int) -> tuple[str, str, str]:
    """(namespace, pod name, image) of pod number p: its image never changes. About 3 % of the
    pods run a scanner and 3 % an unlisted image; the rest run allowed images."""
    ns = f"team-{'abc'[p % 3]}-{p % 40}"
    roll = (p * 2654435761) % 1000 / 1000  # deterministic spread over the pods
    image = (
        SCANNERS[p % len(SCANNERS)]
        if roll < 0.03
        else UNLISTED[p % len(UNLISTED)]
        if roll < 0.06
        else ALLOWED_IMAGES[p % len(ALLOWED_IMAGES)]
    )
    return ns, f"app{p}-{(p * 7919) % 65536:04x}", image


WORKLOADS, NAMESPACES = 5_000, 100  # the Finding-heavy stream's spread
_SUFFIXES = "bcdfghjklmnpqrstvwxz2456789"


def heavy_profile(w: int, replica: int) -> tuple[str, str, str]:
    """(namespace, pod, image) of replica ``replica`` of workload ``w`` in the Finding-heavy
    stream: every workload runs a scanner or an unlisted image, so every pull is in a Finding."""
    ns = f"fleet-{w % NAMESPACES}"
    image = SCANNERS[w % len(SCANNERS)] if w % 2 else UNLISTED[w % len(UNLISTED)]
    suffix = "".join(_SUFFIXES[(w * 31 + replica * 7 + k) % len(_SUFFIXES)] for k in range(5))
    return ns, f"wl{w}-7d9f8b6c5d-{suffix}", image


def make_event(rng: random.Random, i: int, heavy: bool = False) -> dict:
    """Event number ``i`` of the standard stream (about 10 % image events, 6 % of the pods in a
    Finding) or, ``heavy``, of the Finding-heavy one (every 12th Event a pull, each in a
    Finding, over WORKLOADS workloads in NAMESPACES namespaces)."""
    ns, pod, image = pod_profile(rng.randrange(PODS))
    node = f"worker-{i % 50}"
    uid = f"{i:08x}-aaaa-4bbb-8ccc-{i:012x}"
    roll = rng.random()
    if heavy:
        roll = 1.0
        if i % 12 == 0:
            ns, pod, image = heavy_profile(rng.randrange(WORKLOADS), rng.randrange(3))
            roll = 0.0
    if roll < 0.10:
        kind = rng.choice(("Pulling", "Pulled", "Present"))
        reason = "Pulling" if kind == "Pulling" else "Pulled"
        message = {
            "Pulling": f'Pulling image "{image}"',
            "Pulled": f'Successfully pulled image "{image}" in 1.2s (1.2s including waiting)',
            "Present": f'Container image "{image}" already present on machine',
        }[kind]
    else:
        reason, template = rng.choice(NORMAL)
        message = template.format(ns=ns, pod=pod, node=node, c=pod.split("-")[0], uid=uid)
    stamp = f"2026-11-18T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}Z"
    return {
        "type": "ADDED" if i % 7 else "MODIFIED",
        "object": {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{pod}.{i:016x}",
                "namespace": ns,
                "uid": uid,
                "resourceVersion": str(100000 + i),
                "creationTimestamp": stamp,
                "managedFields": [
                    {
                        "manager": "kubelet",
                        "operation": "Update",
                        "apiVersion": "v1",
                        "time": stamp,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {
                            "f:count": {},
                            "f:firstTimestamp": {},
                            "f:involvedObject": {},
                            "f:lastTimestamp": {},
                            "f:message": {},
                            "f:reason": {},
                            "f:reportingComponent": {},
                            "f:reportingInstance": {},
                            "f:source": {"f:component": {}, "f:host": {}},
                            "f:type": {},
                        },
                    }
                ],
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod,
                "namespace": ns,
                "uid": f"{hash(pod) & 0xFFFFFFFF:08x}-1111-4222-8333-444455556666",
                "resourceVersion": "4211",
                "fieldPath": f"spec.containers{{{pod.split('-')[0]}}}",
            },
            "reason": reason,
            "message": message,
            "source": {"component": "kubelet", "host": node},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1 + (i % 3 == 0),
            "type": "Normal",
            "eventTime": None,
            "reportingComponent": "kubelet",
            "reportingInstance": node,
        },
    }


def generate(path: Path, n: int, heavy: bool = False) -> None:
    rng = random.Random(1526)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        batch = []
        for i in range(n):
            batch.append(orjson.dumps(make_event(rng, i, heavy)))
            if len(batch) == 10000:
                f.write(b"\n".join(batch) + b"\n")
                batch.clear()
        if batch:
            f.write(b"\n".join(batch) + b"\n")
    tmp.rename(path)


def measure(cmd: list[str]) -> tuple[float, float, bytes, float]:
    """(seconds, peak RSS in MB, stderr, CPU seconds with its children) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_tail = b""
    assert proc.stdout is not None
    for chunk in iter(lambda: proc.stdout.read(1 << 20), b""):
        out_tail = (out_tail + chunk)[-4096:]
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(
            f"{cmd[0]} failed ({proc.returncode}): {err[-2000:].decode(errors='replace')}"
        )
    return seconds, usage.ru_maxrss / 1024, err, usage.ru_utime + usage.ru_stime


FLOOR = "import orjson,sys\nfor line in open(sys.argv[1], 'rb'):\n    orjson.loads(line)\n"
JQ_FILTER = (
    'select(.object.reason == "Pulling" and '
    '(.object.message | test("kube-hunter|kube-bench|kube-recon")))'
)


def stream(events: int, heavy: bool) -> Path:
    """The cached stream (generated in a child process: a forked child's peak RSS starts at its
    parent's, so this process stays small for the measurements to be each command's own)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / (f"watch-heavy-{events}.jsonl" if heavy else f"watch-{events}.jsonl")
    if not path.exists():
        print(f"generating {events:,} events -> {path} ...", flush=True)
        cmd = [sys.executable, __file__, "--events", str(events), "--generate-only", str(path)]
        subprocess.run(cmd + (["--heavy"] if heavy else []), check=True)
    return path


def bench(path: Path, events: int, jq: bool, rounds: int = 1) -> dict[str, float]:
    """Seconds of each command on one stream, the best of ``rounds`` (the commands take turns,
    so that a busy minute on this shared machine falls on all of them); prints the table."""
    size_mb = path.stat().st_size / 1e6
    print(f"\ninput: {path.name}, {size_mb:,.0f} MB, {events:,} events")
    allow = str(ROOT / "examples" / "allowed-images.yaml")
    commands = {
        "pullwatch scan": [str(PULLWATCH), "scan", str(path), "-a", allow, "-o", "json"],
        "orjson.loads every line": [sys.executable, "-c", FLOOR, str(path)],
    }
    if jq and shutil.which("jq"):
        commands["jq (seed filter)"] = ["jq", "-c", JQ_FILTER, str(path)]
    rounds_of: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
    for turn in range(rounds):
        for name, cmd in commands.items():
            t, rss, err, cpu = measure(cmd)
            rounds_of[name].append((t, rss, cpu))
            if name == "pullwatch scan" and turn == 0:
                print("  pullwatch summary: " + err.decode().splitlines()[0])
    if rounds > 1:
        print(f"  best of {rounds} rounds; every round's seconds:")
        for name, measured in rounds_of.items():
            print(f"    {name:24}" + " ".join(f"{t:6.2f}" for t, _, _ in measured))
    runs = {}  # the best time with its CPU, and the highest peak RSS of any round (the target)
    for name, measured in rounds_of.items():
        t, _, cpu = min(measured)
        runs[name] = (t, max(rss for _, rss, _ in measured), cpu)
    print(f"{'':26}{'seconds':>9}{'MB/s':>9}{'events/s':>12}{'peak RSS MB':>13}{'CPU s':>8}")
    for name, (t, rss, cpu) in runs.items():
        print(f"{name:26}{t:9.2f}{size_mb / t:9.0f}{events / t:12,.0f}{rss:13.0f}{cpu:8.1f}")
    pw = runs["pullwatch scan"][0]
    floor = runs["orjson.loads every line"][0] / pw
    print(f"pullwatch vs parse-every-line floor: {floor:.2f}x  (target >= 1.0x)")
    if "jq (seed filter)" in runs:
        print(
            f"pullwatch vs jq:                     {runs['jq (seed filter)'][0] / pw:.1f}x  "
            "(target >= 10x)"
        )
    print(
        f"pullwatch peak RSS:                  {runs['pullwatch scan'][1]:.0f} MB  "
        "(target < 200 MB on ~1 GB)"
    )
    return {name: t for name, (t, _, _) in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--no-jq", action="store_true", help="skip jq (it is the slow one)")
    ap.add_argument(
        "--stream",
        choices=("standard", "heavy", "both"),
        default="both",
        help="the standard stream, the Finding-heavy one, or both (default)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every command this many times, taking turns; report each one's best time "
        "(and its highest peak RSS)",
    )
    ap.add_argument("--heavy", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--generate-only", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate_only:
        generate(Path(args.generate_only), args.events, args.heavy)
        return
    results = {}
    for heavy in (False, True):
        if args.stream == ("heavy" if not heavy else "standard"):
            continue
        name = "Finding-heavy" if heavy else "standard"
        results[name] = bench(
            stream(args.events, heavy), args.events, not args.no_jq, max(1, args.rounds)
        )
    print()
    for name, runs in results.items():
        pw = runs["pullwatch scan"]
        jq = f"{runs['jq (seed filter)'] / pw:5.1f}x jq" if "jq (seed filter)" in runs else ""
        print(f"{name:14} {jq}  {runs['orjson.loads every line'] / pw:5.2f}x orjson floor")


if __name__ == "__main__":
    main()
