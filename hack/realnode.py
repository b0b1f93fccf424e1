"""A real node on loopback: a local image registry, containerd and a real kubelet beside a
LocalCluster.

The recipe is ../shared/real-kubelet.md (kubelet 1.20.2 built from Debian's source like the API
server, Debian's containerd and docker-registry); this module is its up.sh/down.sh made safe to
run from a test session, however that session ends:

* One real node per machine at a time: a kubelet's host paths (/var/log/pods, cgroups) are
  shared, so :meth:`RealNode.start` holds a lock file for the node's life, and refuses to run
  beside a kubelet that is not its own (a real node's pods must never be touched).
* A fixed run directory: whatever a killed run left behind there (processes, mounts, cgroups,
  kernel tunables) is found and undone by the next start, before anything new is started. The
  daemons also die with the process that started them (parent-death signal).
* A small host footprint, undone at stop: the pods' cgroups live under their own root
  (``/pullwatch``); no iptables chains; the kernel tunables the kubelet sets are put back; the
  /var/log/pods entries it made are removed; volume plugins and containerd's ``opt`` stay in
  the run directory.

Everything listens on 127.0.0.1: the registry on 5000 when free (image names then read as in the
recipe), the kubelet on free ports, containerd on a socket in the run directory.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localcluster import LocalCluster, daemon, free_port, http_ok

HERE = Path(__file__).resolve().parent
SETUP_SCRIPT = HERE / "realnode-setup.sh"
CACHE_ROOT = Path(
    os.environ.get("PULLWATCH_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pullwatch"
)
CGROUP_ROOT = "pullwatch"  # the kubelet's cgroupRoot: its pods never mix with a host's own
# What the kubelet's container manager writes (setupKernelTunables); restored at stop.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Where the kubelet logs its pods: the entries it makes are removed at stop.
LOG_DIRS = (Path("/var/log/pods"), Path("/var/log/containers"))
# Fixed paths (the kubelet's device-plugin socket, containerd's shim sockets): removed at stop when
# this node made them, left alone when they were there before.
FIXED_DIRS = (Path("/var/lib/kubelet"), Path("/run/containerd"))


class Unavailable(RuntimeError):
    """This machine cannot run a real node (not root, or a kubelet of its own runs here)."""


def setup() -> dict[str, str]:
    """Build (first time) or find the kubelet and the images: KUBELET, PAUSE_ARCHIVE, ... ."""
    out = subprocess.run(
        ["bash", str(SETUP_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


class RealNode:
    def __init__(
        self,
        cluster: LocalCluster,
        run_dir: Path | None = None,
        log: Callable[[str], Any] = lambda msg: None,
    ):
        self.cluster = cluster
        self.run = Path(run_dir or CACHE_ROOT / "realnode" / "run")
        self.name = cluster.NODE
        self.log = log
        self.registry_port = 5000
        self.kubelet_port = self.healthz_port = 0
        self._lock: Any = None
        self._procs: dict[str, subprocess.Popen] = {}
        self.config: dict[str, str] = {}

    @property
    def socket(self) -> Path:
        return self.run / "ctrd" / "containerd.sock"

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 90) -> RealNode:
        if os.geteuid() != 0:
            raise Unavailable("a real node needs root (containerd and the kubelet run as root)")
        foreign = [
            pid
            for pid, cmd in _processes()
            if Path(cmd[0]).name == "kubelet" and str(self.run) not in " ".join(cmd)
        ]
        if foreign:
            raise Unavailable(
                f"a kubelet already runs on this machine (pid {foreign[0]}); a real node "
                "beside it would share its host directories"
            )
        self._take_lock(timeout=1200)
        atexit.register(self._at_exit)  # a session that ends without calling stop() still cleans up
        try:
            teardown(self.run, self.log)  # whatever a killed run left behind
            self.config = setup()
            self._prepare()
            self._start_registry()
            self._start_containerd()
            self._load_images()
            self._start_kubelet(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> list[str]:
        """Stop everything and undo the host changes; returns what could not be undone."""
        try:
            if self._alive("kubelet"):
                try:
                    self._drain_pods()
                except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                    self.log(
                        f"real node: pods not drained ({e}); stopping the runtime's tasks instead"
                    )
            return teardown(self.run, self.log)
        finally:
            self._procs.clear()
            if self._lock is not None:
                self._lock.close()  # releases the flock
                self._lock = None
            atexit.unregister(self._at_exit)

    def _at_exit(self) -> None:
        if self._lock is not None:
            self.stop()

    def _take_lock(self, timeout: float) -> None:
        path = CACHE_ROOT / "realnode" / "lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(path, "w")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._lock.close()
                    self._lock = None
                    raise TimeoutError(
                        f"another real node holds {path} for more than {timeout:.0f}s"
                    ) from None
                time.sleep(2)

    def _prepare(self) -> None:
        for sub in (
            "reg/data",
            "ctrd/cni",
            "ctrd/opt",
            "kubelet/root",
            "kubelet/certs",
            "kubelet/plugins",
            "pids",
        ):
            (self.run / sub).mkdir(parents=True, exist_ok=True)
        # What stop() must put back, saved before anything changes it (a later start reads it if
        # this run is killed).
        sysctls = {key: _read(Path("/proc/sys") / key) for key in KUBELET_SYSCTLS}
        logs = {str(d): sorted(os.listdir(d)) if d.is_dir() else None for d in LOG_DIRS}
        fixed = {str(d): d.exists() for d in FIXED_DIRS}
        (self.run / "host.json").write_text(
            json.dumps({"sysctls": sysctls, "logs": logs, "fixed": fixed})
        )
        for hierarchy in _cgroup_hierarchies():
            (hierarchy / CGROUP_ROOT).mkdir(exist_ok=True)
        if not _port_free(self.registry_port):
            self.registry_port = free_port()
        self.kubelet_port, self.healthz_port = free_port(), free_port()

    def _spawn(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        log = open(self.run / f"{name}.log", "ab")
        # daemon(): it dies with this process, so a killed test run leaves no kubelet running;
        # the next start's teardown() removes what the runtime left (shims, containers, mounts).
        proc = daemon(cmd, stdout=log, stderr=log, env=env)
        (self.run / "pids" / name).write_text(str(proc.pid))
        self._procs[name] = proc
        return proc

    def _alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def _wait(self, what: str, check: Callable[[], bool], timeout: float, proc: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if not self._alive(proc):
                raise RuntimeError(f"{proc} exited:\n{self.tail(proc)}")
            time.sleep(0.3)
        raise TimeoutError(f"{what} not ready in {timeout:.0f}s:\n{self.tail(proc)}")

    def tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join(
                (self.run / f"{name}.log").read_text(errors="replace").splitlines()[-lines:]
            )
        except OSError:
            return "(no log)"

    def _start_registry(self) -> None:
        (self.run / "reg" / "config.yml").write_text(
            "version: 0.1\n"
            f"storage: {{filesystem: {{rootdirectory: {self.run / 'reg' / 'data'}}}, "
            "delete: {enabled: true}}\n"
            f"http: {{addr: '{self.registry}'}}\n"
        )
        self._spawn("registry", ["docker-registry", "serve", str(self.run / "reg" / "config.yml")])
        self._wait("registry", lambda: http_ok(f"http://{self.registry}/v2/"), 30, "registry")

    def _start_containerd(self) -> None:
        ctrd = self.run / "ctrd"
        certs = ctrd / "certs.d" / self.registry
        certs.mkdir(parents=True, exist_ok=True)
        (certs / "hosts.toml").write_text(
            f'server = "http://{self.registry}"\n'
            f'[host."http://{self.registry}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        )
        # restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE, so runc cannot lower a
        # sandbox's oom_score_adj (gotcha 1 of the recipe).
        (ctrd / "config.toml").write_text(f"""version = 2
