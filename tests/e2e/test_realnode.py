"""Real pulls by a real kubelet (issue 12): the true producer of the Events, and what each pull
became.

A kubelet 1.20.2 (hack/realnode.py: containerd, a local registry on 127.0.0.1) runs pods on the
test API server; pullwatch reads the Events that kubelet writes - nothing here plays the kubelet.
Each test compares the Findings with what the kubelet itself reported (its Events, read back from
the API server: attempts are its "Pulling image" and "already present" Events, outcomes its
"Successfully pulled", "already present", "Failed to pull" and "Back-off pulling" ones) and runs
`pullwatch scan` over the same Events, which must agree exactly.

The Events of every test are gathered at the end; ``PULLWATCH_RECORD_REAL_EVENTS=1`` writes them
(and the allowlist) to tests/data/real-kubelet*.json, the golden input of
tests/test_real_kubelet.py (then regenerate its golden output with PULLWATCH_UPDATE_GOLDEN=1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import ROOT, SCANNER, SUSPICIOUS, wait_for

from kubelet import expected_outcomes, reported
from localcluster import free_port
from paths import finding_items
from realnode import RealNode, Unavailable, push_distinct

HUNTER = "aquasec/kube-hunter:0.6.8"
RECORDED = ROOT / "tests" / "data" / "real-kubelet.json"
RECORDED_ALLOWLIST = ROOT / "tests" / "data" / "real-kubelet-allowed.json"
PULLWATCH = str(Path(sys.executable).parent / "pullwatch")
CAPTURED: list[dict] = []  # every test's Events, for the golden file


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
    real.unlisted = real.push("acme/unlisted:1.0")
    # Content of its own: a runtime names a container by the first tag it holds of the
    # content, and pullwatch judges that name too (the spec's can be patched).
    real.hunter, _ = push_distinct(real, HUNTER, "hunter")
    allowed = {
        "apiVersion": "pullwatch.dev/v1alpha1",
        "kind": "AllowedImages",
        "metadata": {"name": "real-node"},
        "spec": {"namespaces": ["real-*"], "images": [f"{real.registry}/library/**"]},
    }
    cluster.apply(allowed)
    yield real
    cluster.kubectl("delete", "allowedimages", "real-node", "--ignore-not-found")
    problems = real.stop()
    if os.environ.get("PULLWATCH_RECORD_REAL_EVENTS") and CAPTURED:
        RECORDED.write_text(
            json.dumps({"apiVersion": "v1", "kind": "List", "items": CAPTURED}, indent=1) + "\n"
        )
        RECORDED_ALLOWLIST.write_text(json.dumps(allowed, indent=1) + "\n")
    assert problems == [], f"the real node left things behind: {problems}"


class Node:
    """One test's namespace on the real node: its pods, and the kubelet's Events about them."""

    def __init__(self, cluster, real: RealNode):
        self.cluster, self.real = cluster, real
        self.ns = cluster.namespace("real")
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",  # no controller-manager makes it
                "metadata": {"name": "default", "namespace": self.ns},
                "automountServiceAccountToken": False,
            }
        )

    def pod(
        self, name: str, image: str, policy: str = "Always", command: list[str] | None = None
    ) -> None:
        container = {"name": name.split("-")[0], "image": image, "imagePullPolicy": policy}
        if command:
            container["command"] = command
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
                    "containers": [container],
                },
            }
        )

    def delete(self, name: str) -> None:
        """Stop the kubelet trying: delete, then force (1.20 leaves a never-started pod
        Terminating)."""
        local = self.cluster.local
        local.request(
            "DELETE", f"/api/v1/namespaces/{self.ns}/pods/{name}", {"gracePeriodSeconds": 1}
        )
        local.request(
            "DELETE", f"/api/v1/namespaces/{self.ns}/pods/{name}", {"gracePeriodSeconds": 0}
        )
        wait_for(
            lambda: local.request("GET", f"/api/v1/namespaces/{self.ns}/pods/{name}")[0] == 404,
            30,
            what=f"pod {name} gone",
        )

    def events(self) -> list[dict]:
        items = json.loads(
            self.cluster.kubectl("get", "events", "-n", self.ns, "-o", "json").stdout
        )["items"]
        return [e for e in items if (e.get("source") or {}).get("component") == "kubelet"]

    def did(self, pod: str) -> dict[str, int]:
        return reported(self.events(), pod)

    def finding(self, rule: str, workload: str) -> dict | None:
        return self.cluster.by_workload(self.ns).get((rule, workload))

    def settled(self, rule: str, pod: str, timeout: float = 45) -> tuple[dict, dict[str, int]]:
        """(Finding, what the kubelet reported) once the Finding's count is the kubelet's number of
        attempts (its Pulling and already-present Events) and its outcomes are what the kubelet
        reported - both read again on every try: an outcome Event can be written a status
        interval after the pull it ends."""

        def check():
            did, f = self.did(pod), self.finding(rule, pod)
            status = (f or {}).get("status") or {}
            return (
                (f, did)
                if (
                    status.get("count") == did["pulling"] + did["present"]
                    and "outcomes" in status
                    and outcomes(f) == expected_outcomes(did)
                )
                else None
            )

        return wait_for(
            check,
            timeout,
            what=f"the {rule} Finding of {pod} to count the kubelet's attempts and their outcomes",
        )

    def quiesce(self, pod: str, still: float = 3.0, timeout: float = 45) -> dict[str, int]:
        """What the kubelet reported for ``pod`` once it stops changing (after a delete, its last
        Events are still posted: the recorder is asynchronous)."""
        last, since, deadline = None, time.monotonic(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.did(pod)
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= still:
                return now
            time.sleep(0.5)
        raise AssertionError(f"the kubelet kept reporting on {pod} for {timeout}s: {last}")

    def capture(self) -> list[dict]:
        events = self.events()
        CAPTURED.extend(_stable(e) for e in events)
        return events

    def scan(self, events: list[dict], workdir: Path) -> dict[tuple[str, str], dict]:
        """`pullwatch scan` over these Events with the allowlist in force: {(rule, workload):
        Finding}.
        It must read every record and skip none."""
        (workdir / "events.json").write_text(
            json.dumps({"apiVersion": "v1", "kind": "List", "items": events})
        )
        (workdir / "allow.json").write_text(
            self.cluster.kubectl("get", "allowedimages", "-o", "json").stdout
        )
        r = subprocess.run(
            [
                PULLWATCH,
                "scan",
                str(workdir / "events.json"),
                "-a",
                str(workdir / "allow.json"),
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert "skipped: 0" in r.stderr and "damaged" not in r.stderr, r.stderr
        return {
            (f["spec"]["rule"], f["spec"]["workload"]["name"]): f for f in finding_items(r.stdout)
        }


def _stable(event: dict) -> dict:
    """An Event as kubectl dumps it, minus what only the API server bookkeeping adds."""
    e = json.loads(json.dumps(event))
    e["metadata"].pop("managedFields", None)
    e["metadata"].pop("selfLink", None)
    return e


def outcomes(f: dict) -> dict:
    o = dict(f["status"]["outcomes"])
    o.pop("lastError", None)
    return o


def agree_with_scan(node: Node, pods_rules: list[tuple[str, str]], workdir: Path) -> None:
    scanned = node.scan(node.capture(), workdir)
    for rule, pod in pods_rules:
        live, offline = node.finding(rule, pod), scanned[(rule, pod)]
        assert offline["status"]["count"] == live["status"]["count"], (rule, pod)
        assert outcomes(offline) == outcomes(live), (rule, pod)
        assert (offline["status"]["outcomes"].get("lastError") or {}).get("class") == (
            live["status"]["outcomes"].get("lastError") or {}
        ).get("class")
    assert {k for k in scanned if k[1] in {p for _, p in pods_rules}} == set(pods_rules)


def columns(cluster, ns: str, name: str) -> dict[str, str]:
    """A Finding's row of `kubectl get findings -o wide` (its printer columns), by header."""
    header, row = cluster.kubectl(
        "get", "finding", name, "-n", ns, "-o", "wide"
    ).stdout.splitlines()[:2]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    # headers may have one space inside ("LAST SEEN"): a column starts after two spaces or more
    starts = [i for i in starts if i == 0 or header[i - 2 : i] == "  "]
    bounds = list(zip(starts, starts[1:] + [None]))
    return {header[a:b].strip(): row[a:b].strip() for a, b in bounds}


