#!/usr/bin/env python3
"""Benchmark: `pullwatch scan s3://…` against `pullwatch scan FILE` on the same ~1 GB audit log.

    python bench/object_storage.py                  # ~1 GB, s3rver (npm), 3 rounds
    python bench/object_storage.py --mb 200 --rounds 1
    python bench/object_storage.py --server moto    # moto's server instead (slow: see below)

The log is what a kube-apiserver writes with a common policy: Metadata-level reads and updates
of leases, configmaps and nodes; Event creates at RequestResponse (about one in ten of them an
image event, as in bench/scan_throughput.py); pod creates by controllers at Request level. It is
generated once into bench/out/ and uploaded once, through the S3 API, as one object to a local
S3-compatible server on 127.0.0.1.

The server: s3rver (npm, the most used S3 stand-in outside Python; streams objects from files)
by default. moto's server, which the tests use, reads an object's whole value for every ranged
GET, so one 1 GB object costs it seconds per 8 MiB range: it measures moto, not pullwatch.

Printed for each input, best of --rounds (rounds alternate, so both see the same load): wall
seconds, MB/s, pullwatch's CPU seconds (the process and its forked workers), the server's CPU
seconds during the scan, and the ratio of the two speeds (target >= 0.80). On this 2-core
machine the server's CPU is taken from the cores pullwatch scans on; against a real object
store it is not.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "hack"))

from localcluster import daemon, free_port  # noqa: E402
from scan_throughput import PULLWATCH, make_event  # noqa: E402

BUCKET = "audit-archive"
S3RVER = "s3rver@3.7.1"
NODES = [f"worker-{i}" for i in range(50)]
READERS = [
    ("system:kube-controller-manager", "leases", "kube-system", "update"),
    ("system:kube-scheduler", "leases", "kube-system", "update"),
    ("system:serviceaccount:kube-system:coredns", "endpointslices", "", "watch"),
    ("system:apiserver", "configmaps", "kube-system", "get"),
    ("system:serviceaccount:monitoring:prometheus", "pods", "", "list"),
]


def audit_line(rng: random.Random, i: int) -> bytes:
    stamp = f"2026-11-18T{(i // 3_600_000) % 24:02d}:{(i // 60_000) % 60:02d}:"
    stamp += f"{(i // 1000) % 60:02d}.{i % 1000:03d}000Z"
    roll = rng.random()
    entry: dict = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "auditID": f"{i:08x}-{rng.getrandbits(16):04x}-4a00-8b00-{i:012x}",
        "stage": "ResponseComplete",
        "requestReceivedTimestamp": stamp,
        "stageTimestamp": stamp,
        "annotations": {
            "authorization.k8s.io/decision": "allow",
            "authorization.k8s.io/reason": 'RBAC: allowed by ClusterRoleBinding "system:node"',
        },
    }
    if roll < 0.25:  # a kubelet writes an Event (RequestResponse)
        event = make_event(rng, i)["object"]
        node = event["source"]["host"]
        ns = event["metadata"]["namespace"]
        entry.update(
            level="RequestResponse",
            requestURI=f"/api/v1/namespaces/{ns}/events",
            verb="create",
            user={"username": f"system:node:{node}", "groups": ["system:nodes"]},
            sourceIPs=[f"10.0.{NODES.index(node)}.10"],
            userAgent="kubelet/v1.29.4 (linux/amd64) kubernetes/55019c8",
            objectRef={
                "resource": "events",
                "namespace": ns,
                "name": event["metadata"]["name"],
                "apiVersion": "v1",
            },
            requestObject=event,
            responseStatus={"metadata": {}, "code": 201},
            responseObject=event,
        )
    elif roll < 0.35:  # a controller creates a pod (Request)
        ns = f"team-{'abc'[i % 3]}-{i % 40}"
        entry.update(
            level="Request",
            requestURI=f"/api/v1/namespaces/{ns}/pods",
            verb="create",
            user={"username": "system:serviceaccount:kube-system:replicaset-controller"},
            sourceIPs=["10.0.0.2"],
            userAgent="kube-controller-manager/v1.29.4",
            objectRef={"resource": "pods", "namespace": ns, "apiVersion": "v1"},
            requestObject={
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "generateName": f"web{i % 500}-7d9f-",
                    "namespace": ns,
                    "labels": {"app": f"web{i % 500}", "pod-template-hash": "7d9f"},
                },
                "spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1.25.3", "ports": [{"containerPort": 80}]}
                    ]
                },
            },
            responseStatus={"metadata": {}, "code": 201},
        )
    else:  # the chatter that fills most of a log (Metadata)
        user, resource, ns, verb = READERS[i % len(READERS)]
        path = f"/api/v1/namespaces/{ns}/{resource}" if ns else f"/api/v1/{resource}"
        entry.update(
            level="Metadata",
            requestURI=path + ("?watch=true" if verb == "watch" else ""),
            verb=verb,
            user={"username": user, "groups": ["system:authenticated"]},
            sourceIPs=["10.0.0.2"],
            userAgent="kube-controller-manager/v1.29.4 (linux/amd64) kubernetes/55019c8",
            objectRef={"resource": resource, "namespace": ns, "apiVersion": "v1"},
            responseStatus={"metadata": {}, "code": 200},
        )
    return orjson.dumps(entry)


def generate(path: Path, megabytes: int) -> None:
    rng = random.Random(1526)
    tmp = path.with_suffix(".tmp")
    target, written, i = megabytes * 1_000_000, 0, 0
    with open(tmp, "wb") as f:
        while written < target:
            batch = b"\n".join(audit_line(rng, i + k) for k in range(10_000)) + b"\n"
            f.write(batch)
            written += len(batch)
            i += 10_000
    tmp.rename(path)


class Server:
    """A local S3-compatible server on 127.0.0.1, in a process of its own (its CPU is its own)."""

    def __init__(self, kind: str, workdir: Path):
        self.kind, self.port = kind, free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        log = open(workdir / f"{kind}.log", "wb")
        if kind == "s3rver":
            data = workdir / "s3rver-data"
            data.mkdir(exist_ok=True)
            cmd = [str(_s3rver()), "-d", str(data), "-a", "127.0.0.1", "-p", str(self.port)]
            cmd += ["-s", "--configure-bucket", BUCKET]
            self.key = self.secret = "S3RVER"  # the keys s3rver checks signatures with
        else:
            code = (
                "import logging, sys, threading\n"
                "from moto.server import ThreadedMotoServer\n"
                "logging.getLogger('werkzeug').setLevel(logging.ERROR)\n"
                f"ThreadedMotoServer(ip_address='127.0.0.1', port={self.port}, "
                "verbose=False).start()\n"
                "sys.stdin.read()\n"  # until the benchmark goes away
            )
            cmd = [sys.executable, "-c", code]
            self.key = self.secret = "bench"
        env = {**os.environ, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(4 << 30)}
        self.proc = daemon(cmd, stdin=subprocess.PIPE, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"{kind} exited; see {workdir / (kind + '.log')}") from None
                time.sleep(0.2)
        else:
            raise SystemExit(f"{kind} did not start")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
        env.update(
            AWS_ACCESS_KEY_ID=self.key,
            AWS_SECRET_ACCESS_KEY=self.secret,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
        )
        return env

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def upload(self, path: Path, key: str) -> str:
        import boto3
        from boto3.s3.transfer import TransferConfig

        env = self.env()
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
        if self.kind == "moto":
            client.create_bucket(Bucket=BUCKET)
        config = TransferConfig(multipart_chunksize=64 << 20, max_concurrency=2)
        client.upload_file(str(path), BUCKET, key, Config=config)
        return f"s3://{BUCKET}/{key}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _s3rver() -> Path:
    """s3rver from npm, installed once into bench/out/s3rver."""
    prefix = OUT / "s3rver"
    binary = prefix / "node_modules" / ".bin" / "s3rver"
    if not binary.exists():
        if not shutil.which("npm"):
            raise SystemExit("s3rver needs node and npm (or run with --server moto)")
        print(f"installing {S3RVER} into {prefix} ...", flush=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), S3RVER],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return binary


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mb", type=int, default=1000, help="size of the audit log (MB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--server", choices=("s3rver", "moto"), default="s3rver")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"audit-{args.mb}mb.jsonl"
    if not path.exists():
        print(f"generating {args.mb} MB of audit log -> {path} ...", flush=True)
        generate(path, args.mb)
    size_mb = path.stat().st_size / 1e6
    workdir = OUT / f"object-storage-{args.server}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    server = Server(args.server, workdir)
    try:
        started = time.perf_counter()
        url = server.upload(path, path.name)
        print(
            f"uploaded {size_mb:,.0f} MB to {server.kind} in {time.perf_counter() - started:.1f} s"
        )
        allow = str(ROOT / "examples" / "allowed-images.yaml")
        runs: dict[str, list[tuple[float, float, float]]] = {"local file": [], url: []}
        summaries = {}
        for _ in range(args.rounds):
            for name, target in (("local file", str(path)), (url, url)):
                before = server.cpu_seconds()
                t, cpu, err = measure_cpu(
                    [PULLWATCH, "scan", target, "-a", allow, "-o", "json"], server.env()
                )
                runs[name].append((t, cpu, server.cpu_seconds() - before))
                summaries[name] = err.decode(errors="replace").splitlines()[0]
    finally:
        server.stop()
    if summaries["local file"] != summaries[url]:
        raise SystemExit(
            f"the two scans disagree:\n  {summaries['local file']}\n  {summaries[url]}"
        )
    print(f"input: {path.name}, {size_mb:,.0f} MB; {summaries[url]}")
    print(f"\n{'':34}{'seconds':>9}{'MB/s':>8}{'pullwatch CPU s':>17}{'server CPU s':>14}")
    best = {}
    for name, results in runs.items():
        t, cpu, server_cpu = min(results)
        best[name] = t
        label = name if name == "local file" else f"{server.kind}: {name}"
        print(f"{label[:34]:34}{t:9.2f}{size_mb / t:8.0f}{cpu:17.2f}{server_cpu:14.2f}")
    print(
        f"\nobject storage vs local file: {best['local file'] / best[url]:.2f}x  (target >= 0.80)"
    )


def measure_cpu(cmd: list[str], env: dict[str, str]) -> tuple[float, float, bytes]:
    """(wall seconds, CPU seconds of the process and its children, stderr) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{cmd[2]} failed: {err[-2000:].decode(errors='replace')}")
    return seconds, usage.ru_utime + usage.ru_stime, err


if __name__ == "__main__":
    main()
