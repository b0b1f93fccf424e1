"""The README's first command: pullwatch end to end on a throw-away local control plane.

Never touches a configured cluster: it starts its own etcd + kube-apiserver on loopback,
installs pullwatch's CRDs and RBAC, runs the operator as its ServiceAccount, plays the kubelet
(a kube-hunter pull, an unlisted image, an allowed one), prints `kubectl get findings -A`, and
stops everything it started.

    --real-kubelet   no playing: a real kubelet (with containerd and a local registry, see
                     hack/realnode.py; built once, ~7 minutes) runs a pod that pulls a
                     kube-hunter-named image, and writes the Events itself. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "tests"))

from kubelet import for_create, image_event  # noqa: E402
from localcluster import LocalCluster, daemon, free_port, http_ok  # noqa: E402
from realnode import RealNode, Unavailable  # noqa: E402


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--real-kubelet", action="store_true", help="pull with a real kubelet (needs root)"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pullwatch-demo-"))
    cluster = LocalCluster(workdir)
    operator = node = None
    try:
        say("starting a local etcd + kube-apiserver (loopback only)")
        cluster.start()
        say(
            "kubectl apply -k manifests/   (CRDs, namespace, RBAC, Deployment; no kubelet here, "
            "so the "
            "Deployment never runs: the operator runs as a local process instead)"
        )
        print(cluster.kubectl("apply", "-k", str(ROOT / "manifests")).stdout, end="")
        cluster.kubectl(
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/findings.pullwatch.dev",
            "crd/allowedimages.pullwatch.dev",
        )
        say("kubectl apply -f examples/allowed-images.yaml")
        print(
            cluster.kubectl("apply", "-f", str(ROOT / "examples" / "allowed-images.yaml")).stdout,
            end="",
        )
        for ns in ("team-a-web", "recon"):
            cluster.kubectl("create", "namespace", ns)

        say("pullwatch run   (as system:serviceaccount:pullwatch-system:pullwatch)")
        kubeconfig = cluster.service_account_kubeconfig("pullwatch-system", "pullwatch")
        health = free_port()
        log = open(workdir / "operator.log", "wb")
        metrics = free_port()
        operator = daemon(
            [
                str(Path(sys.executable).parent / "pullwatch"),
                "run",
                f"--liveness=http://127.0.0.1:{health}/healthz",
                f"--metrics-address=127.0.0.1:{metrics}",
            ],
            env=cluster.env(kubeconfig),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait(lambda: http_ok(f"http://127.0.0.1:{health}/healthz"), 30, "the operator to start")
        wait(
            lambda: "True" in cluster.kubectl("get", "allowedimages").stdout,
            20,
            "AllowedImages to be Ready",
        )
        print(cluster.kubectl("get", "allowedimages").stdout, end="")

        if args.real_kubelet:
            node = real_kubelet(cluster)
        else:
            play_the_kubelet(cluster)
        say(f"curl http://127.0.0.1:{metrics}/metrics | grep ^pullwatch_pulls_detected_total")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as rsp:
            print(
                "".join(
                    line
                    for line in rsp.read().decode().splitlines(keepends=True)
                    if line.startswith("pullwatch_pulls_detected_total{")
                ),
                end="",
            )
        return 0
    finally:
        say("stopping everything the demo started")
        if operator is not None and operator.poll() is None:
            os.killpg(operator.pid, signal.SIGTERM)
            try:
                operator.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(operator.pid, signal.SIGKILL)
        if node is not None:
            node.stop()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        print("done.")


def play_the_kubelet(cluster: LocalCluster) -> None:
    say("playing the kubelet: three image pulls")
    events = [
        (
            "a kube-hunter scan job",
            image_event(
                "Pulling",
                "recon",
                "hunter-x7k2p",
                "aquasec/kube-hunter:0.6.8",
                node="worker-2",
                count=2,
                seq=1,
            ),
        ),
        (
            "an image nobody allowed",
            image_event(
                "Pulling",
                "team-a-web",
                "miner-6f9c",
                "docker.io/randomuser/xmrig:latest",
                node="worker-3",
                seq=2,
            ),
        ),
        (
            "an allowed image",
            image_event(
                "Pulling", "team-a-web", "web-5d8f", "nginx:1.25.3", node="worker-1", seq=3
            ),
        ),
    ]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for what, ev in events:
        ev["firstTimestamp"] = ev["lastTimestamp"] = now
        status, _ = cluster.request(
            "POST", f"/api/v1/namespaces/{ev['metadata']['namespace']}/events", for_create(ev)
        )
        print(f"  {ev['reason']:8} {ev['message'][:60]:60}  ({what}) -> HTTP {status}")
    wait(
        lambda: len(cluster.kubectl("get", "findings", "-A", "-o", "name").stdout.split()) >= 3,
        20,
        "Findings",
    )
    time.sleep(0.5)

    say("kubectl get findings -A")
    print(cluster.kubectl("get", "findings", "-A").stdout, end="")
    print(
        "\nThe allowed nginx pull made no Finding; kube-hunter made two (a scanner, and not "
        "allowlisted),\n"
        "with count 2 from its Event's series. Try `kubectl explain finding.spec` on a real "
        "cluster."
    )


def real_kubelet(cluster: LocalCluster) -> RealNode:
    say("starting a real node: a local registry, containerd and a kubelet (loopback only)")
    node = RealNode(cluster, log=print)
    try:
        node.start()
    except Unavailable as e:
        raise SystemExit(f"--real-kubelet: {e}") from None
    image = node.push("aquasec/kube-hunter:0.6.8")
    print(f"  pushed {image} (a stand-in: busybox under kube-hunter's name)")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hunter", "namespace": "recon"},
        "spec": {
            "nodeName": node.name,
            "hostNetwork": True,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "hunter", "image": image, "imagePullPolicy": "Always"}],
        },
    }
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": "recon"},
                "automountServiceAccountToken": False,
            }
        ),
    )
    say("kubectl apply: pod recon/hunter on the real node, image " + image)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    wait(
        lambda: (
            len(cluster.kubectl("get", "findings", "-n", "recon", "-o", "name").stdout.split()) >= 2
        ),
        60,
        "Findings",
    )
    wait(
        lambda: "yes" in cluster.kubectl("get", "findings", "-n", "recon").stdout,
        30,
        "the pull to complete",
    )
    say("kubectl get events -n recon   (written by the kubelet)")
    print(
        cluster.kubectl(
            "get", "events", "-n", "recon", "--sort-by=.metadata.creationTimestamp"
        ).stdout,
        end="",
    )
    say("kubectl get findings -A")
    print(cluster.kubectl("get", "findings", "-A").stdout, end="")
    print(
        "\nThe kubelet pulled the kube-hunter-named image: a Finding for the scanner rule and "
        "one for the\n"
        "suspicious-image rule (not allowlisted); RAN says the container started from that pull."
    )
    return node


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise SystemExit(f"timed out waiting for {what}")


if __name__ == "__main__":
    sys.exit(main())