def no_skips(op) -> None:
    """The operator read every one of the kubelet's Events: none skipped as malformed."""
    skipped = {k: v for k, v in op.metrics().items() if k[0] == "pullwatch_events_skipped_total"}
    assert sum(skipped.values()) == 0, skipped
    assert op.metric("pullwatch_events_examined_total") > 0


# -- the tests -----------------------------------------------------------------------------
def test_always_is_one_pull_that_ran_and_allowed_and_unlisted_images_are_judged(
    cluster, node, start_operator, tmp_path
):
    n = Node(cluster, node)
    op = start_operator(
        "--standalone", "-n", n.ns
    )  # its namespace only: other tests' Events are not its
    n.pod("hunter", node.hunter, "Always")
    n.pod("allowed", node.allowed, "Always")
    n.pod("unlisted", node.unlisted, "Always")
    did = wait_for(
        lambda: (lambda d: d if d["pulled"] == 1 else None)(n.did("hunter")),
        60,
        what="hunter pulled",
    )
    assert did == {"pulling": 1, "pulled": 1, "present": 0, "failed": 0, "backoff": 0, "errors": 0}
    for rule in (SCANNER, SUSPICIOUS):
        f, _ = n.settled(rule, "hunter")
        assert f["status"]["count"] == 1
        assert outcomes(f) == {"succeeded": 1, "cached": 0, "failed": 0, "backoff": 0, "ran": "yes"}
        assert f["spec"]["image"] == node.hunter and f["spec"]["node"] == node.name
        assert f["spec"]["reportedBy"]["component"] == "kubelet"
        assert f["spec"]["workload"] == {"kind": "Pod", "name": "hunter", "source": "read"}
    wait_for(
        lambda: n.did("unlisted")["pulled"] == 1 and n.did("allowed")["pulled"] == 1,
        60,
        what="all pulled",
    )
    unlisted, _ = n.settled(SUSPICIOUS, "unlisted")
    assert unlisted["status"]["count"] == 1 and outcomes(unlisted)["ran"] == "yes"
    assert n.finding(SCANNER, "unlisted") is None
    assert n.finding(SUSPICIOUS, "allowed") is None and n.finding(SCANNER, "allowed") is None
    row = columns(cluster, n.ns, n.finding(SCANNER, "hunter")["metadata"]["name"])
    assert (row["KIND"], row["WORKLOAD"], row["COUNT"], row["RAN"]) == ("Pod", "hunter", "1", "yes")
    agree_with_scan(
        n, [(SCANNER, "hunter"), (SUSPICIOUS, "hunter"), (SUSPICIOUS, "unlisted")], tmp_path
    )
    no_skips(op)


