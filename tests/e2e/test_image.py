"""The container image, for real: built with podman (hack/build-image.sh, on a Debian-built base)
and run the way manifests/deployment.yaml runs it - its args, its user, a read-only root
filesystem, an emptyDir /tmp, the ServiceAccount's in-cluster credentials (token and CA mounted
where Kubernetes mounts them, TLS verified) - against the real API server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import yaml
from harness import ROOT, SA, SCANNER, wait_for

from kubelet import image_event
from localcluster import free_port

CONTAINERS_CONF = os.path.join(
    os.environ.get("PULLWATCH_CACHE", os.path.expanduser("~/.cache/pullwatch")), "containers.conf"
)


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
        env=dict(os.environ, CONTAINERS_CONF=CONTAINERS_CONF),
    )


def test_the_image_runs_as_the_deployment_does_and_sees_a_finding(cluster, tmp_path):
    tag = (
        subprocess.run(
            ["bash", str(ROOT / "hack" / "build-image.sh")],
            capture_output=True,
            text=True,
            check=True,
            timeout=1500,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    dep = yaml.safe_load((ROOT / "manifests" / "deployment.yaml").read_text())
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert (
        container["securityContext"]["readOnlyRootFilesystem"]
        and pod["securityContext"]["runAsUser"] == 10001
    )

    secrets = tmp_path / "serviceaccount"  # what the kubelet mounts for the pod's ServiceAccount
    secrets.mkdir()
    (secrets / "token").write_text(
        cluster.kubectl("create", "token", SA[1], "-n", SA[0]).stdout.strip()
    )
    shutil.copy(cluster.local.dir / "certs" / "apiserver.crt", secrets / "ca.crt")
    (secrets / "namespace").write_text(SA[0])
    secrets.chmod(0o755)
    for f in secrets.iterdir():
        f.chmod(0o644)
    health, metrics = free_port(), free_port()
    name = f"pullwatch-e2e-{uuid.uuid4().hex[:8]}"
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    # The Deployment's args, with the two listening addresses moved to free loopback ports (the
    # container shares the host's network here).
    args = [
        *container["args"],
        f"--liveness=http://127.0.0.1:{health}/healthz",
        f"--metrics-address=127.0.0.1:{metrics}",
    ]
    podman(
        "run",
        "-d",
        "--name",
        name,
        "--read-only",
        "--network",
        "host",
        "--user",
        user,
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--tmpfs",
        "/tmp",
        "-v",
        f"{secrets}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
        "-e",
        "KUBERNETES_SERVICE_HOST=127.0.0.1",
        "-e",
        f"KUBERNETES_SERVICE_PORT={cluster.local.port}",
        tag,
        *args,
    )
    try:
        ns = cluster.namespace("image")
        wait_for(
            lambda: (
                "processing Events" in podman("logs", name).stderr
                or "standing by" in podman("logs", name).stderr
            ),
            90,
            interval=1,
            what="the operator in the container to start",
        )
        uid = podman("exec", name, "id", "-u").stdout.strip()
        assert uid == "10001"
        assert (
            podman("exec", name, "touch", "/opt/pullwatch/x", check=False).returncode != 0
        )  # read-only
        cluster.create_event(image_event("Pulling", ns, "hunter", "aquasec/kube-hunter:0.6.8"))
        found = wait_for(
            lambda: (f := cluster.by_workload(ns).get((SCANNER, "hunter"))) and "status" in f and f,
            60,
            what="a Finding written from the image, with its status",
        )
        assert found["status"]["count"] == 1
        podman("stop", "-t", "30", name)  # SIGTERM, as Kubernetes does
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, podman("logs", name).stderr[-2000:]
        assert "Findings left unwritten" in podman("logs", name).stderr
    finally:
        podman("rm", "-f", name, check=False)
