#!/usr/bin/env python3
"""Benchmark: the Pod witness on a real API server (etcd + kube-apiserver on loopback; issue 16).

    .venv/bin/python bench/pod_witness.py                       # 20,000 pods, 500 updates/s, 60 s
    .venv/bin/python bench/pod_witness.py --pods 2000 --seconds 10   # a quick look

No kubelet is needed: the pods are created with ``spec.nodeName`` set (nothing schedules them) and
their status is written through the ``status`` subresource as the admin, exactly the object a
kubelet's status update makes (containerStatuses with containerID, imageID, state.running).

Phases, each printing its figures:
 1. baseline  - the operator on a cluster with no pods: its RSS once idle, its idle CPU.
 2. start-up  - N pods (20 namespaces; Deployment-made names and owners; 1 % unapproved images,
                0.25 % kube-hunter) listed at start, in pages: time from the process' start to
                the first judged pod and to the whole inventory, the operator's CPU by then, the
                Findings it made, peak RSS; RSS per pod remembered (the operator started over
                N/2 pods, then over N: the difference), and the fingerprint table's own cost.
 3. ceiling   - status updates the API server takes per second from several client processes,
                as fast as they can (no pacing).
 4. paced     - ``--rate`` updates/s for ``--seconds`` (90 % readiness flips and probe noise,
                which change nothing that ran; 10 % container restarts, which do): the rate
                really sustained, the operator's CPU per 1,000 updates (idle CPU taken off), the
                pods it judged again, and its API requests per update beyond the pod watch (the
                API server's audit log, every request of the operator's ServiceAccount).
 5. 150,000 pods, extrapolated from the measured per-pod and per-update costs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import ssl
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
import localcluster
from benchlib import ROOT, SA_USER, LocalCluster, Operator

NAMESPACES = 20
REGISTRY = "registry.corp"
SCANNER = "docker.io/aquasec/kube-hunter:0.6.8"
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# Every request of the operator's ServiceAccount is logged (Metadata: no bodies), so that its API
# requests per update are counted by the API server itself, not by the operator.
AUDIT_POLICY = localcluster.AUDIT_POLICY.replace(
    "  - level: None\n",
    f"  - level: Metadata\n    users: [{SA_USER}]\n  - level: None\n",
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rand5(i: int) -> str:
    return "".join(ALPHABET[(i // 27**k) % 27] for k in range(5))


def pod_names(n: int) -> list[tuple[str, str, str, str]]:
    """(namespace, pod, its ReplicaSet, image) for n pods: 25 pods per Deployment."""
    out = []
    for i in range(n):
        ns = f"team-{i % NAMESPACES}"
        app = i // (25 * NAMESPACES)
        rs_hash = "7d9f8b6c" + ALPHABET[app % 27 + 0] * 2
        if i % 400 == 7:
            image = SCANNER
        elif i % 100 == 3:
            image = f"docker.io/someone/tool-{i % 37}:1"  # nobody allowed it
        else:
            image = f"{REGISTRY}/apps/app-{app}:1.{app % 9}"
        out.append((ns, f"app-{app}-{rs_hash}-{rand5(i)}", f"app-{app}-{rs_hash}", image))
    return out


def pod_body(pod: str, rs: str, image: str) -> dict:
    template = rs.rsplit("-", 1)[1]
    return {
        "metadata": {
            "name": pod,
            "labels": {"app": rs.rsplit("-", 1)[0], "pod-template-hash": template},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": rs,
                    "uid": "00000000-0000-0000-0000-" + template.rjust(12, "0")[-12:],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "nodeName": f"node-{hash(pod) % 50}",
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": image}],
        },
    }


def status_body(pod: str, image: str, restarts: int, ready: bool, probe: int) -> dict:
    digest = (image.encode().hex() * 8)[:64]  # the replicas of an image run one digest
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_790_000_000 + restarts * 60))
    repo = image.rsplit(":", 1)[0]
    return {
        "status": {
            "phase": "Running",
            "hostIP": "10.0.0.1",
            "podIP": f"10.1.{probe % 250}.{restarts % 250}",
            "startTime": "2026-09-21T12:00:00Z",
            "conditions": [
                {
                    "type": "Ready",
                    "status": str(ready),
                    "lastProbeTime": None,
                    "lastTransitionTime": f"2026-09-21T12:{probe % 60:02d}:00Z",
                },
            ],
            "containerStatuses": [
                {
                    "name": "app",
                    "image": image,
                    "imageID": f"{repo}@sha256:{digest}",
                    "containerID": f"containerd://{restarts:04d}{digest[4:]}",
                    "ready": ready,
                    "started": True,
                    "restartCount": restarts,
                    "state": {"running": {"startedAt": started}},
                }
            ],
        }
    }


class Client:
    """The admin, on one kept-alive HTTPS connection (one per process)."""

    def __init__(self, port: int, token: str):
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def call(self, method: str, path: str, body: dict, content_type: str) -> int:
        headers = {**self.headers, "Content-Type": content_type}
        self.conn.request(method, path, body=json.dumps(body).encode(), headers=headers)
        rsp = self.conn.getresponse()
        rsp.read()
        return rsp.status


def _create(args: tuple) -> int:
    port, token, chunk = args
    c, done = Client(port, token), 0
    for ns, pod, rs, image in chunk:
        status = c.call(
            "POST", f"/api/v1/namespaces/{ns}/pods", pod_body(pod, rs, image), "application/json"
        )
        if status not in (200, 201, 409):
            raise SystemExit(f"create {ns}/{pod}: {status}")
        status = c.call(
            "PATCH",
            f"/api/v1/namespaces/{ns}/pods/{pod}/status",
            status_body(pod, image, 0, True, 0),
            "application/merge-patch+json",
        )
        if status != 200:
            raise SystemExit(f"status {ns}/{pod}: {status}")
        done += 1
    return done


def _update(args: tuple) -> tuple[int, int, float]:
    """Status updates at ``rate``/s (0: as fast as possible) for ``seconds``: (sent, restarts,
    seconds taken)."""
    port, token, chunk, rate, seconds, seed = args
    rng, c = random.Random(seed), Client(port, token)
    restarts: Counter[str] = Counter()
    sent = restarted = 0
    start = time.monotonic()
    while (now := time.monotonic()) - start < seconds:
        if rate and sent >= (now - start) * rate:
            time.sleep(min(0.01, sent / rate - (now - start)))
            continue
        ns, pod, _, image = rng.choice(chunk)
        if rng.random() < 0.10:
            restarts[pod] += 1
            restarted += 1
        body = status_body(pod, image, restarts[pod], rng.random() < 0.5, sent)
        path = f"/api/v1/namespaces/{ns}/pods/{pod}/status"
        if c.call("PATCH", path, body, "application/merge-patch+json") != 200:
            raise SystemExit(f"update {ns}/{pod} refused")
        sent += 1
    return sent, restarted, time.monotonic() - start


def run_clients(fn, jobs: list[tuple]) -> list:
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        return pool.map(fn, jobs)


def audit_requests(cluster: LocalCluster, since: int) -> Counter[tuple[str, str]]:
    """The operator's requests since an offset of the audit log, by (verb, resource)."""
    found: Counter[tuple[str, str]] = Counter()
    with open(cluster.audit_log, "rb") as f:
        f.seek(since)
        for line in f:
            if SA_USER.encode() not in line:
                continue
            e = json.loads(line)
            if e["user"]["username"] == SA_USER and e["stage"] in ("ResponseComplete", "Panic"):
                found[(e["verb"], (e.get("objectRef") or {}).get("resource", e["requestURI"]))] += 1
    return found