def test_if_not_present_on_a_present_image_is_one_cached_pull(
    cluster, node, start_operator, tmp_path
):
    n = Node(cluster, node)
    op = start_operator(
        "--standalone", "-n", n.ns
    )  # its namespace only: other tests' Events are not its
    node.preload(node.hunter)  # in the node's store, put there without the kubelet (no Events)
    n.pod("cached", node.hunter, "IfNotPresent")
    did = wait_for(
        lambda: (lambda d: d if d["present"] == 1 else None)(n.did("cached")),
        60,
        what="already present",
    )
    assert did == {"pulling": 0, "pulled": 0, "present": 1, "failed": 0, "backoff": 0, "errors": 0}
    f, _ = n.settled(SCANNER, "cached")
    assert f["status"]["count"] == 1
    assert outcomes(f) == {"succeeded": 0, "cached": 1, "failed": 0, "backoff": 0, "ran": "yes"}
    agree_with_scan(n, [(SCANNER, "cached"), (SUSPICIOUS, "cached")], tmp_path)
    no_skips(op)


def test_a_crash_loop_counts_every_restart_exactly_across_an_operator_restart(
    cluster, node, start_operator, tmp_path
):
    """Each restart is another "already present" on the same Event (count rising, a MODIFIED)."""
    n = Node(cluster, node)
    op = start_operator(
        "--standalone", "-n", n.ns
    )  # its namespace only: other tests' Events are not its
    node.preload(node.hunter)
    n.pod("loop", node.hunter, "IfNotPresent", command=["/bin/busybox", "sh", "-c", "exit 1"])
    wait_for(lambda: n.did("loop")["present"] >= 2, 60, what="a second start")
    n.settled(SCANNER, "loop")
    op.kill()  # the restart must neither lose nor re-count what the first operator counted
    op = start_operator("--standalone", "-n", n.ns)
    wait_for(lambda: n.did("loop")["present"] >= 3, 90, what="a third start")
    n.delete("loop")
    did = n.quiesce("loop")
    assert did["pulling"] == 0 and did["present"] >= 3
    series = [
        e for e in n.events() if e["involvedObject"]["name"] == "loop" and e["reason"] == "Pulled"
    ]
    assert len(series) == 1 and series[0]["count"] == did["present"], (
        "one Event object, its count rising"
    )
    f, settled_on = n.settled(SCANNER, "loop")
    assert settled_on == did and f["status"]["count"] == did["present"]
    assert outcomes(f) == expected_outcomes(did)
    agree_with_scan(n, [(SCANNER, "loop"), (SUSPICIOUS, "loop")], tmp_path)
    no_skips(op)


