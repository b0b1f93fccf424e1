"""The Pod witness on the real kubelet (issue 16): what actually ran, whatever the Events said.

A kubelet 1.20.2 (hack/realnode.py) runs the pods; pullwatch reads the pods' status the kubelet
writes, and its Events. Nothing here plays the kubelet:

* a pod whose 10 init containers (an image already on the node: "already present", Created,
  Started - 3 Events each) use up the kubelet's budget of 25 Events per pod before its
  kube-hunter container starts: the kubelet reports no pull of it, and the scanner Finding says
  the container ran with no pull Event;
* kube-hunter pushed as ``tools/netcheck:1`` (its own content, so its own digest) is a scanner
  by the digest a ScannerImages object lists - one applied while it already runs;
* a scanner that ran before pullwatch started, its Events deleted, is found at start-up;
* the pull counts stay exactly what the kubelet reported: containers seen running add none;
* ``pullwatch scan`` over ``kubectl get pods -o json|yaml`` names the Findings the operator made
  from the same pods.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness import SCANNER, SUSPICIOUS, wait_for

from kubelet import reported
from paths import finding_items
from realnode import RealNode, Unavailable, push_distinct

PULLWATCH = str(Path(sys.executable).parent / "pullwatch")
GRACE = "5s"  # --pull-event-grace: a test need not wait the default minute


@pytest.fixture(scope="module")
def node(cluster):
    real = RealNode(cluster.local, log=print)
    try:
        real.start()
    except Unavailable as e:
        pytest.skip(str(e))
    # Every image here has content of its own: a runtime reports a container under the first
    # name it holds of the content, and pullwatch judges what the kubelet reports ran.
    real.allowed, _ = push_distinct(real, "library/allowed:1.0", "allowed")
    # Content of its own: a runtime names a container by the first tag it holds of the
    # content, and pullwatch judges that name too (the spec's can be patched).
    real.hunter, _ = push_distinct(real, "aquasec/kube-hunter:0.6.8", "hunter")
    real.netcheck, real.netcheck_digest = push_distinct(real, "tools/netcheck:1", "kube-hunter")
    real.preload(real.allowed)  # "already present" for the init containers
    config = [
        {
            "apiVersion": "pullwatch.dev/v1alpha1",
            "kind": "AllowedImages",
            "metadata": {"name": "pods-witness"},
            "spec": {"namespaces": ["podw-*"], "images": [f"{real.registry}/library/**"]},
        },
        {
            "apiVersion": "pullwatch.dev/v1alpha1",
            "kind": "ScannerImages",
            "metadata": {"name": "pods-witness"},
            "spec": {"digests": [real.netcheck_digest]},
        },
    ]
    cluster.apply(config[0])  # the ScannerImages object: applied by the test that needs it
    real.config_objects = config
    yield real
    cluster.kubectl("delete", "allowedimages,scannerimages", "pods-witness", "--ignore-not-found")
    problems = real.stop()
    assert problems == [], f"the real node left things behind: {problems}"


class Pods:
    """One test's namespace on the real node."""

    def __init__(self, cluster, real: RealNode):
        self.cluster, self.real = cluster, real
        self.ns = cluster.namespace("podw")
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",  # no controller-manager makes it
                "metadata": {"name": "default", "namespace": self.ns},
                "automountServiceAccountToken": False,
            }
        )

    def pod(self, name: str, image: str, init: int = 0) -> None:
        done = ["/bin/busybox", "true"]
        inits = [
            {"name": f"init-{i}", "image": self.real.allowed, "imagePullPolicy": "IfNotPresent",
             "command": done}
            for i in range(init)
        ]  # fmt: skip
        self.cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": self.ns},
                "spec": {
                    "nodeName": self.real.name,
                    "hostNetwork": True,
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 1,
                    "initContainers": inits,
                    # the app image's own command: sleep (a scanner's run, as far as pods tell)
                    "containers": [{"name": "main", "image": image, "imagePullPolicy": "Always"}],
                },
            }
        )

    def running(self, name: str) -> dict:
        """The pod once its main container runs."""

        def check():
            _, pod = self.cluster.local.request("GET", f"/api/v1/namespaces/{self.ns}/pods/{name}")
            statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
            return pod if any("running" in (s.get("state") or {}) for s in statuses) else None

        return wait_for(check, 90, what=f"pod {name} running")

    def events(self) -> list[dict]:
        items = json.loads(
            self.cluster.kubectl("get", "events", "-n", self.ns, "-o", "json").stdout
        )["items"]
        return [e for e in items if (e.get("source") or {}).get("component") == "kubelet"]

    def did(self, pod: str, container: str = "main") -> dict[str, int]:
        """What the kubelet reported of pulls for one container of ``pod``."""
        path = f"spec.containers{{{container}}}"
        return reported(
            [e for e in self.events() if e["involvedObject"].get("fieldPath") == path], pod
        )

    def finding(self, rule: str, workload: str) -> dict | None:
        return self.cluster.by_workload(self.ns).get((rule, workload))

    def ran(self, rule: str, workload: str, pull_event: str) -> dict:
        """The Finding once it shows the container running with ``pull_event`` settled."""

        def check():
            f = self.finding(rule, workload)
            sample = (((f or {}).get("status") or {}).get("running") or {}).get("sample") or []
            return f if [s["pullEvent"] for s in sample] == [pull_event] else None

        return wait_for(check, 60, what=f"the {rule} Finding of {workload}: {pull_event}")

    def scan(self, workdir: Path, output: str) -> set[str]:
        """`pullwatch scan` over `kubectl get pods -o <output>`, with the configuration in force:
        the names of the Findings it makes. It must read every pod and skip none."""
        (workdir / f"pods.{output}").write_text(
            self.cluster.kubectl("get", "pods", "-n", self.ns, "-o", output).stdout
        )
        (workdir / "config.json").write_text(
            json.dumps({"apiVersion": "v1", "kind": "List", "items": self.real.config_objects})
        )
        r = subprocess.run(
            [PULLWATCH, "scan", str(workdir / f"pods.{output}"), "-a",
             str(workdir / "config.json"), "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "skipped: 0" in r.stderr and "damaged" not in r.stderr, r.stderr
        return {f["metadata"]["name"] for f in finding_items(r.stdout)}


def sample(finding: dict) -> dict:
    (only,) = finding["status"]["running"]["sample"]
    return only


# -- the tests -----------------------------------------------------------------------------
def test_a_scanner_that_ran_before_pullwatch_started_is_found_at_start_up(
    cluster, node, start_operator
):
    p = Pods(cluster, node)
    p.pod("early", node.hunter)
    p.running("early")
    wait_for(lambda: p.did("early")["pulled"] == 1, 30, what="the kubelet's pull Events")
    cluster.kubectl("delete", "events", "--all", "-n", p.ns)  # what an intruder would do
    assert p.did("early")["pulling"] == 0
    op = start_operator("--standalone", "-n", p.ns, "--pull-event-grace", GRACE)
    for rule in (SCANNER, SUSPICIOUS):
        f = p.ran(rule, "early", "missing")  # its Events are gone well within --event-ttl
        run = sample(f)
        assert run["atStartup"] is True and run["container"] == "main"
        assert run["node"] == node.name and run["digest"].startswith("sha256:")
        assert f["status"]["count"] == 0 and f["status"]["seenBy"] == "pods"
        assert f["status"]["ranWithoutPullEvent"] == 1
        assert f["status"]["outcomes"]["ran"] == "yes"
    assert op.metric("pullwatch_ran_without_pull_event_total", rule=SCANNER, severity="high") == 1


def test_what_ran_is_judged_from_the_pods_and_counts_stay_the_kubelets(
    cluster, node, start_operator, tmp_path
):
    p = Pods(cluster, node)
    op = start_operator("--standalone", "-n", p.ns, "--pull-event-grace", GRACE)
    p.pod("budget", node.hunter, init=10)
    p.pod("hunter", node.hunter)
    p.pod("netcheck", node.netcheck)
    for name in ("budget", "hunter", "netcheck"):
        p.running(name)

    # The Event budget: 25 for the pod, used up by the init containers; the kube-hunter
    # container's pull was never reported - and the pod's status says it ran.
    events = [e for e in p.events() if e["involvedObject"]["name"] == "budget"]
    assert sum(e.get("count") or 1 for e in events) <= 25
    assert p.did("budget") == dict.fromkeys(p.did("budget"), 0)
    f = p.ran(SCANNER, "budget", "missing")
    assert f["status"]["count"] == 0 and f["status"]["ranWithoutPullEvent"] == 1
    assert f["status"]["witnesses"] == ["pods"] and "atStartup" not in sample(f)

    # The same image, reported: one pull, seen by both witnesses, counted once.
    f = p.ran(SCANNER, "hunter", "seen")
    did = p.did("hunter")
    assert did["pulling"] == 1 and f["status"]["count"] == did["pulling"] + did["present"]
    assert (
        f["status"]["witnesses"] == ["events", "pods"] and "ranWithoutPullEvent" not in f["status"]
    )

    # kube-hunter under an innocent name: a scanner by its digest (the name makes it only
    # suspicious, and the pull Event, which names no digest, counts there) - its digest learned
    # while it runs: every pod is judged again (soon after the last list, at the next watch).
    assert p.finding(SCANNER, "netcheck") is None
    cluster.apply(node.config_objects[1])
    f = wait_for(
        lambda: (lambda f: f if f and "status" in f else None)(p.finding(SCANNER, "netcheck")),
        150,
        what="the digest's scanner Finding, its status written",
    )
    assert f["spec"]["repository"] == f"{node.registry}/tools/netcheck"
    assert f["status"]["digests"] == [{"digest": node.netcheck_digest, "containers": 1}]
    assert sample(f)["digest"] == node.netcheck_digest and f["status"]["count"] == 0
    suspicious = p.ran(SUSPICIOUS, "netcheck", "seen")
    assert suspicious["status"]["count"] == p.did("netcheck")["pulling"] == 1

    # Every count is what the kubelet reported of pulls the rules fire on (by the image's name:
    # a pull Event names no digest), however often the pods' status changed meanwhile.
    attempts = {
        pod: p.did(pod)["pulling"] + p.did(pod)["present"] for pod in ("hunter", "netcheck")
    }
    expected = {
        (SCANNER, "budget"): 0,
        (SUSPICIOUS, "budget"): 0,
        (SCANNER, "hunter"): attempts["hunter"],
        (SUSPICIOUS, "hunter"): attempts["hunter"],
        (SCANNER, "netcheck"): 0,
        (SUSPICIOUS, "netcheck"): attempts["netcheck"],
    }
    counts = {key: f["status"]["count"] for key, f in cluster.by_workload(p.ns).items()}
    assert counts == expected and attempts == {"hunter": 1, "netcheck": 1}
    assert op.metric("pullwatch_containers_running_total", rule=SCANNER, severity="high") == 3
    assert op.metric("pullwatch_ran_without_pull_event_total", rule=SCANNER, severity="high") >= 1
    assert sum(v for k, v in op.metrics().items() if k[0] == "pullwatch_pods_skipped_total") == 0

    # The offline inventory: the same pods, the same Findings (those the pods witnessed).
    live = {
        name
        for name, f in cluster.findings(p.ns).items()
        if "pods" in (f.get("status") or {}).get("witnesses", [])
    }
    assert len(live) == 6  # scanner + suspicious for budget and hunter; netcheck's two
    for output in ("json", "yaml"):
        assert p.scan(tmp_path, output) == live, output
