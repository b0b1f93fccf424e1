"""What the operator benchmarks share: the operator as a process, a watch on Findings, the audit
log's count of pullwatch's writes, etcd's view of what a Finding costs, percentiles."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "tests"))

from localcluster import LocalCluster, daemon, free_port, http_ok, memory_mb  # noqa: E402

PULLWATCH = str(Path(sys.executable).parent / "pullwatch")
SA_USER = "system:serviceaccount:pullwatch-system:pullwatch"


class Operator:
    def __init__(self, cluster: LocalCluster, workdir: Path, *args: str):
        self.cluster, self.workdir, self.args = cluster, workdir, list(args)
        self.health, self.metrics_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self, timeout: float = 600) -> Operator:
        kubeconfig = self.cluster.service_account_kubeconfig("pullwatch-system", "pullwatch")
        log = open(self.workdir / "operator.log", "ab")
        self.started = time.monotonic()
        self.proc = daemon(
            [
                PULLWATCH,
                "run",
                "--standalone",
                f"--liveness=http://127.0.0.1:{self.health}/healthz",
                f"--metrics-address=127.0.0.1:{self.metrics_port}",
                *self.args,
            ],
            env=self.cluster.env(kubeconfig),
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if http_ok(f"http://127.0.0.1:{self.health}/healthz"):
                return self
            if self.proc.poll() is not None:
                raise SystemExit("operator exited; see " + str(self.workdir / "operator.log"))
            time.sleep(0.1)
        raise SystemExit("operator did not become healthy")

    def logs(self) -> str:
        return (self.workdir / "operator.log").read_text(errors="replace")

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        return memory_mb(self.proc.pid, "VmHWM")

    def rss_mb(self) -> float:
        assert self.proc is not None
        return memory_mb(self.proc.pid)

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
            ) as rsp:
                text = rsp.read().decode()
        except OSError:
            return 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return 0.0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class FindingWatch(threading.Thread):
    """When each Finding first appeared (by name), and its workload's name, from a watch."""

    def __init__(self, cluster: LocalCluster):
        super().__init__(daemon=True)
        self.cluster, self.stop = cluster, threading.Event()
        self.seen: dict[str, float] = {}
        self.workload: dict[str, str] = {}

    def run(self) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        while not self.stop.is_set():
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.cluster.port, context=ctx, timeout=5
            )
            try:
                conn.request(
                    "GET",
                    "/apis/pullwatch.dev/v1alpha1/findings?watch=1&timeoutSeconds=600",
                    headers={"Authorization": f"Bearer {self.cluster.token}"},
                )
                rsp = conn.getresponse()
                while not self.stop.is_set():
                    line = rsp.readline()
                    if not line:
                        break
                    ev = json.loads(line)
                    if ev["type"] == "ADDED":
                        name = ev["object"]["metadata"]["name"]
                        self.seen.setdefault(name, time.monotonic())
                        self.workload[name] = (ev["object"]["spec"].get("workload") or {}).get(
                            "name", "(overflow)"
                        )
            except (OSError, http.client.HTTPException, ValueError):
                time.sleep(0.2)
            finally:
                conn.close()


def count_writes(cluster: LocalCluster, since_bytes: int = 0) -> int:
    """pullwatch's writes of Findings (creates, updates, patches) in the audit log since an "
    "offset."""
    n = 0
    with open(cluster.audit_log, "rb") as f:
        f.seek(since_bytes)
        for line in f:
            if b"pullwatch.dev" not in line:
                continue
            e = json.loads(line)
            if (
                e.get("stage") == "ResponseComplete"
                and e["user"]["username"] == SA_USER
                and e["objectRef"].get("resource") == "findings"
                and e["verb"] in ("create", "update", "patch")
            ):
                n += 1
    return n


def etcd_findings(cluster: LocalCluster) -> tuple[int, int, int]:
    """(Findings, total bytes, largest) as etcd stores them: the values under their key prefix."""
    prefix = b"/registry/pullwatch.dev/findings/"
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    count = total = largest = 0
    key = prefix
    while True:
        body = json.dumps(
            {
                "key": base64.b64encode(key).decode(),
                "range_end": base64.b64encode(end).decode(),
                "limit": 1000,
            }
        ).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{cluster.etcd_port}/v3/kv/range", data=body, method="POST"
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            doc = json.loads(r.read())
        kvs = doc.get("kvs") or []
        for kv in kvs:
            size = len(base64.b64decode(kv.get("value", "")))
            count, total, largest = count + 1, total + size, max(largest, size)
        if not doc.get("more") or not kvs:
            return count, total, largest
        key = base64.b64decode(kvs[-1]["key"]) + b"\x00"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")
