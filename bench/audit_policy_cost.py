#!/usr/bin/env python3
"""Benchmark: what examples/audit/policy.yaml costs the API server (issue 17).

    .venv/bin/python bench/audit_policy_cost.py [--events 3000] [--pods 300] [--patches 300]
                                               [--runs 2]

Starts a real kube-apiserver on loopback whose only audit backend is a webhook pointing at a
loopback HTTPS receiver in this process (authenticated by the token of
examples/audit/webhook-kubeconfig.yaml), plays one fixed load (Event creates, pod creates,
Deployment patches) and prints, per policy - nothing audited, pullwatch's policy, everything at
Metadata - the API server's CPU time per request and the webhook's posts, entries and bytes, and
for pullwatch's policy the mean size of an entry by resource, verb and level.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hack"))
import localcluster
from benchlib import ROOT, LocalCluster
from localcluster import free_port

NOTHING = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: None\n"
METADATA = (
    "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
    "rules:\n  - level: Metadata\n"
)


class Receiver:
    """The webhook's other end: records each authenticated POST's size and entries."""

    def __init__(self, workdir: Path, token: str):
        self.posts: list[tuple[int, list[dict]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Authorization") != f"Bearer {token}":
                    self.send_response(401)
                else:
                    receiver.posts.append((len(body), json.loads(body).get("items") or []))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(workdir / "tls.crt", workdir / "tls.key")
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def certificates(workdir: Path) -> None:
    """A self-signed serving certificate for 127.0.0.1, which the kubeconfig's CA names."""
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(workdir / "tls.key"), "-out", str(workdir / "tls.crt"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip


def webhook_kubeconfig(workdir: Path, port: int) -> Path:
    text = (ROOT / "examples" / "audit" / "webhook-kubeconfig.yaml").read_text()
    text = text.replace("https://10.96.0.200:8443/audit", f"https://127.0.0.1:{port}/audit")
    text = text.replace("/etc/kubernetes/pullwatch/ca.crt", str(workdir / "tls.crt"))
    text = text.replace("/etc/kubernetes/pullwatch/token", str(workdir / "token"))
    path = workdir / "webhook-kubeconfig.yaml"
    path.write_text(text)
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def event(i: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"web-{i}.pull", "namespace": "load"},
        "involvedObject": {
            "kind": "Pod",
            "namespace": "load",
            "name": f"web-{i}",
            "fieldPath": "spec.containers{web}",
        },
        "reason": "Pulling",
        "message": 'Pulling image "nginx:1.25.3"',
        "source": {"component": "kubelet", "host": "node-1"},
        "type": "Normal",
        "count": 1,
        "firstTimestamp": "2026-12-01T10:00:00Z",
        "lastTimestamp": "2026-12-01T10:00:00Z",
    }


def pod(i: int) -> dict:
    container = {
        "name": "web",
        "image": "nginx:1.25.3",
        "ports": [{"containerPort": 80}],
        "env": [{"name": f"E{j}", "value": "v" * 20} for j in range(10)],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"web-{i}", "namespace": "load", "labels": {"app": "web"}},
        "spec": {"automountServiceAccountToken": False, "containers": [container]},
    }


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "load"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.25.3"}]},
        },
    },
}


def run(name: str, policy: str, args: argparse.Namespace, workdir: Path, token: str) -> list:
    receiver = Receiver(workdir, token)
    localcluster.AUDIT_POLICY = policy
    cluster = LocalCluster(workdir / f"cluster-{name}-{time.monotonic_ns()}")
    cluster.extra_api_args = [
        "--audit-log-path=",  # the webhook is the only backend
        f"--audit-webhook-config-file={webhook_kubeconfig(workdir, receiver.port)}",
        "--audit-webhook-batch-max-wait=1s",
        "--audit-webhook-truncate-enabled=true",
    ]
    try:
        cluster.start()
        cluster.kubectl("create", "namespace", "load")
        cluster.kubectl("create", "serviceaccount", "default", "-n", "load")
        assert cluster.request("POST", "/apis/apps/v1/namespaces/load/deployments", DEPLOYMENT)[0]
        requests = args.events + args.pods + args.patches
        before, started = cpu_seconds(cluster.api.pid), time.monotonic()
        for i in range(args.events):
            assert cluster.request("POST", "/api/v1/namespaces/load/events", event(i))[0] == 201
        for i in range(args.pods):
            assert cluster.request("POST", "/api/v1/namespaces/load/pods", pod(i))[0] == 201
        for i in range(args.patches):
            status, _ = cluster.request(
                "PATCH",
                "/apis/apps/v1/namespaces/load/deployments/web",
                {"spec": {"replicas": 1 + i % 3}},
                content_type="application/merge-patch+json",
            )
            assert status == 200
        wall = time.monotonic() - started
        expected = 0 if policy == NOTHING else requests
        deadline = time.monotonic() + 60  # batch-max-wait is 1 s: the last batch follows shortly
        while sum(len(e) for _, e in receiver.posts) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        used = cpu_seconds(cluster.api.pid) - before
    finally:
        cluster.stop()
        receiver.server.shutdown()
    entries = [e for _, items in receiver.posts for e in items]
    sent = sum(size for size, _ in receiver.posts)
    print(
        f"{name:9s} {requests} requests in {wall:.1f} s: API server CPU {used:.2f} s "
        f"({1000 * used / requests:.2f} ms per request); webhook {len(receiver.posts)} POSTs, "
        f"{len(entries)} entries, {sent / 1e6:.2f} MB ({sent / requests:.0f} B per request)",
        flush=True,
    )
    return entries


def sizes(entries: list[dict]) -> None:
    by_kind: dict[tuple, list[int]] = defaultdict(list)
    for e in entries:
        ref = e.get("objectRef", {})
        key = (e["level"], e["verb"], ref.get("resource"), ref.get("subresource", ""))
        by_kind[key].append(len(json.dumps(e)))
    for key, lengths in sorted(by_kind.items()):
        level, verb, resource, sub = key
        what = resource + (f"/{sub}" if sub else "")
        print(f"  {level:9s} {verb:7s} {what:18s} {sum(lengths) / len(lengths):6.0f} B per entry")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--pods", type=int, default=300)
    parser.add_argument("--patches", type=int, default=300)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    pullwatch = (ROOT / "examples" / "audit" / "policy.yaml").read_text()
    with tempfile.TemporaryDirectory(prefix="pullwatch-audit-cost-") as tmp:
        workdir = Path(tmp)
        certificates(workdir)
        token = secrets.token_urlsafe(32)
        (workdir / "token").write_text(token)
        for _ in range(args.runs):
            run("nothing", NOTHING, args, workdir, token)
            entries = run("pullwatch", pullwatch, args, workdir, token)
            run("metadata", METADATA, args, workdir, token)
        print("pullwatch's policy, by entry:")
        sizes(entries)


if __name__ == "__main__":
    main()