@pytest.mark.parametrize("case", ["missing tag", "unreachable registry"])
def test_a_pull_that_never_succeeds_fires_and_says_nothing_ran(
    cluster, node, start_operator, case, tmp_path
):
    n = Node(cluster, node)
    op = start_operator(
        "--standalone", "-n", n.ns
    )  # its namespace only: other tests' Events are not its
    if case == "missing tag":
        image, error = f"{node.registry}/aquasec/kube-hunter:9.9.9-missing", "not found"
    else:
        image, error = (
            f"127.0.0.1:{free_port()}/aquasec/kube-hunter:0.6.8",
            "unreachable",
        )  # nothing listens
    n.pod("doomed", image, "Always")
    wait_for(
        lambda: n.did("doomed")["pulling"] >= 2 and n.did("doomed")["backoff"] >= 1,
        90,
        what="a retried pull",
    )
    n.delete("doomed")
    did = n.quiesce("doomed")
    assert did["pulled"] == 0 and did["present"] == 0 and did["failed"] >= 2 and did["errors"] >= 2
    for rule in (SCANNER, SUSPICIOUS):
        f, settled_on = n.settled(rule, "doomed")
        assert settled_on == did and f["status"]["count"] == did["pulling"]
        assert outcomes(f) == expected_outcomes(did) and outcomes(f)["ran"] == "no"
        assert f["status"]["outcomes"]["lastError"]["class"] == error
    row = columns(cluster, n.ns, n.finding(SCANNER, "doomed")["metadata"]["name"])
    assert (row["COUNT"], row["RAN"], row["FAILED"], row["ERROR"]) == (
        str(did["pulling"]),
        "no",
        str(did["failed"]),
        error,
    )
    agree_with_scan(n, [(SCANNER, "doomed"), (SUSPICIOUS, "doomed")], tmp_path)
    no_skips(op)
