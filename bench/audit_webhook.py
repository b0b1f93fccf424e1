#!/usr/bin/env python3
"""Benchmark: the audit webhook receiver and the audit witness (issue 17).

    .venv/bin/python bench/audit_webhook.py                    # 250 batches of 400 entries
    .venv/bin/python bench/audit_webhook.py --batches 50       # a quick look

The receiver (kube/auditserver.py) and the audit witness (kube/witnesses/audit.py) run in this
process on one event loop, as in the operator, with the detector behind them (an allowlist of
the corporate registry; every observation goes through ``Detector.observe``, pulls and people
alike). A client in another process POSTs over HTTPS on loopback what the API server's webhook
backend sends: ``audit.k8s.io/v1`` EventLists of 400 entries (its default batch size), one batch
at a time as the backend does, authenticated with a client certificate. The entries are those the
shipped policy logs: Event creates by the nodes (Request level: the Event itself; 80 %: Pulling,
Pulled, already present and, a quarter, Events without an image such as Started; of 1,000
workloads' allowed images but for a few unlisted and scanner pulls), pod creates by people with
their spec (10 %), Deployment creates and patches by people (Metadata; 10 %).

Printed:
 1. throughput - entries per second from the first POST to the last entry processed (the queue
    empty), and this process's CPU per 1,000 entries (one core: the loop is single-threaded);
 2. latency    - from a POST holding one scanner pull to its detection (the Finding marked for
    the writer), over single-entry POSTs spaced out; the write itself follows within the writer's
    --flush-interval (0.25 s) plus one API request (see docs/benchmarks.md);
 3. memory     - the ActorMap holding 100,000 workloads (tracemalloc), with 1,000 people and a
    few changes per workload;
 4. with ``--real``: the real API server (etcd + kube-apiserver 1.20.2 on loopback, the shipped
    policy, ``--audit-webhook-batch-max-wait=1s``) and the operator: pull Events created as the
    node, one at a time; from each create to its Finding written (the Event watch), and to its
    Finding saying who wrote it (``spec.reportedBy.verified``: the webhook's batch, decoded,
    counted once and written).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import ssl
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "bench"))

from certs import CA, webhook_config  # noqa: E402
from kubelet import audit_entries, image_event  # noqa: E402
from pullwatch.core.actors import ActorMap  # noqa: E402
from pullwatch.core.allowlist import Allowlist, policy_from_object  # noqa: E402
from pullwatch.core.detector import Detector  # noqa: E402
from pullwatch.core.observations import ActorChange  # noqa: E402
from pullwatch.core.pulls import Actor  # noqa: E402
from pullwatch.kube.auditserver import AuditServer  # noqa: E402
from pullwatch.kube.options import AuditWebhook  # noqa: E402
from pullwatch.kube.witnesses.audit import AuditWitness  # noqa: E402

BATCH = 400
APPS = 1000  # workloads, each in one of 40 namespaces, running one of 3 tags
PEOPLE = [f"user{i}@corp.example" for i in range(50)]


def pod_create(ns: str, pod: str, image: str, user: str, audit_id: str) -> dict:
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Request",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "requestURI": f"/api/v1/namespaces/{ns}/pods",
        "verb": "create",
        "user": {"username": user, "groups": ["dev", "system:authenticated"]},
        "sourceIPs": ["10.20.30.40"],
        "userAgent": "kubectl/v1.29.4 (linux/amd64) kubernetes/55019c8",
        "objectRef": {"resource": "pods", "namespace": ns, "name": pod, "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 201},
        "requestObject": {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": pod, "namespace": ns, "labels": {"app": pod.split("-")[0]}},
            "spec": {
                "containers": [
                    {"name": "app", "image": image, "resources": {"limits": {"cpu": "1"}}},
                    {"name": "sidecar", "image": "registry.corp/mesh/proxy:1.20"},
                ]
            },
        },
        "requestReceivedTimestamp": "2026-12-01T10:00:00.000000Z",
        "stageTimestamp": "2026-12-01T10:00:00.004000Z",
    }


def deployment_write(ns: str, name: str, user: str, audit_id: str, verb: str) -> dict:
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "requestURI": f"/apis/apps/v1/namespaces/{ns}/deployments/{name}",
        "verb": verb,
        "user": {"username": user, "groups": ["dev", "system:authenticated"]},
        "sourceIPs": ["10.20.30.41"],
        "userAgent": "argocd-application-controller/v2.9",
        "objectRef": {
            "resource": "deployments",
            "namespace": ns,
            "name": name,
            "apiGroup": "apps",
            "apiVersion": "v1",
        },
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2026-12-01T10:00:00.000000Z",
        "stageTimestamp": "2026-12-01T10:00:00.004000Z",
    }


def make_batches(n: int, seed: int = 7) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    seq = 0
    for b in range(n):
        items = []
        for _ in range(BATCH):
            seq += 1
            n = rnd.randrange(APPS)
            ns, app = f"team-{n % 40}", f"app{n}"
            pod = f"{app}-7d9f8b6c5d-{seq:05d}"[:63]
            roll = rnd.random()
            if roll < 0.8:
                image = (
                    "aquasec/kube-hunter:0.6.8"
                    if roll < 0.001
                    else "docker.io/evil/miner:1"
                    if roll < 0.01
                    else f"registry.corp/{app}/server:{n % 3}"
                )
                kind = ("Pulling", "Pulled", "Present", None)[int(roll * 40) % 4]
                node = f"node-{rnd.randrange(500)}"
                ev = image_event(kind or "Pulling", ns, pod, image, node=node, seq=seq)
                if kind is None:  # Scheduled, Created, Started...: no image, only who wrote it
                    ev.update(reason="Started", message="Started container app")
                (entry,) = audit_entries(ev, f"b{b}-{seq}", stages=("ResponseComplete",), node=node)
                entry["level"] = "Request"
                entry.pop("responseObject", None)
            elif roll < 0.9:
                entry = pod_create(
                    ns,
                    pod,
                    f"registry.corp/{app}/server:{n % 3}",
                    rnd.choice(PEOPLE),
                    f"b{b}-{seq}",
                )
            else:
                entry = deployment_write(
                    ns,
                    app,
                    rnd.choice(PEOPLE),
                    f"b{b}-{seq}",
                    rnd.choice(("create", "patch", "update")),
                )
            items.append(entry)
        out.append(
            json.dumps(
                {
                    "kind": "EventList",
                    "apiVersion": "audit.k8s.io/v1",
                    "metadata": {},
                    "items": items,
                }
            ).encode()
        )
    return out


def client(
    port: int,
    ca: str,
    cert: str,
    key: str,
    bodies: list[bytes],
    pause: float,
    done: multiprocessing.Queue,
) -> None:
    """POST each body in turn (one at a time, as the webhook backend does); the send times."""
    import http.client

    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
    sent = []
    for body in bodies:
        sent.append(time.time())
        conn.request(
            "POST", "/audit?timeout=30s", body=body, headers={"Content-Type": "application/json"}
        )
        rsp = conn.getresponse()
        rsp.read()
        assert rsp.status == 200, rsp.status
        if pause:
            time.sleep(pause)
    conn.close()
    done.put(sent)


def detector() -> Detector:
    policy = policy_from_object(
        {
            "apiVersion": "pullwatch.dev/v1alpha1",
            "kind": "AllowedImages",
            "metadata": {"name": "corp"},
            "spec": {"images": ["registry.corp/**"]},
        }
    )
    return Detector(Allowlist([policy]))


async def serve(pki: dict, bodies: list[bytes], pause: float, probe=None) -> tuple:
    det = detector()
    detected: list[float] = []

    def observe(obs) -> bool:
        hit = bool(det.observe(obs, clock=time.time()))
        if hit and probe is not None and probe(obs):
            detected.append(time.time())
        return hit

    settings = AuditWebhook(
        "127.0.0.1:0",
        pki["server"].cert,
        pki["server"].key,
        client_ca=str(pki["ca"].pair.cert),
        queue_bytes=1 << 30,
    )
    server = AuditServer(settings)
    await server.start()
    witness = AuditWitness(server.queue, observe, observe)
    task = asyncio.create_task(witness.run())
    total = sum(body.count(b'"auditID"') for body in bodies)
    spawn = multiprocessing.get_context("spawn")
    done = spawn.Queue()
    proc = spawn.Process(
        target=client,
        args=(
            server.port,
            str(pki["ca"].pair.cert),
            str(pki["client"].cert),
            str(pki["client"].key),
            bodies,
            pause,
            done,
        ),
    )
    cpu0 = time.process_time()
    proc.start()
    sent = await asyncio.to_thread(done.get)
    while witness.entries < total:
        await asyncio.sleep(0.001)
    finished = time.time()
    cpu = time.process_time() - cpu0
    proc.join()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await server.stop()
    return sent, finished, cpu, total, detected, det


def actor_map_memory(workloads: int = 100_000) -> float:
    rnd = random.Random(3)
    people = [
        Actor(
            f"user{i}@corp.example",
            ("dev", "system:authenticated"),
            (f"10.1.{i // 250}.{i % 250}",),
            "kubectl/v1.29.4 (linux/amd64)",
        )
        for i in range(1000)
    ]
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    m = ActorMap(capacity=workloads * 2)
    for w in range(workloads):
        for k in range(rnd.choice((1, 1, 2, 3))):
            m.observe(
                ActorChange(
                    f"team-{w % 400}",
                    f"app-{w}",
                    "Deployment",
                    rnd.choice(people),
                    ("create deployments", "patch deployments")[k > 0],
                    f"2026-12-01T10:{w % 60:02d}:{k:02d}Z",
                )
            )
    after = tracemalloc.take_snapshot()
    size = sum(s.size_diff for s in after.compare_to(before, "filename"))
    tracemalloc.stop()
    assert len(m) == workloads
    return size


def real_latency(samples: int) -> None:
    from benchlib import Operator
    from localcluster import LocalCluster, free_port

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ca = CA(work / "pki")
        server = ca.issue("server", "pullwatch", server=True)
        client = ca.issue("client", "kube-apiserver", server=False)
        port = free_port()
        webhook_config(work / "webhook.kubeconfig", port, ca, client)
        local = LocalCluster(work / "cluster")
        local.extra_api_args = [
            f"--audit-policy-file={ROOT / 'examples' / 'audit' / 'policy.yaml'}",
            f"--audit-webhook-config-file={work / 'webhook.kubeconfig'}",
            "--audit-webhook-batch-max-wait=1s",
            "--audit-webhook-initial-backoff=1s",
        ]
        op = None
        try:
            local.start()
            local.kubectl("apply", "-k", str(ROOT / "manifests"))
            local.kubectl(
                "wait", "--for=condition=established", "--timeout=60s", "crd/findings.pullwatch.dev"
            )
            op = Operator(
                local,
                work,
                f"--audit-webhook-address=127.0.0.1:{port}",
                f"--audit-webhook-cert={server.cert}",
                f"--audit-webhook-key={server.key}",
                f"--audit-webhook-client-ca={ca.pair.cert}",
            ).start()
            while "processing Events" not in op.logs():
                time.sleep(0.1)
            local.kubectl("create", "namespace", "lat")
            written, verified = [], []
            for i in range(samples):
                pod = f"scan{i}-7d9f8b6c5d-abcde"
                ev = image_event(
                    "Pulling",
                    "lat",
                    pod,
                    "aquasec/kube-hunter:0.6.8",
                    node=LocalCluster.NODE,
                    seq=i,
                )
                body = {k: v for k, v in ev.items() if v is not None}
                body["metadata"] = {"name": ev["metadata"]["name"], "namespace": "lat"}
                t0 = time.monotonic()
                status, _ = local.request(
                    "POST", "/api/v1/namespaces/lat/events", body, token=local.node_token
                )
                assert status == 201, status
                seen = None
                while time.monotonic() - t0 < 30:
                    _, found = local.request(
                        "GET", "/apis/pullwatch.dev/v1alpha1/namespaces/lat/findings"
                    )
                    mine = [
                        f
                        for f in found["items"]
                        if f["spec"]["rule"].startswith("kubernetes-scanner")
                        and f["spec"]["workload"]["name"].startswith(f"scan{i}")
                    ]
                    if mine and seen is None and (mine[0].get("status") or {}).get("count"):
                        seen = time.monotonic() - t0
                    if mine and mine[0]["spec"]["reportedBy"].get("verified") is True:
                        written.append(seen or time.monotonic() - t0)
                        verified.append(time.monotonic() - t0)
                        break
                    time.sleep(0.02)
            for name, values in (
                ("Finding written (Event watch)", written),
                ("its author verified (webhook)", verified),
            ):
                values.sort()
                print(
                    f"real API server, pull Event create -> {name}: median "
                    f"{statistics.median(values):.2f} s, max {values[-1]:.2f} s "
                    f"({len(values)} samples)"
                )
        finally:
            if op is not None and op.proc is not None:
                op.proc.kill()
                op.proc.wait()
            local.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--batches", type=int, default=250)
    ap.add_argument("--latency-samples", type=int, default=40)
    ap.add_argument(
        "--real",
        type=int,
        default=0,
        metavar="N",
        help="also N pull Events through the real API server and operator",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ca = CA(Path(tmp))
        pki = {
            "ca": ca,
            "server": ca.issue("server", "pullwatch", server=True),
            "client": ca.issue("client", "kube-apiserver", server=False),
        }
        bodies = make_batches(args.batches)
        mb = sum(map(len, bodies)) / 1e6
        sent, finished, cpu, total, _, det = asyncio.run(serve(pki, bodies, 0.0))
        wall = finished - sent[0]
        print(
            f"throughput: {total} entries in {len(bodies)} POSTs ({mb:.1f} MB) in {wall:.2f} s"
            f" = {total / wall:,.0f} entries/s; receiver CPU {cpu:.2f} s "
            f"({cpu / total * 1000 * 1000:.1f} ms per 1,000 entries); "
            f"{len(det.states)} Findings"
        )
        print(
            f"one core keeps up with {total / cpu:,.0f} entries/s (entries per CPU-second of "
            "the receiver's process; the wall-clock figure above shares the machine with the "
            "client process)"
        )

        # latency: one scanner pull per POST, spaced out (the API server's 1 s batches)
        probes = []
        for i in range(args.latency_samples):
            ev = image_event(
                "Pulling",
                "lat",
                f"scan{i}-7d9f8b6c5d-abcde",
                "aquasec/kube-hunter:0.6.8",
                node="node-1",
                seq=i,
            )
            (entry,) = audit_entries(ev, f"lat-{i}", stages=("ResponseComplete",), node="node-1")
            probes.append(
                json.dumps(
                    {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [entry]}
                ).encode()
            )
        sent, _, _, _, detected, _ = asyncio.run(
            serve(pki, probes, 0.05, probe=lambda obs: obs.namespace == "lat")
        )
        lat = sorted((d - s) * 1000 for s, d in zip(sent, detected))
        print(
            f"latency POST -> detection: median {statistics.median(lat):.1f} ms, "
            f"p95 {lat[int(len(lat) * 0.95) - 1]:.1f} ms, max {lat[-1]:.1f} ms "
            f"({len(lat)} samples)"
        )
    size = actor_map_memory()
    print(f"ActorMap at 100,000 workloads: {size / 1e6:.1f} MB ({size / 100_000:.0f} B/workload)")
    if args.real:
        real_latency(args.real)


if __name__ == "__main__":
    main()
