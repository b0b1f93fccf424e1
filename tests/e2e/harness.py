"""End-to-end helpers: the cluster and the operator as the tests speak of them.

Every process a test starts goes through ``spawn``: it is registered, and killed (its whole
process group) when the test session ends, however it ends - a failed assertion, a start-up that
never became healthy, an interrupted run.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "tests"))

from kubelet import for_create  # noqa: E402
from localcluster import LocalCluster, daemon, free_port, http_ok, memory_mb  # noqa: E402

PULLWATCH = str(Path(sys.executable).parent / "pullwatch")
SA = ("pullwatch-system", "pullwatch")
SCANNER, SUSPICIOUS = "kubernetes-scanner-image-pulling", "kubernetes-suspicious-image-pulling"
_SPAWNED: list[subprocess.Popen] = []


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
    """Start a process in its own group and register it for killing at the end."""
    proc = daemon(cmd, **kwargs)
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


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 20,
    interval: float = 0.2,
    what: str | Callable[[], str] = "",
) -> Any:
    """Poll ``predicate`` until it returns something true (and return that); ``what`` (or what
    it returns when called, at the time out) says what was awaited."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    said = what() if callable(what) else what
    raise AssertionError(
        f"timed out after {timeout}s waiting for {said or predicate} (last: {last!r})"[:5000]
    )


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
        status, stored = self.local.request(
            "POST", f"/api/v1/namespaces/{body['metadata']['namespace']}/events", body
        )
        assert status == 201, (status, stored)
        return stored  # type: ignore[return-value]

    def create_events(self, events: list[dict[str, Any]], workers: int = 6) -> list[dict[str, Any]]:
        """POST many Events at once, as a node's kubelets do (in parallel, each on its own
        connection); the stored objects, in order."""
        bodies = [for_create(ev) for ev in events]
        answers = self.local.requests(
            [
                ("POST", f"/api/v1/namespaces/{b['metadata']['namespace']}/events", b)
                for b in bodies
            ],
            workers,
        )
        failed = [(status, stored) for status, stored in answers if status != 201]
        assert not failed, failed[:3]
        return [stored for _, stored in answers]  # type: ignore[misc]

    def set_count(self, namespace: str, name: str, count: int) -> None:
        """What the kubelet's recorder does for a repeat: PATCH count and lastTimestamp."""
        status, rsp = self.local.request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/events/{name}",
            {"count": count, "lastTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            content_type="application/merge-patch+json",
        )
        assert status == 200, (status, rsp)

    def findings(self, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        """{name: Finding} of a namespace (or all), read from the API (what `kubectl get -o json`
        reads, without a kubectl process per poll)."""
        where = f"/namespaces/{namespace}" if namespace else ""
        status, answer = self.local.request("GET", f"/apis/pullwatch.dev/v1alpha1{where}/findings")
        assert status == 200, (status, answer)
        return {f["metadata"]["name"]: f for f in answer["items"]}  # type: ignore[index]

    def finding_count(self, namespace: str) -> int:
        """How many Findings a namespace has, without reading them all."""
        path = f"/apis/pullwatch.dev/v1alpha1/namespaces/{namespace}/findings?limit=1"
        status, answer = self.local.request("GET", path)
        assert status == 200, (status, answer)
        meta = answer.get("metadata") or {}  # type: ignore[union-attr]
        return len(answer["items"]) + int(meta.get("remainingItemCount") or 0)  # type: ignore[index]

    def get(self, path: str) -> dict[str, Any] | None:
        """One object (or list) from the API; None when it does not exist."""
        status, answer = self.local.request("GET", path)
        if status == 404:
            return None
        assert status == 200, (status, answer)
        return answer  # type: ignore[return-value]

    def counts(self, namespace: str | None = None) -> dict[str, int]:
        return {
            n: (f.get("status") or {}).get("count", 0) for n, f in self.findings(namespace).items()
        }

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
        self.metrics_port = free_port()
        self.args = [
            "--liveness",
            f"http://127.0.0.1:{self.health}/healthz",
            "--metrics-address",
            f"127.0.0.1:{self.metrics_port}",
            *args,
        ]
        self.log_path = workdir / f"operator-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen | None = None

    STARTED = ("processing Events", "standing by", "Pausing operations")

    def start(self, wait: bool = True, timeout: float = 120) -> Operator:
        """Start it; with ``wait``, until it answers its liveness probe and has started counting
        (or stands by), within ``timeout`` seconds all told."""
        self.log = open(self.log_path, "ab")
        self.proc = spawn(
            [PULLWATCH, "run", *self.args],
            stdout=self.log,
            stderr=self.log,
            # faulthandler: a SIGABRT writes every thread's stack into the log (see stop)
            env={**self.cluster.local.env(self.kubeconfig), "PYTHONFAULTHANDLER": "1"},
        )
        if wait:
            try:
                wait_for(
                    lambda: self.healthy() and self.said(*self.STARTED),
                    timeout,
                    what=lambda: (
                        "the operator to answer its probe and start counting; its log "
                        f"ends:\n{self.logs()[-3000:]}"
                    ),
                )
            except BaseException:
                self.kill()  # a start-up that failed must not leave the process behind
                raise
        return self

    def said(self, *lines: str) -> bool:
        """Has its log any of these lines (read once, however many are asked for)?"""
        text = self.logs()
        return any(line in text for line in lines)

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"operator exited with {self.proc.returncode}:\n{self.logs()[-3000:]}"
            )
        return http_ok(f"http://127.0.0.1:{self.health}/healthz")

    def settled(self) -> bool:
        """Everything it counted is written: its liveness probe says no Finding is dirty (a
        Finding leaves the writer's dirty set only once its write is done). For an operator that
        watches only the test's namespaces (``-n``): one that watches them all also waits for
        other tests' Findings (one a namespace refuses stays dirty for good)."""
        status, body = self.probe()
        progress = body.get("progress") if isinstance(body, dict) else None
        return status == 200 and isinstance(progress, dict) and progress.get("dirty") == 0

    def kill(self) -> None:
        if self.proc is not None:
            kill(self.proc)

    def stop(self, timeout: float = 40) -> int | None:
        """SIGTERM, as Kubernetes does; after ``timeout``, SIGUSR1 and SIGABRT (where each
        asyncio task and each thread of an operator that does not stop waits is then in its
        log), then SIGKILL. The exit code."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGUSR1)  # where each asyncio task waits
                with contextlib.suppress(AssertionError):  # a loop that is blocked cannot
                    wait_for(lambda: "asyncio tasks (SIGUSR1)" in self.logs(), 10)
                os.kill(self.proc.pid, signal.SIGABRT)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                print(f"\noperator still running {timeout:.0f} s after SIGTERM; its log's end:")
                print(self.logs()[-12000:])
                self.kill()
        return self.proc.returncode if self.proc is not None else None

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """{(sample name, sorted labels): value} from the operator's /metrics (parsed by
        prometheus_client's own parser); {} while it does not answer."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
            ) as rsp:
                text = rsp.read().decode()
        except OSError:
            return {}
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value (0 when absent)."""
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def probe(self) -> tuple[int, Any]:
        """The liveness endpoint's HTTP status and body."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health}/healthz", timeout=5
            ) as rsp:
                return rsp.status, json.loads(rsp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()[:500]
        except OSError as exc:
            return 0, str(exc)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        return memory_mb(self.proc.pid, "VmHWM")


class FaultProxy:
    """tests/e2e/faultproxy.py as a child process: the API server behind faults on demand."""

    def __init__(self, cluster: Cluster, workdir: Path):
        self.cluster, self.dir = cluster, workdir
        self.port, self.control = free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> FaultProxy:
        cert, key = self.dir / "proxy.crt", self.dir / "proxy.key"
        if not cert.exists():
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-keyout",
                    str(key),
                    "-out",
                    str(cert),
                ],
                check=True,
                capture_output=True,
            )
        self.log = open(self.dir / "proxy.log", "ab")
        self.proc = spawn(
            [
                sys.executable,
                str(Path(__file__).with_name("faultproxy.py")),
                "--port",
                str(self.port),
                "--control",
                str(self.control),
                "--upstream",
                f"https://127.0.0.1:{self.cluster.local.port}",
                "--cert",
                str(cert),
                "--key",
                str(key),
            ],
            stdout=self.log,
            stderr=self.log,
        )
        wait_for(lambda: self._call("GET", "/stats") is not None, 20, what="the fault proxy")
        return self

    def kubeconfig(self) -> Path:
        """The operator's ServiceAccount, through the proxy."""
        return self.cluster.local.service_account_kubeconfig(*SA, port=self.port)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.control}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as rsp:
                return json.loads(rsp.read())
        except OSError:
            return None

    def freeze(self) -> Any:
        return self._call("POST", "/freeze", {})

    def thaw(self) -> Any:
        return self._call("POST", "/thaw", {})

    def fail(self, method: str, path: str, status: int, times: int) -> Any:
        return self._call(
            "POST", "/fail", {"method": method, "path": path, "status": status, "times": times}
        )

    def stats(self) -> Any:
        return self._call("GET", "/stats")

    def sigstop(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def sigcont(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            kill(self.proc)


class Workloads:
    """Deployments, ReplicaSets, Jobs and their pods as their controllers would make them (no
    controller-manager runs here: the objects are created with the ownerReferences and names the
    controllers would give them)."""

    def __init__(self, cluster: Cluster, namespace: str):
        self.cluster, self.ns = cluster, namespace
        # No controller-manager: the default ServiceAccount pods need must be made by hand.
        self._create(
            "/api/v1",
            "serviceaccounts",
            {"metadata": {"name": "default"}, "automountServiceAccountToken": False},
        )

    def _create(self, api: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        status, stored = self.cluster.local.request(
            "POST", f"{api}/namespaces/{self.ns}/{plural}", body
        )
        assert status in (200, 201), (status, stored)
        return stored  # type: ignore[return-value]

    @staticmethod
    def _owner(kind: str, api: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {
                "apiVersion": api,
                "kind": kind,
                "name": obj["metadata"]["name"],
                "uid": obj["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]

    @staticmethod
    def _template(
        name: str, image: str, labels: dict[str, str], restart: str = "Always"
    ) -> dict[str, Any]:
        return {
            "metadata": {"labels": labels},
            "spec": {
                "restartPolicy": restart,
                "automountServiceAccountToken": False,
                "containers": [{"name": name, "image": image}],
            },
        }

    def deployment(self, name: str, image: str) -> dict[str, Any]:
        labels = {"app": name}
        return self._create(
            "/apis/apps/v1",
            "deployments",
            {
                "metadata": {"name": name},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": self._template(name, image, labels),
                },
            },
        )

    def replicaset(
        self, deployment: dict[str, Any] | None, name: str, pod_hash: str, image: str
    ) -> dict[str, Any]:
        labels = {"app": name.rsplit("-", 1)[0], "pod-template-hash": pod_hash}
        meta: dict[str, Any] = {"name": name, "labels": labels}
        if deployment is not None:
            meta["ownerReferences"] = self._owner("Deployment", "apps/v1", deployment)
        return self._create(
            "/apis/apps/v1",
            "replicasets",
            {
                "metadata": meta,
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": self._template(name, image, labels),
                },
            },
        )

    def job(self, cronjob: str | None, name: str, image: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if (
            cronjob is not None
        ):  # batch/v1beta1 in 1.20; the owner need not exist (no garbage collector)
            meta["ownerReferences"] = [
                {
                    "apiVersion": "batch/v1beta1",
                    "kind": "CronJob",
                    "name": cronjob,
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, cronjob)),
                    "controller": True,
                }
            ]
        return self._create(
            "/apis/batch/v1",
            "jobs",
            {
                "metadata": meta,
                "spec": {"template": self._template(name, image, {"job": name}, restart="Never")},
            },
        )

    def pod(
        self,
        owner_kind: str | None,
        owner: dict[str, Any] | None,
        name: str,
        image: str,
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "labels": labels or {}}
        if owner is not None and owner_kind is not None:
            api = {
                "ReplicaSet": "apps/v1",
                "DaemonSet": "apps/v1",
                "StatefulSet": "apps/v1",
                "Job": "batch/v1",
            }[owner_kind]
            meta["ownerReferences"] = self._owner(owner_kind, api, owner)
        body = {
            "metadata": meta,
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [{"name": name.split("-")[0], "image": image}],
            },
        }
        return self._create("/api/v1", "pods", body)
