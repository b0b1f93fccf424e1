"""A real Kubernetes control plane on loopback: etcd + kube-apiserver, no kubelet.

Used by the end-to-end tests and the demo (see ../shared/real-apiserver.md for the recipe). The
kube-apiserver binary is built once from Debian's source package by build-kube.sh and
cached outside the repository. Everything listens on 127.0.0.1 only; each LocalCluster has its
own data directory and ports, and ``stop()`` kills what it started.

The API server also writes an audit log of Event creates (RequestResponse), the input of
pullwatch's audit-log detection.
"""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import fcntl
import http.client
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Hashable, Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build-kube.sh"

AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: RequestResponse
    verbs: [create]
    resources:
      - group: ""
        resources: [events]
  # pullwatch's own writes, counted by bench/operator_load.py (writes per detected pull)
  - level: Metadata
    verbs: [create, update, patch]
    resources:
      - group: pullwatch.dev
        resources: [findings, findings/status]
  # the operator's reads, watches and peering: the tests count what it was refused while its
  # RBAC was revoked (tests/e2e/test_resilience.py) instead of waiting a fixed time
  - level: Metadata
    users: ["system:serviceaccount:pullwatch-system:pullwatch"]
    verbs: [get, list, watch, patch]
    resources:
      - group: ""
        resources: [events]
      - group: kopf.dev
      - group: pullwatch.dev
  - level: None
"""


def kube_apiserver_binary() -> str:
    """Build (first time) or find the cached kube-apiserver; also installs etcd and friends."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return out.strip().splitlines()[-1]


def daemon(cmd: list[str], **kwargs) -> subprocess.Popen:
    """Start a long-running helper (etcd, the API server, an operator, a kubelet) in its own
    process group, set to die with this process (setpriv's parent-death signal): a test run or
    demo killed with SIGKILL leaves nothing running behind it."""
    prefix = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
    return subprocess.Popen(prefix + cmd, start_new_session=True, **kwargs)


def http_ok(url: str) -> bool:
    """Does ``url`` answer 200 (e.g. the operator's liveness endpoint)?"""
    try:
        with urllib.request.urlopen(url, timeout=1) as rsp:
            return rsp.status == 200
    except OSError:
        return False


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's memory from /proc/<pid>/status, in MB: ``VmRSS`` now, ``VmHWM`` its peak."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