def wait_metric(
    op: Operator, name: str, at_least: float, timeout: float, poll: float = 0.05
) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if op.metric(name) >= at_least:
            return time.monotonic()
        time.sleep(poll)
    raise SystemExit(
        f"{name} did not reach {at_least} in {timeout:.0f}s; see {op.workdir}/operator.log"
    )


def expected_findings(pods: list[tuple[str, str, str, str]]) -> int:
    """The Findings the inventory makes: one per (rule, namespace, Deployment, repository)."""
    found = set()
    for ns, _, rs, image in pods:
        if not image.startswith(f"{REGISTRY}/apps/"):
            found.add(("suspicious", ns, rs.rsplit("-", 1)[0], image.rsplit(":", 1)[0]))
        if image == SCANNER:
            found.add(("scanner", ns, rs.rsplit("-", 1)[0], image.rsplit(":", 1)[0]))
    return len(found)


def wait_findings(cluster: LocalCluster, n: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = cluster.request("GET", "/apis/pullwatch.dev/v1alpha1/findings")
        if status == 200 and len(body["items"]) >= n:  # type: ignore[index]
            return time.monotonic()
        time.sleep(0.2)
    raise SystemExit(f"fewer than {n} Findings after {timeout:.0f}s")


def fingerprint_bytes(n: int) -> float:
    """What the Pod witness' table costs per pod, alone (its dict of two ints per pod)."""
    import tracemalloc

    tracemalloc.start()
    table = {hash(f"uid-{i}"): hash((f"c{i}", f"id{i}", "t")) for i in range(n)}
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del table
    return size / n


def say(text: str) -> None:
    print(text, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pods", type=int, default=20_000)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()

    localcluster.AUDIT_POLICY = AUDIT_POLICY
    workdir = Path(tempfile.mkdtemp(prefix="pullwatch-bench-pods-"))
    cluster = LocalCluster(workdir).start()
    op = None
    try:
        cluster.kubectl("apply", "-k", str(ROOT / "manifests"))
        cluster.kubectl(
            "wait", "--for=condition=established", "--timeout=60s", "crd/findings.pullwatch.dev"
        )
        allowed = {
            "apiVersion": "pullwatch.dev/v1alpha1",
            "kind": "AllowedImages",
            "metadata": {"name": "apps"},
            "spec": {"images": [f"{REGISTRY}/apps/**"]},
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(allowed))
        for i in range(NAMESPACES):
            cluster.kubectl("create", "namespace", f"team-{i}")
            cluster.request(
                "POST",
                f"/api/v1/namespaces/team-{i}/serviceaccounts",
                {"metadata": {"name": "default"}, "automountServiceAccountToken": False},
            )

        # 1. baseline
        op = Operator(cluster, workdir).start()
        wait_metric(op, "pullwatch_active", 1, 120)
        time.sleep(5)  # start-up done: what follows is idle
        cpu0, t0 = cpu_seconds(op.proc.pid), time.monotonic()
        time.sleep(10)
        idle_cpu = (cpu_seconds(op.proc.pid) - cpu0) / (time.monotonic() - t0)
        base_rss = op.rss_mb()
        say(f"1. baseline, no pods: RSS {base_rss:.1f} MB, idle CPU {idle_cpu:.1%} of a core")
        op.stop()

        # 2. start-up over N/2, then N pods: the difference is what a pod remembered costs
        pods = pod_names(args.pods)
        half = args.pods // 2
        starts = {}
        for batch, total in ((pods[:half], half), (pods[half:], args.pods)):
            t = time.monotonic()
            chunks = [
                (cluster.port, cluster.token, batch[k :: args.clients]) for k in range(args.clients)
            ]
            made = sum(run_clients(_create, chunks))
            made_s = time.monotonic() - t
            say(
                f"   {made:,} more pods created and their status written in {made_s:.0f}s "
                f"({2 * made / made_s:,.0f} requests/s, {args.clients} clients)"
            )
            if op is not None:
                op.stop()
            op = Operator(cluster, workdir)
            spawned = time.monotonic()
            op.start()
            first = wait_metric(op, "pullwatch_pods_examined_total", 1, 300, poll=0.02)
            whole = wait_metric(op, "pullwatch_pods_remembered", total, 900)
            cpu = cpu_seconds(op.proc.pid)
            expected = expected_findings(pods[:total])
            written = wait_findings(cluster, expected, 600)
            starts[total] = (first - spawned, whole - spawned, written - spawned, cpu, op.rss_mb())
        first, whole, written, cpu, rss = starts[args.pods]
        per_pod = (rss - starts[half][4]) * 2**20 / (args.pods - half)
        table = fingerprint_bytes(args.pods)
        say(f"2. start-up over {args.pods:,} pods (listed in pages of 500):")
        say(
            f"   process start -> first judged pod {first:.2f}s, -> whole inventory {whole:.1f}s "
            f"({args.pods / (whole - first):,.0f} pods/s), operator CPU {cpu:.1f}s by then; "
            f"its {expected} Findings written {written:.1f}s after the start"
        )
        say(
            f"   peak RSS {op.peak_rss_mb():.1f} MB, RSS {rss:.1f} MB ({starts[half][4]:.1f} MB "
            f"with {half:,} pods): {per_pod:,.0f} bytes per pod remembered; the fingerprint "
            f"table alone {table:.0f} bytes per pod (target < 200)"
        )

        # 3. ceiling
        jobs = [
            (cluster.port, cluster.token, pods[k :: args.clients], 0, 15, k)
            for k in range(args.clients)
        ]
        results = run_clients(_update, jobs)
        ceiling = sum(r[0] for r in results) / max(r[2] for r in results)
        say(f"3. status updates the API server takes, {args.clients} clients: {ceiling:,.0f}/s")
        time.sleep(3)

        # 4. paced
        mark = cluster.audit_log.stat().st_size
        judged0 = op.metric("pullwatch_pods_examined_total")
        cpu0 = cpu_seconds(op.proc.pid)
        jobs = [
            (cluster.port, cluster.token, pods[k :: args.clients], args.rate / args.clients,
             args.seconds, 100 + k)
            for k in range(args.clients)
        ]  # fmt: skip
        results = run_clients(_update, jobs)
        sent, restarted = sum(r[0] for r in results), sum(r[1] for r in results)
        took = max(r[2] for r in results)
        time.sleep(2)  # the last updates reach the operator
        cpu = cpu_seconds(op.proc.pid) - cpu0
        busy = max(0.0, cpu - idle_cpu * (took + 2))
        judged = op.metric("pullwatch_pods_examined_total") - judged0
        requests = audit_requests(cluster, mark)
        beyond = sum(v for k, v in requests.items() if k[0] != "watch")
        say(
            f"4. paced at {args.rate}/s for {args.seconds}s: {sent:,} updates, "
            f"{sent / took:,.0f}/s sustained ({restarted:,} container restarts)"
        )
        say(
            f"   operator CPU {cpu:.1f}s: {1000 * busy / sent:.2f} CPU-seconds per 1,000 updates "
            f"(idle taken off); pods judged again: {judged:,.0f}"
        )
        say(
            f"   operator API requests {dict(requests)}; beyond its watches: {beyond} "
            f"({beyond / sent:.4f} per update)"
        )

        # 5. extrapolation
        rss_150k = rss + (150_000 - args.pods) * per_pod / 2**20
        say("5. at 150,000 pods (linear in the measured costs):")
        say(
            f"   start-up inventory ~{150_000 * (whole - first) / args.pods:.0f}s; RSS "
            f"~{rss_150k:.0f} MB, of which the fingerprints {150_000 * table / 2**20:.0f} MB"
        )
        say(
            f"   one core: ~{sent / max(busy, 1e-9):,.0f} updates/s; a status churn of 250/s "
            f"(each pod updated every 10 minutes) costs ~{250 * busy / sent:.0%} of a core"
        )
    finally:
        if op is not None:
            op.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
