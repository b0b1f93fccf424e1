"""What can be checked of the image and the install without a Docker engine."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PULLWATCH = str(Path(sys.executable).parent / "pullwatch")


def dockerfile():
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_is_multistage_non_root_with_the_operator_entrypoint():
    text = dockerfile()
    assert len(re.findall(r"^FROM \$\{BASE\}", text, re.M)) == 2 and "COPY --from=build" in text
    assert re.search(r"^ARG BASE=python:3\.11-slim$", text, re.M)  # the official base by default
    assert "python3 -m venv /opt/pullwatch" in text  # Debian's Python refuses pip outside a venv
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("0", "root"))
    assert re.search(r'^ENTRYPOINT \["pullwatch", "run"\]$', text, re.M)


def test_the_entrypoint_command_exists_in_the_installed_package():
    r = subprocess.run([PULLWATCH, "run", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--standalone" in r.stdout and "--liveness" in r.stdout


def test_the_deployment_args_are_accepted_by_pullwatch_run():
    from pullwatch.cli import build_parser

    dep = yaml.safe_load((ROOT / "manifests" / "deployment.yaml").read_text())
    container = dep["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(["run", *container["args"]])
    assert args.liveness.endswith(":8080/healthz")
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    assert re.search(r"useradd .*--uid 10001", dockerfile())


def test_the_dockerfile_copies_what_the_package_needs():
    text = dockerfile()
    for path in ("pyproject.toml", "README.md", "operator"):
        assert path in text and (ROOT / path).exists()


def test_run_without_any_cluster_config_is_a_clear_error(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)}
    r = subprocess.run(
        [PULLWATCH, "run", "--standalone"], capture_output=True, text=True, env=env, timeout=60
    )
    assert (
        r.returncode == 2
        and "no Kubernetes configuration" in r.stderr
        and "Traceback" not in r.stderr
    )