# Ports handed out by this process, each held by an open, flock'd file so that no other process
# (another test worker, a second run on the machine) is given it while its server starts: the
# newest 128 (a fd each), which outlive any server's start by far.
_HELD_LOCKS: collections.deque[int] = collections.deque()
_LOCKS_KEPT = 128
_PORT_LOCKS = Path(tempfile.gettempdir()) / f"pullwatch-ports-{os.getuid()}"
_next_port: list[int] = []  # where this process's walk goes on (it starts at a random place)
LOWEST_PORT = 10000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on and that no other caller is handed.

    Not bind(0): that port comes from the kernel's ephemeral range, where every outgoing
    connection on the machine takes its local port, so between our release and the server's bind
    a client (the operator's own connection to the API server) could take it: "address already in
    use". These come from below that range and are reserved with a lock file while this process
    lives (for its newest 128).
    """
    low, high = LOWEST_PORT, min(_ephemeral_low(), 65536)
    if high - low < 1000:
        with socket.socket() as s:  # no room below the ephemeral range: the old way
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    _PORT_LOCKS.mkdir(mode=0o700, exist_ok=True)
    span = high - low
    if not _next_port:
        _next_port.append(random.randrange(span))
    for _ in range(span):
        port = low + _next_port[0] % span
        _next_port[0] += 1
        try:
            lock = os.open(_PORT_LOCKS / str(port), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EACCES, errno.EPERM):
                continue  # not ours to use (a link, another user's file)
            raise  # out of file descriptors, say: not a port that is taken
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))  # no SO_REUSEADDR: skips TIME_WAIT ports too
        except BlockingIOError:  # another process holds it
            os.close(lock)
            continue
        except OSError as exc:
            os.close(lock)
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue  # something listens there, or it is not ours to bind
            raise  # out of file descriptors, say: not a port that is taken
        _HELD_LOCKS.append(lock)
        while len(_HELD_LOCKS) > _LOCKS_KEPT:
            os.close(_HELD_LOCKS.popleft())
        return port
    raise RuntimeError(f"no free port in {low}-{high - 1} on 127.0.0.1")


class LocalCluster:
    # The one node name a real kubelet (hack/realnode.py) may register as: the API server knows its
    # token from the start and authorizes it with the Node authorizer, as a cluster does.
    NODE = "pullwatch-node"

    def __init__(self, workdir: Path, apiserver: str | None = None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.apiserver_bin = apiserver or kube_apiserver_binary()
        self.etcd_bin = shutil.which("etcd") or "/usr/bin/etcd"
        self.etcd_port, self.peer_port, self.port = free_port(), free_port(), free_port()
        self.token = "pullwatch-admin-" + os.urandom(8).hex()
        self.node_token = "pullwatch-node-" + os.urandom(8).hex()
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self.audit_log = self.dir / "audit.log"
        self.etcd: subprocess.Popen | None = None
        self.api: subprocess.Popen | None = None
        self.extra_api_args: list[str] = []
        self._conn: http.client.HTTPSConnection | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> LocalCluster:
        (self.dir / "certs").mkdir(exist_ok=True)
        if not (self.dir / "sa.key").exists():
            subprocess.run(
                ["openssl", "genrsa", "-out", str(self.dir / "sa.key"), "2048"],
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [
                    "openssl",
                    "rsa",
                    "-in",
                    str(self.dir / "sa.key"),
                    "-pubout",
                    "-out",
                    str(self.dir / "sa.pub"),
                ],
                check=True,
                capture_output=True,
            )
        node = f"system:node:{self.NODE}"
        (self.dir / "tokens.csv").write_text(
            f"{self.token},admin,admin,system:masters\n"
            f"{self.node_token},{node},{node},system:nodes\n"
        )
        (self.dir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        self._start_etcd()
        self.start_apiserver()
        self._write_kubeconfig(self.kubeconfig, self.token)
        self.node_kubeconfig = self.dir / "node.kubeconfig"
        self._write_kubeconfig(self.node_kubeconfig, self.node_token)
        return self

    def _start_etcd(self) -> None:
        log = open(self.dir / "etcd.log", "ab")
        self.etcd = daemon(
            [
                self.etcd_bin,
                "--data-dir",
                str(self.dir / "etcd"),
                "--name",
                "pullwatch-test",
                "--listen-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{self.peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{self.peer_port}",
                "--initial-cluster",
                f"pullwatch-test=http://127.0.0.1:{self.peer_port}",
            ],
            stdout=log,
            stderr=log,
        )

    def start_apiserver(self, wait: float = 60) -> None:
        log = open(self.dir / "apiserver.log", "ab")
        self.api = daemon(
            [
                self.apiserver_bin,
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={self.dir / 'certs'}",
                f"--token-auth-file={self.dir / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-key-file={self.dir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.dir / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/24",
                f"--audit-policy-file={self.dir / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                *self.extra_api_args,
            ],
            stdout=log,
            stderr=log,
        )
        self.wait_ready(wait)

    def tail(self, name: str, lines: int = 15) -> str:
        """The end of one of the cluster's logs (a failure message must carry it: pytest deletes
        old temporary directories)."""
        try:
            return "\n".join((self.dir / name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        while time.monotonic() < deadline:
            if self.api is not None and self.api.poll() is not None:
                raise RuntimeError(
                    f"kube-apiserver exited ({self.api.returncode}):\n"
                    f"{self.tail('apiserver.log')}\netcd:\n{self.tail('etcd.log', 5)}"
                )
            try:
                req = urllib.request.Request(
                    f"https://127.0.0.1:{self.port}/readyz",
                    headers={"Authorization": f"Bearer {self.token}"},
                )
                with urllib.request.urlopen(req, context=ctx, timeout=2) as rsp:
                    if rsp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(
            f"kube-apiserver not ready in {timeout}s:\n{self.tail('apiserver.log')}\n"
            f"etcd:\n{self.tail('etcd.log', 5)}"
        )

    def kill_apiserver(self) -> None:
        """SIGKILL: immediate (SIGTERM waits out 1.20's 60 s graceful shutdown with a watch
        open)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.api is not None and self.api.poll() is None:
            os.killpg(self.api.pid, signal.SIGKILL)
            self.api.wait()

    def stop(self) -> None:
        self.kill_apiserver()
        if self.etcd is not None and self.etcd.poll() is None:
            os.killpg(self.etcd.pid, signal.SIGKILL)
            self.etcd.wait()

    # -- clients ---------------------------------------------------------------------------
    def _write_kubeconfig(self, path: Path, token: str, port: int | None = None) -> None:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "local",
                    "clusters": [
                        {
                            "name": "local",
                            "cluster": {
                                "server": f"https://127.0.0.1:{port or self.port}",
                                "insecure-skip-tls-verify": True,
                            },
                        }
                    ],
                    "users": [{"name": "user", "user": {"token": token}}],
                    "contexts": [
                        {"name": "local", "context": {"cluster": "local", "user": "user"}}
                    ],
                }
            )
        )

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        env.pop("KUBERNETES_SERVICE_HOST", None)
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess:
        r = subprocess.run(
            ["kubectl", *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(kubeconfig),
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {r.stderr.strip()}")
        return r

    def service_account_kubeconfig(
        self, namespace: str, name: str, hours: int = 24, port: int | None = None
    ) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount (TokenRequest API); ``port``: reach
        the API server through something else on loopback (the tests' fault proxy)."""
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={hours}h"
        ).stdout.strip()
        path = self.dir / f"{namespace}.{name}.{port or self.port}.kubeconfig"
        self._write_kubeconfig(path, token, port)
        return path

    def _connect(self) -> http.client.HTTPSConnection:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=30)

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        content_type: str = "application/json",
        token: str | None = None,
    ) -> tuple[int, object]:
        """One API request as the admin (or ``token``) on a kept-alive connection: fast enough
        to play thousands of kubelet Events. Returns (HTTP status, decoded JSON body)."""
        status, answer, self._conn = self._send(self._conn, method, path, body, content_type, token)
        return status, answer

    def requests(
        self,
        calls: Iterable[tuple[str, str, object]],
        workers: int = 6,
        lanes: Iterable[Hashable] | None = None,
        token: str | None = None,
    ) -> list[tuple[int, object]]:
        """Many (method, path, body) requests at once, on ``workers`` kept-alive connections of
        their own (the API server serves them in parallel, as it does a node's kubelets): the
        answers, in the order of ``calls``. A PATCH is a merge patch. ``lanes``: one key per
        call; calls with the same key are sent one after another, in order (the PATCHes of one
        Event's count, say). ``token``: as whom (the admin by default)."""
        calls = list(calls)
        keys = list(lanes) if lanes is not None else list(range(len(calls)))
        queues: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            queues.setdefault(hash(key) % workers, []).append(i)
        answers: list[tuple[int, object]] = [(0, None)] * len(calls)

        def run(queue: list[int]) -> None:
            conn = None
            try:
                for i in queue:
                    method, path, body = calls[i]
                    kind = (
                        "application/merge-patch+json" if method == "PATCH" else "application/json"
                    )
                    status, answer, conn = self._send(conn, method, path, body, kind, token)
                    answers[i] = (status, answer)
            finally:
                if conn is not None:
                    conn.close()

        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, queues.values()))
        return answers

    def _send(
        self,
        conn: http.client.HTTPSConnection | None,
        method: str,
        path: str,
        body: object,
        content_type: str,
        token: str | None,
    ) -> tuple[int, object, http.client.HTTPSConnection | None]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {token or self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            conn = conn or self._connect()
            try:
                conn.request(method, path, body=data, headers=headers)
                rsp = conn.getresponse()
                raw = rsp.read()
                return rsp.status, (json.loads(raw) if raw else None), conn
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def open_watches(self, resource: str) -> int:
        """How many watches of ``resource`` (``events``) the API server is serving now (its own
        gauge of long-running requests)."""
        conn = self._connect()
        try:
            conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {self.token}"})
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        total = 0
        for line in text.splitlines():
            if (
                line.startswith("apiserver_longrunning_gauge{")
                and 'verb="WATCH"' in line
                and f'resource="{resource}"' in line
            ):
                total += int(float(line.rsplit(" ", 1)[1]))
        return total

    def compact_etcd(self) -> None:
        """Compact etcd at its current revision: every older resourceVersion is now 410 Gone."""
        base = f"http://127.0.0.1:{self.etcd_port}"
        request = urllib.request.Request
        with urllib.request.urlopen(
            request(f"{base}/v3/kv/range", data=b'{"key":"AA=="}', method="POST"), timeout=5
        ) as r:
            rev = json.loads(r.read())["header"]["revision"]
        body = json.dumps({"revision": rev, "physical": True}).encode()
        with urllib.request.urlopen(
            request(f"{base}/v3/kv/compaction", data=body, method="POST"), timeout=30
        ) as r:
            r.read()