root = "{ctrd / "root"}"
state = "{ctrd / "state"}"
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{ctrd / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.config["PAUSE_IMAGE"]}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{ctrd / "cni"}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{ctrd / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{ctrd / "certs.d"}"
""")
        self._spawn("containerd", ["containerd", "--config", str(ctrd / "config.toml")])
        self._wait(
            "containerd", lambda: self.ctr("version", check=False).returncode == 0, 30, "containerd"
        )

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        r = subprocess.run(
            ["ctr", "-a", str(self.socket), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {r.stderr.strip()}")
        return r

    def _load_images(self) -> None:
        self.ctr("images", "import", self.config["PAUSE_ARCHIVE"])

    def push(self, name: str) -> str:
        """Push the test app image to the local registry as ``name`` (``repo:tag``); returns the
        full reference a pod names."""
        ref = f"{self.registry}/{name}"
        env = {**os.environ, "CONTAINERS_CONF": self.config["CONTAINERS_CONF"]}
        r = subprocess.run(
            [
                "podman",
                "push",
                "-q",
                "--tls-verify=false",
                self.config["APP_IMAGE"],
                f"docker://{ref}",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if r.returncode != 0:
            raise RuntimeError(f"podman push {ref}: {r.stderr.strip()}")
        return ref

    def preload(self, ref: str) -> None:
        """Put ``ref`` in the node's image store without the kubelet (no Events): the next pod
        with IfNotPresent finds it "already present on machine"."""
        self.ctr("images", "pull", "--plain-http", ref, timeout=120)

    def has_image(self, ref: str) -> bool:
        return ref in self.ctr("images", "ls", "-q").stdout.split()

    def _start_kubelet(self, timeout: float) -> None:
        kub = self.run / "kubelet"
        (kub / "config.yaml").write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "address": "127.0.0.1",
                    "port": self.kubelet_port,
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": self.healthz_port,
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": False},
                    },
                    "authorization": {"mode": "AlwaysAllow"},
                    "cgroupDriver": "cgroupfs",
                    "cgroupRoot": f"/{CGROUP_ROOT}",
                    "failSwapOn": False,
                    "clusterDomain": "cluster.local",
                    "resolvConf": "/etc/resolv.conf",
                    "makeIPTablesUtilChains": False,
                    "volumePluginDir": str(kub / "plugins"),
                    # A test node must not evict its pods or collect its images because the host's
                    # disk
                    # is fuller than a production node's would be.
                    "evictionHard": {
                        "memory.available": "1Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                    },
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                }
            )
        )
        self._spawn(
            "kubelet",
            [
                self.config["KUBELET"],
                f"--config={kub / 'config.yaml'}",
                f"--kubeconfig={self.cluster.node_kubeconfig}",
                f"--root-dir={kub / 'root'}",
                f"--cert-dir={kub / 'certs'}",
                f"--hostname-override={self.name}",
                "--container-runtime=remote",
                f"--container-runtime-endpoint=unix://{self.socket}",
                f"--pod-infra-container-image={self.config['PAUSE_IMAGE']}",
                "--v=2",
            ],
        )
        self._wait(
            "the node",
            lambda: self.cluster.request("GET", f"/api/v1/nodes/{self.name}")[0] == 200,
            timeout,
            "kubelet",
        )

    def _drain_pods(self, timeout: float = 30) -> None:
        """Let the kubelet stop its own containers (bounded), then force-delete what 1.20 leaves
        Terminating (pods whose container never started)."""
        status, body = self.cluster.request(
            "GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{self.name}"
        )
        pods = (
            [
                (p["metadata"]["namespace"], p["metadata"]["name"])
                for p in (body or {}).get("items", [])
            ]
            if status == 200
            else []
        )
        for ns, name in pods:
            self.cluster.request(
                "DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", {"gracePeriodSeconds": 1}
            )
        deadline = time.monotonic() + timeout
        while (
            time.monotonic() < deadline
            and self.ctr("tasks", "ls", "-q", check=False).stdout.strip()
        ):
            time.sleep(1)
        for ns, name in pods:
            self.cluster.request(
                "DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", {"gracePeriodSeconds": 0}
            )


# -- teardown: by PID, mounts, cgroups, whoever started them --------------------------------
def teardown(run: Path, log: Callable[[str], Any] = lambda msg: None) -> list[str]:
    """Undo a real node under ``run``: stop its processes, unmount, remove cgroups, put back the
    kernel tunables and log directories. Safe on a half-started or long-dead node. Returns the
    problems left (empty when the host is clean)."""
    if not run.exists():
        return []
    socket = run / "ctrd" / "containerd.sock"
    _stop_pidfile(run, "kubelet")
    if _pid_of(run, "containerd"):
        ctr = ["ctr", "-a", str(socket), "-n", "k8s.io"]
        for task in _run(ctr + ["tasks", "ls", "-q"]).split():
            _run(ctr + ["tasks", "delete", "-f", task])
        for container in _run(ctr + ["containers", "ls", "-q"]).split():
            _run(ctr + ["containers", "delete", container])
    # Whatever still runs in the pods' cgroups, and the shims (they outlive containerd by design).
    for hierarchy in _cgroup_hierarchies():
        for procs in sorted((hierarchy / CGROUP_ROOT).rglob("cgroup.procs")):
            for pid in _read(procs).split():
                _kill(int(pid), signal.SIGKILL)
    for pid, cmd in _processes():
        if "containerd-shim" in Path(cmd[0]).name and str(socket) in " ".join(cmd):
            _kill(pid, signal.SIGKILL)
    for name in ("containerd", "registry"):
        _stop_pidfile(run, name)

    problems = []
    for mount in sorted(_mounts_under(run), key=len, reverse=True):
        if subprocess.run(["umount", mount], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", mount], capture_output=True)
    for hierarchy in _cgroup_hierarchies():
        root = hierarchy / CGROUP_ROOT
        if root.is_dir():
            for d in sorted(
                (p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            ):
                _rmdir(d, problems)
            _rmdir(root, problems)
    host = run / "host.json"
    if host.exists():
        saved = json.loads(host.read_text())
        for key, value in saved["sysctls"].items():
            if value and _read(Path("/proc/sys") / key) != value:
                try:
                    (Path("/proc/sys") / key).write_text(value)
                except OSError as e:
                    problems.append(f"sysctl {key}: {e}")
        for d, before in saved["logs"].items():
            _restore_dir(Path(d), before)
        for d, existed in saved["fixed"].items():
            if not existed:
                shutil.rmtree(d, ignore_errors=True)
    left = _mounts_under(run)
    if left:
        problems.append(f"{len(left)} mounts left under {run}: {left[:3]}")
    else:
        shutil.rmtree(run, ignore_errors=True)
    for p in problems:
        log(f"real node teardown: {p}")
    return problems


def _restore_dir(d: Path, before: list[str] | None) -> None:
    """Remove the entries made since ``before`` (``None``: the directory did not exist)."""
    if not d.is_dir():
        return
    for entry in set(os.listdir(d)) - set(before or ()):
        path = d / entry
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
    if before is None:
        try:
            d.rmdir()
        except OSError:
            pass


def _cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, the v2 unified tree)."""
    out = []
    for line in _read(Path("/proc/self/mounts")).splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] in ("cgroup", "cgroup2"):
            out.append(Path(fields[1]))
    return out


