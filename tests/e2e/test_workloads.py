"""Findings at cluster scale (issue 10): the workload as the unit, caps with exact overflow,
retention.

Each test starts its own operator (never two at once: a second writer would blur what is tested).

No controller-manager runs here, so the tests create what the controllers would: a Deployment,
its ReplicaSets (named <deployment>-<pod-template-hash>) and their pods (named by generateName),
with the ownerReferences the controllers set. The operator reads them (metadata only) to find
each pod's workload.
"""

from __future__ import annotations

import json
import time

from harness import SCANNER, SUSPICIOUS, Workloads, wait_for

from kubelet import EPOCH, image_event

ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def generated(base: str, i: int) -> str:
    return base + "".join(ALPHABET[(i // 27**k) % 27] for k in range(5))


class Truth:
    """The kubelet's side: creates each pull as an Event and remembers what it did."""

    def __init__(self, cluster, ns):
        self.cluster, self.ns, self.seq = cluster, ns, 0

    def pull(self, pod: str, image: str, count: int = 1, kind: str = "Pulling", **kw) -> dict:
        self.seq += 1
        return self.cluster.create_event(
            image_event(kind, self.ns, pod, image, count=count, seq=self.seq, **kw)
        )


def test_a_deployments_replicas_and_its_rollout_are_one_finding_per_rule_and_repository(
    cluster, start_operator
):
    ns = cluster.namespace("deploy")
    start_operator("--standalone", "-n", ns)
    objs, kubelet = Workloads(cluster, ns), Truth(cluster, ns)
    dep = objs.deployment("web", "evil/web:1")
    rs1 = objs.replicaset(dep, "web-7d9f8b6c5d", "7d9f8b6c5d", "evil/web:1")
    pods1 = [
        objs.pod(
            "ReplicaSet",
            rs1,
            generated("web-7d9f8b6c5d-", i),
            "evil/web:1",
            labels={"pod-template-hash": "7d9f8b6c5d"},
        )["metadata"]["name"]
        for i in range(8)
    ]
    for i, pod in enumerate(pods1):
        kubelet.pull(pod, "evil/web:1", count=1 + i % 2, node=f"node-{i % 3}")
    # the rollout: a new ReplicaSet (new hash), a new tag, the same repository
    rs2 = objs.replicaset(dep, "web-5c4b9d8f67", "5c4b9d8f67", "evil/web:2")
    pods2 = [
        objs.pod(
            "ReplicaSet",
            rs2,
            generated("web-5c4b9d8f67-", i),
            "evil/web:2",
            labels={"pod-template-hash": "5c4b9d8f67"},
        )["metadata"]["name"]
        for i in range(4)
    ]
    for pod in pods2:
        kubelet.pull(pod, "evil/web:2", node="node-0")
        kubelet.pull(
            pod, "evil/web:2", kind="Pulled", node="node-0"
        )  # completes that pull: not another
    expected = sum(1 + i % 2 for i in range(8)) + 4
    by = wait_for(
        lambda: (
            lambda b: (
                b
                if b.get((SUSPICIOUS, "web"), {}).get("status", {}).get("count") == expected
                else None
            )
        )(cluster.by_workload(ns)),
        30,
        what=f"one Finding with {expected} pulls",
    )
    assert list(by) == [(SUSPICIOUS, "web")]
    f = by[(SUSPICIOUS, "web")]
    assert f["spec"]["workload"] == {"kind": "Deployment", "name": "web", "source": "read"}
    assert f["spec"]["repository"] == "docker.io/evil/web"
    status = f["status"]
    assert {i["image"]: i["count"] for i in status["images"]} == {
        "evil/web:1": expected - 4,
        "evil/web:2": 4,
    }
    assert (status["podCount"], status["nodeCount"], len(status["pods"])) == (12, 3, 10)
    assert status["outcomes"]["succeeded"] == 4 and status["outcomes"]["ran"] == "yes"
    row = next(
        line.split()
        for line in cluster.kubectl("get", "findings", "-n", ns).stdout.splitlines()[1:]
    )
    assert row[3:8] == ["Deployment", "web", "evil/web:1", str(expected), "yes"]


def test_a_cronjobs_runs_and_a_daemonsets_nodes_are_one_finding_each(cluster, start_operator):
    ns = cluster.namespace("cron")
    start_operator("--standalone", "-n", ns)
    objs, kubelet = Workloads(cluster, ns), Truth(cluster, ns)
    for minutes in (29_375_040, 29_375_100, 29_375_160):  # three runs: three Jobs, each with a pod
        job = objs.job("backup", f"backup-{minutes}", "evil/backup:1")
        pod = objs.pod("Job", job, generated(f"backup-{minutes}-", minutes % 97), "evil/backup:1")
        kubelet.pull(pod["metadata"]["name"], "evil/backup:1")
    job = objs.job(
        None, "migrate-20261118", "evil/migrate:1"
    )  # a Job of its own, named like a date
    kubelet.pull(
        objs.pod("Job", job, generated("migrate-20261118-", 1), "evil/migrate:1")["metadata"][
            "name"
        ],
        "evil/migrate:1",
    )
    # a DaemonSet's pods (no DaemonSet object is needed to be read: its pods' owner says it)
    ds = {"metadata": {"name": "agent", "uid": "0f3c1a1e-0000-4000-8000-000000000001"}}
    for n in range(5):
        pod = objs.pod("DaemonSet", ds, generated("agent-", n), "evil/agent:1")
        kubelet.pull(pod["metadata"]["name"], "evil/agent:1", node=f"node-{n}")

    def counted() -> dict | None:
        # every pull in: a Finding's count reaches its end over more than one status write
        b = cluster.by_workload(ns)
        counts = {w: (f.get("status") or {}).get("count") for (_, w), f in b.items()}
        return b if len(b) == 3 and counts.get("backup") == 3 and counts.get("agent") == 5 else None

    by = wait_for(counted, 30, what=lambda: f"three Findings: {cluster.by_workload(ns)}")
    assert by[(SUSPICIOUS, "backup")]["spec"]["workload"] == {
        "kind": "CronJob",
        "name": "backup",
        "source": "read",
    }
    assert by[(SUSPICIOUS, "backup")]["status"]["count"] == 3
    assert by[(SUSPICIOUS, "migrate-20261118")]["spec"]["workload"]["kind"] == "Job"
    agent = by[(SUSPICIOUS, "agent")]
    assert agent["spec"]["workload"] == {"kind": "DaemonSet", "name": "agent", "source": "read"}
    assert (agent["status"]["count"], agent["status"]["nodeCount"]) == (5, 5)


def test_caps_hold_and_the_overflow_is_counted_exactly(cluster, start_operator):
    ns = cluster.namespace("caps")
    kubelet = Truth(cluster, ns)
    op = start_operator("--standalone", "-n", ns, "--max-findings-per-namespace", "3")
    for i in range(10):
        kubelet.pull(f"job{i}", f"evil/img{i}:1", count=2)
    kubelet.pull("hunter", "aquasec/kube-hunter:0.6.8")
    total = 10 * 2 + 1  # every suspicious pull: ten workloads twice, and kube-hunter's once
    # Which three come first is the operator's choice (a scanner pull's workload is read first),
    # so the test asserts the split's invariants, not one order.

    def settled():
        by = cluster.by_workload(ns)
        counts = [
            (f.get("status") or {}).get("count", 0)
            for (rule, _), f in by.items()
            if rule == SUSPICIOUS
        ]
        return by if (SUSPICIOUS, "(overflow)") in by and sum(counts) == total else None

    by = wait_for(settled, 30, what=f"{total} suspicious pulls, with an overflow Finding")
    regular = [f for (rule, w), f in by.items() if rule == SUSPICIOUS and w != "(overflow)"]
    assert len(regular) == 3
    over = by[(SUSPICIOUS, "(overflow)")]
    folded = total - sum(f["status"]["count"] for f in regular)
    assert over["status"]["count"] == folded and folded >= 7 * 2
    assert over["spec"]["overflow"] is True and over["status"]["folded"]["identities"] == 8
    assert (SCANNER, "hunter") in by  # the scanner rule's own caps: never folded by a flood
    assert op.logs().count(f"cap reached for rule suspicious in namespace {ns}") == 1
    assert op.metric("pullwatch_findings_folded_total", rule=SUSPICIOUS, namespace=ns) == folded


def test_retention_deletes_a_stale_finding_and_keeps_a_labelled_one(cluster, start_operator):
    """Retention goes by pullwatch's own clock (status.lastObserved), never by an Event's time:
    of two Findings a pullwatch last observed two days ago, the one a person labelled keep
    stays and the other goes at the first sweep; once the label is taken off, a later sweep
    deletes it too. A pull whose Event claims to be two days old, observed now, stays."""
    ns = cluster.namespace("retention")
    kubelet = Truth(cluster, ns)
    now = int(time.time())
    two_days_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 2 * 86400))

    def workloads() -> set[str]:
        return {f["spec"]["workload"]["name"] for f in cluster.findings(ns).values()}

    writer = start_operator("--standalone", "-n", ns)  # no retention yet
    for pod in ("stale", "kept"):
        kubelet.pull(pod, f"evil/{pod}:1")
    wait_for(lambda: workloads() == {"stale", "kept"}, 30, what="the two Findings")
    writer.stop()
    kept = ""
    for name, f in cluster.findings(ns).items():  # as if written two days ago
        f["status"]["lastObserved"] = two_days_ago
        status, body = cluster.local.request(
            "PUT", f"/apis/pullwatch.dev/v1alpha1/namespaces/{ns}/findings/{name}/status", f
        )
        assert status == 200, body
        if f["spec"]["workload"]["name"] == "kept":
            kept = name
    cluster.kubectl("label", "finding", kept, "-n", ns, "pullwatch.dev/keep=true")
    kubelet.pull("fresh", "evil/fresh:1", t=now - EPOCH - 2 * 86400)  # an old-looking Event
    op = start_operator(
        "--standalone", "-n", ns, "--retention", "1d", "--maintenance-interval", "1"
    )
    wait_for(
        lambda: workloads() == {"kept", "fresh"},
        60,
        what="the stale Finding deleted, the kept and the fresh ones left",
    )
    assert f"retention: deleted Finding {ns}/" in op.logs()
    cluster.kubectl("label", "finding", kept, "-n", ns, "pullwatch.dev/keep-")
    wait_for(lambda: workloads() == {"fresh"}, 60, what="a later sweep to delete the unkept one")


def test_the_scanner_finding_is_written_first_in_a_flood(cluster, start_operator):
    """A write queue ordered by severity: a flood of new medium Findings never delays a scanner's.
    The flood is in the cluster before the operator starts, and with the scanner's Event it fits
    in one list page (500), so that all of it is due at once, whatever the machine's speed."""
    ns = cluster.namespace("flood")
    flood = [image_event("Pulling", ns, f"w{i}", f"evil/flood{i}:1", seq=i) for i in range(450)]
    cluster.create_events(flood)
    # the last Event of the flood
    cluster.create_event(
        image_event("Pulling", ns, "hunter", "aquasec/kube-hunter:0.6.8", seq=9999)
    )
    start_operator("--standalone", "-n", ns, "--max-findings-per-namespace", "2000")
    wait_for(lambda: (SCANNER, "hunter") in cluster.by_workload(ns), 60, what="the scanner Finding")
    creates = [
        json.loads(line)
        for line in cluster.local.audit_log.read_text(errors="replace").splitlines()
        if ns in line and '"create"' in line and "findings" in line
    ]
    order = [
        e["objectRef"]["name"]
        for e in sorted(
            (
                e
                for e in creates
                if e.get("stage") == "ResponseComplete"
                and (e.get("objectRef") or {}).get("namespace") == ns
            ),
            key=lambda e: e["requestReceivedTimestamp"],
        )
    ]
    rank = next(i for i, name in enumerate(order) if name.startswith("scanner-hunter-"))
    # The scanner's pull waits for one pod read (urgent: first in the queue), while the flood's
    # pulls past the namespace's share of reads are inferred at once and start in the routine
    # slots; the slot kept for urgent writes takes the scanner's as soon as its read is back. How
    # many routine creates start meanwhile depends on the machine's speed; without the ordering
    # the scanner's would be anywhere among the 452.
    assert rank < 23, f"the scanner Finding was create number {rank + 1} of the flood"
    wait_for(
        lambda: cluster.finding_count(ns) == 452, 180, interval=1, what="the whole flood written"
    )
