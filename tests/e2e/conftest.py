"""End-to-end fixtures: a real kube-apiserver + etcd, the operator as its ServiceAccount.

The control plane is built (once, cached) and started by the test session itself; nothing is
mocked. Each test uses namespaces of its own, so tests share one operator without interfering.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, Cluster, Operator

from localcluster import LocalCluster


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# SIGTERM (a CI timeout, kill) ends the session like Ctrl-C: fixtures tear down what they started
# (the real node's mounts and cgroups included) instead of the interpreter dying on the spot.
signal.signal(signal.SIGTERM, _terminate)
# Not in a process forked from the session (`pullwatch scan`'s multiprocessing pool, in the unit
# tests): its pool ends its workers with SIGTERM, which must kill them even when they are blocked
# in a lock; a Python handler runs only once they get back to Python (a worker hung so, and the
# pool waited for it for ever).
os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    local = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        local.kubectl("apply", "-k", str(ROOT / "manifests"))
        local.kubectl(
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/findings.pullwatch.dev",
            "crd/allowedimages.pullwatch.dev",
            "crd/clusterkopfpeerings.kopf.dev",
        )
        yield Cluster(local)
    finally:
        local.stop()


@pytest.fixture(scope="module")
def operator(cluster, tmp_path_factory):
    op = Operator(cluster, tmp_path_factory.mktemp("operator"))
    try:
        yield op.start()
    finally:
        op.kill() if op.stop(timeout=30) is None else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test, for fixtures that say more when a test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def start_operator(cluster, tmp_path, request):
    """Start operators for one test; every one is killed when the test ends, however it ends.
    When the test failed, the end of each operator's log is printed (pytest reports it with the
    failure: CI keeps no temporary directories)."""
    started: list[Operator] = []

    def start(*args: str, wait: bool = True, kubeconfig=None) -> Operator:
        op = Operator(cluster, tmp_path, *args)
        if kubeconfig is not None:
            op.kubeconfig = kubeconfig
        started.append(op)
        return op.start(wait=wait)

    yield start
    for op in started:
        op.kill()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for op in started:
            print(f"--- the end of {op.log_path.name} ---\n{op.logs()[-4000:]}")