def _mounts_under(run: Path) -> list[str]:
    prefix = str(run).rstrip("/") + "/"
    out = []
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix) or point == str(run):
            out.append(point)
    return out


def _processes() -> list[tuple[int, list[str]]]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = (
                    Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
                )
            except OSError:
                continue
            if cmd and cmd[0]:
                out.append((int(entry), cmd))
    return out


def _pid_of(run: Path, name: str) -> int | None:
    """The pid in ``run``'s pid file, if that process still runs the same program (a reused pid
    is left alone)."""
    try:
        pid = int((run / "pids" / name).read_text())
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if str(run) in cmd or name in cmd else None


def _stop_pidfile(run: Path, name: str, grace: float = 20) -> None:
    pid = _pid_of(run, name)
    if pid is None:
        return
    _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _pid_of(run, name) == pid:
        _reap(pid)
        time.sleep(0.2)
    _kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)  # our own child: do not leave it a zombie that looks alive
    except ChildProcessError:
        pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _rmdir(d: Path, problems: list[str]) -> None:
    try:
        d.rmdir()
    except FileNotFoundError:
        pass
    except OSError as e:
        problems.append(f"cgroup {d}: {e}")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


# -- images of their own content -------------------------------------------------------------
def push_distinct(node: RealNode, name: str, mark: str) -> tuple[str, str]:
    """Push the app image under ``name`` (``repo:tag``) with content of its own: the same files
    and a label ``dev.pullwatch.content=<mark>`` (another image config, so another manifest
    digest than every name :meth:`RealNode.push` pushes). Returns (the reference a pod names,
    the manifest digest the registry serves - what the pod's status ``imageID`` will carry)."""
    import tempfile

    env = {**os.environ, "CONTAINERS_CONF": node.config["CONTAINERS_CONF"]}
    local = f"localhost/pullwatch-test-app:{mark}"
    ref = f"{node.registry}/{name}"
    with tempfile.TemporaryDirectory() as ctx:
        Path(ctx, "Containerfile").write_text(
            f"FROM {node.config['APP_IMAGE']}\nLABEL dev.pullwatch.content={mark}\n"
        )
        digest_file = Path(ctx, "digest")
        for cmd in (
            ["podman", "build", "-q", "--pull=never", "-t", local, ctx],
            ["podman", "push", "-q", "--tls-verify=false", "--digestfile", str(digest_file),
             local, f"docker://{ref}"],
        ):  # fmt: skip
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd[:2])} {ref}: {r.stderr.strip()}")
        digest = digest_file.read_text().strip()
    if not digest.startswith("sha256:") or len(digest) != 71:
        raise RuntimeError(f"podman push {ref}: no digest ({digest!r})")
    return ref, digest
