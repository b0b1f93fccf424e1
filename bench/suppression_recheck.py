#!/usr/bin/env python3
"""Benchmark: Suppression rechecks, Suppression statuses and OpenReports rebuilds over 10,000
Findings and 200 Suppressions - the time, and the longest the event loop is held.

    .venv/bin/python bench/suppression_recheck.py
    .venv/bin/python bench/suppression_recheck.py --findings 20000 --suppressions 400

In process, with the operator's own code: 10,000 Findings in 100 namespaces (100 each), 200
Suppressions (190 in those namespaces, 10 cluster-wide in the operator's namespace). Two ways:
* in one pass, as the engine did: every Finding rechecked at once, each Suppression's status
  counting over every Finding, each namespace's Report built from every Finding;
* as it does now: rechecks a batch of namespaces at a time (kube/upkeep.py) with the loop
  free in between, statuses from one counting pass, Reports from the namespace's own Findings.
A task that sleeps 1 ms measures the longest stall of the loop meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from kubelet import image_event  # noqa: E402
from pullwatch.core.allowlist import Allowlist  # noqa: E402
from pullwatch.core.detector import Detector  # noqa: E402
from pullwatch.core.pulls import decode_event  # noqa: E402
from pullwatch.core.reports import report_for  # noqa: E402
from pullwatch.core.suppressions import Suppressions, suppression_from_object  # noqa: E402
from pullwatch.kube.kinds import suppressions as suppression_kind  # noqa: E402
from pullwatch.kube.upkeep import recheck  # noqa: E402

OPERATOR_NS = "pullwatch-system"


def build(findings: int, count: int, namespaces: int) -> tuple[Detector, list]:
    detector = Detector(Allowlist())
    per = findings // namespaces
    for i in range(findings):
        ns = f"team-{i // per}"
        ev = image_event("Pulling", ns, f"app{i % per}-7d9f8b6c5d-x7k2p", f"corp/app{i}:1", seq=i)
        detector.observe(decode_event(ev), minute=29_000_000, clock=1_790_000_000.0)
    created = "2026-11-01T00:00:00Z"
    items = []
    for j in range(count):
        cluster = j < count // 20
        meta = {
            "name": f"s{j}",
            "namespace": OPERATOR_NS if cluster else f"team-{j % namespaces}",
            "creationTimestamp": created,
        }
        spec = {
            "reason": "accepted for the benchmark",
            "expires": "2027-01-15T00:00:00Z",
            "rules": ["kubernetes-suspicious-image-pulling"],
            "workloads": [f"app{j % 50}*"],
            "images": [f"corp/app{j}*"],
        }
        if cluster:
            spec["namespaces"] = [f"team-{j}*"]
        obj = {
            "apiVersion": "pullwatch.dev/v1alpha1",
            "kind": "Suppression",
            "metadata": meta,
            "spec": spec,
        }
        s = suppression_from_object(obj, OPERATOR_NS)
        assert not s.problems, s.problems
        items.append((s, obj))
    return detector, items


async def measured(work) -> tuple[float, float]:
    """(seconds, longest stall of the loop) of ``await work()``."""
    longest = 0.0
    done = False

    async def monitor() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last - 0.001)
            last = now

    task = asyncio.create_task(monitor())
    await asyncio.sleep(0.01)
    start = time.perf_counter()
    await work()
    took = time.perf_counter() - start
    done = True
    await task
    return took, longest


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--findings", type=int, default=10_000)
    ap.add_argument("--suppressions", type=int, default=200)
    ap.add_argument("--namespaces", type=int, default=100)
    args = ap.parse_args()
    t = time.perf_counter()
    detector, items = build(args.findings, args.suppressions, args.namespaces)
    print(
        f"{len(detector.states)} Findings, {len(items)} Suppressions "
        f"(built in {time.perf_counter() - t:.1f} s)"
    )
    detector.suppressions = Suppressions([s for s, _ in items])
    now = 1_790_000_000.0
    namespaces = sorted(detector.by_namespace)

    async def one_pass() -> None:
        detector.recheck_suppressions(now)  # every namespace, in one go
        for s, _ in items:  # each status counted over every Finding
            sum(
                1
                for st in detector.states.values()
                if st.suppression is not None
                and (st.suppression["namespace"], st.suppression["name"]) == (s.namespace, s.name)
            )
        for ns in namespaces:  # each Report from every Finding
            report_for(ns, detector.states.values())

    marked: list[str] = []
    kind = suppression_kind(detector, OPERATOR_NS, lambda _: None, Counter())

    async def bounded() -> None:
        await recheck(detector, None, marked.append, clock=lambda: now)
        kind.prepare()  # type: ignore[misc]
        for s, obj in items:
            kind.status(s, obj)
        for ns in namespaces:
            report_for(ns, detector.in_namespace(ns))
            await asyncio.sleep(0)  # the ReportWriter awaits its write between namespaces

    for label, work in (("one pass on the loop (before)", one_pass), ("bounded (now)", bounded)):
        took, stall = await measured(work)
        print(f"{label}: {took:.2f} s in all, longest event-loop stall {stall * 1000:.0f} ms")
    covered = sum(1 for st in detector.states.values() if st.suppression is not None)
    print(f"Findings covered by a Suppression: {covered}")


if __name__ == "__main__":
    asyncio.run(main())
