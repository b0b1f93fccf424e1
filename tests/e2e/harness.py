"""End-to-end helpers: the cluster and the operator as the tests speak of them.

Every process a test starts goes through ``spawn``: it is registered, and killed (its whole
process group) when the test session ends, however it ends - a failed assertion, a start-up that
never became healthy, an interrupted run.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "tests"))

from kubelet import for_create  # noqa: E402
from localcluster import LocalCluster, free_port, http_ok  # noqa: E402

PULLWATCH = str(Path(sys.executable).parent / "pullwatch")
SA = ("pullwatch-system", "pullwatch")
SCANNER, SUSPICIOUS = "kubernetes-scanner-image-pulling", "kubernetes-suspicious-image-pulling"
_SPAWNED: list[subprocess.Popen] = []


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
    """Start a process in its own group and register it for killing at the end."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    _SPAWNED.append(proc)
    return proc


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGKILL:
            proc.wait()


@atexit.register
def kill_everything() -> None:
    for proc in _SPAWNED:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            kill(proc)


def wait_for(predicate: Callable[[], Any], timeout: float = 20, interval: float = 0.2, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate} (last: {last!r})")


class Cluster:
    """The running control plane plus helpers the tests speak in."""

    def __init__(self, local: LocalCluster):
        self.local = local
        self.kubectl = local.kubectl

    def namespace(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.kubectl("create", "namespace", name)
        return name

    def create_event(self, ev: dict[str, Any]) -> dict[str, Any]:
        """POST an Event exactly as the kubelet does; returns the stored object."""
        body = for_create(ev)
        status, stored = self.local.request("POST", f"/api/v1/namespaces/{body['metadata']['namespace']}/events", body)
        assert status == 201, (status, stored)
        return stored  # type: ignore[return-value]

    def set_count(self, namespace: str, name: str, count: int) -> None:
        """What the kubelet's recorder does for a repeat: PATCH count and lastTimestamp."""
        status, rsp = self.local.request(
            "PATCH", f"/api/v1/namespaces/{namespace}/events/{name}",
            {"count": count, "lastTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            content_type="application/merge-patch+json")
        assert status == 200, (status, rsp)

    def findings(self, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        where = ["-n", namespace] if namespace else ["-A"]
        items = json.loads(self.kubectl("get", "findings", *where, "-o", "json").stdout)["items"]
        return {f["metadata"]["name"]: f for f in items}

    def counts(self, namespace: str | None = None) -> dict[str, int]:
        return {n: (f.get("status") or {}).get("count", 0) for n, f in self.findings(namespace).items()}

    def by_workload(self, namespace: str) -> dict[tuple[str, str], dict[str, Any]]:
        """{(rule, workload name): Finding}; the overflow Finding under (rule, "(overflow)")."""
        out = {}
        for f in self.findings(namespace).values():
            workload = (f["spec"].get("workload") or {}).get("name", "(overflow)")
            out[(f["spec"]["rule"], workload)] = f
        return out

    def apply(self, obj: dict[str, Any] | str, check: bool = True) -> subprocess.CompletedProcess:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        return self.kubectl("apply", "-f", "-", input=text, check=check)


class Operator:
    """`pullwatch run` as a child process, authenticated as the operator's ServiceAccount."""

    def __init__(self, cluster: Cluster, workdir: Path, *args: str):
        self.cluster = cluster
        self.kubeconfig = cluster.local.service_account_kubeconfig(*SA)
        self.health = free_port()
        self.args = ["--liveness", f"http://127.0.0.1:{self.health}/healthz", *args]
        self.log_path = workdir / f"operator-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "Operator":
        self.log = open(self.log_path, "ab")
        self.proc = spawn([PULLWATCH, "run", *self.args], stdout=self.log, stderr=self.log,
                          env=self.cluster.local.env(self.kubeconfig))
        if wait:
            try:
                wait_for(self.healthy, 30, what="the operator's liveness endpoint")
                wait_for(lambda: "processing Events" in self.logs() or "standing by" in self.logs()
                         or "Pausing operations" in self.logs(), 60, what="the operator to start counting")
            except BaseException:
                self.kill()  # a start-up that failed must not leave the process behind
                raise
        return self

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
        return http_ok(f"http://127.0.0.1:{self.health}/healthz")

    def kill(self) -> None:
        if self.proc is not None:
            kill(self.proc)

    def stop(self, timeout: float = 40) -> int | None:
        """SIGTERM, as Kubernetes does; SIGKILL after ``timeout``. The exit code."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc is not None else None

    def probe(self) -> tuple[int, Any]:
        """The liveness endpoint's HTTP status and body."""
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health}/healthz", timeout=5) as rsp:
                return rsp.status, json.loads(rsp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()[:500]
        except OSError as exc:
            return 0, str(exc)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_mb(self) -> float:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0
