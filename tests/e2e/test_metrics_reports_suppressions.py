"""Findings that reach people (issue 11), against the real API server: Prometheus metrics scraped
from the operator's real endpoint, OpenReports Reports validated by the real CRD schema,
Suppressions, and scanner names as data. Each test's operator watches only its own namespaces'
Events, so that what it counts is exactly what the test did."""

from __future__ import annotations

import datetime
import json
import time

from harness import ROOT, SCANNER, SUSPICIOUS, wait_for

from kubelet import EPOCH, image_event

SUPPRESSION = "pullwatch.dev/v1alpha1"
SOON = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)).strftime(
    "%Y-%m-%dT%H:%M:%SZ"
)  # every Suppression must expire (at most 90 days after its creation)


class Pulls:
    def __init__(self, cluster, ns):
        self.cluster, self.ns, self.seq = cluster, ns, 0

    def pull(self, pod: str, image: str, count: int = 1, **kw) -> dict:
        self.seq += 1
        return self.cluster.create_event(
            image_event("Pulling", self.ns, pod, image, count=count, seq=self.seq, **kw)
        )


def test_metrics_are_scraped_with_the_values_of_known_pulls(cluster, start_operator):
    ns = cluster.namespace("metrics")
    kubelet = Pulls(cluster, ns)
    op = start_operator("--standalone", "-n", ns, "--census-interval", "1")
    kubelet.pull("hunter-a", "aquasec/kube-hunter:0.6.8", count=2)
    kubelet.pull("hunter-b", "aquasec/kube-hunter:0.6.8", count=2)
    kubelet.pull("miner", "evil/miner:1", count=3)
    bad = image_event("Pulling", ns, "broken", "x", seq=99)
    bad["message"] = 'Pulling image "' + "x" * 2000  # never closed: a malformed image Event
    cluster.create_event(bad)
    scanner = {"rule": SCANNER, "severity": "high"}
    suspicious = {"rule": SUSPICIOUS, "severity": "medium"}
    wait_for(
        lambda: op.metric("pullwatch_pulls_detected_total", **suspicious) == 7,
        30,
        what="7 suspicious pulls",
    )
    assert op.metric("pullwatch_pulls_detected_total", **scanner) == 4
    wait_for(
        lambda: (
            op.metric("pullwatch_findings", **scanner) == 2
            and op.metric("pullwatch_findings", **suspicious) == 3
        ),
        30,
        what="the Findings gauges",
    )
    assert op.metric("pullwatch_events_examined_total") == 4
    assert (
        op.metric(
            "pullwatch_events_skipped_total",
            reason="image event with no quoted image in its message",
        )
        == 1
    )
    assert op.metric("pullwatch_api_writes_total", verb="create", outcome="ok") == 5
    assert op.metric("pullwatch_active") == 1
    assert op.metric("pullwatch_event_to_finding_seconds_count") >= 5
    assert op.metric("pullwatch_allowlist_objects") >= 0
    kubelet.pull("hunter-c", "aquasec/kube-hunter:0.6.8")  # and the counters move
    wait_for(
        lambda: op.metric("pullwatch_pulls_detected_total", **scanner) == 5,
        30,
        what="the scanner counter to move",
    )


def test_openreports_reports_pass_the_real_crd_schema_and_go_with_their_findings(
    cluster, start_operator
):
    cluster.kubectl(
        "apply",
        "-f",
        str(ROOT / "manifests" / "components" / "openreports" / "reports.openreports.io.yaml"),
    )
    cluster.kubectl(
        "apply", "-f", str(ROOT / "manifests" / "components" / "openreports" / "rbac.yaml")
    )
    cluster.kubectl("wait", "--for=condition=established", "crd/reports.openreports.io")
    ns, stale = cluster.namespace("reports"), cluster.namespace("stalereports")
    kubelet, old = Pulls(cluster, ns), Pulls(cluster, stale)
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": SUPPRESSION,
                "kind": "Suppression",
                "metadata": {"name": "accepted", "namespace": ns},
                "spec": {"reason": "our build cache", "workloads": ["cache"], "expires": SOON},
            }
        ),
    )
    now = int(time.time()) - EPOCH  # the tests' Event stamps count from EPOCH
    old.pull("gone", "evil/old:1", t=now - 2 * 86400)
    op = start_operator(
        "--standalone", "-n", ns, "-n", stale, "--openreports", "--openreports-interval", "1"
    )
    kubelet.pull(
        "hunter", "aquasec/kube-hunter:0.6.8", count=2, t=now
    )  # seen now: retention keeps them
    kubelet.pull("miner", "evil/miner:1", t=now)
    kubelet.pull("cache", "evil/cache:1", t=now)

    def report(namespace):
        r = cluster.kubectl(
            "get", "reports.openreports.io", "pullwatch", "-n", namespace, "-o", "json", check=False
        )
        return json.loads(r.stdout) if r.returncode == 0 else None

    got = wait_for(
        lambda: (lambda r: r if r and len(r.get("results", [])) == 4 else None)(report(ns)),
        30,
        what="the namespace's Report with four results",
    )
    assert got["source"] == "pullwatch" and got["summary"] == {
        "pass": 0,
        "fail": 3,
        "warn": 0,
        "error": 0,
        "skip": 1,
    }
    assert got["scope"] == {"apiVersion": "v1", "kind": "Namespace", "name": ns}
    first = got["results"][0]
    assert (first["policy"], first["severity"], first["result"], first["scored"]) == (
        SCANNER,
        "high",
        "fail",
        True,
    )
    assert set(first["timestamp"]) == {"seconds", "nanos"} and first["timestamp"]["seconds"] > 0
    assert first["resources"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "hunter", "namespace": ns}
    ]
    assert first["properties"]["riskScore"] == "81" and first["properties"]["count"] == "2"
    assert first["properties"]["resultID"].startswith("scanner-hunter-")
    skipped = next(r for r in got["results"] if r["result"] == "skip")
    assert skipped["properties"]["suppressedBy"] == f"{ns}/accepted"
    # Nothing was pruned by the structural schema: what is stored is what pullwatch wrote.
    from pullwatch.core.reports import report_for  # noqa: F401 - the same builder the operator used

    assert all(isinstance(v, str) for r in got["results"] for v in r["properties"].values())
    # The stale namespace: its Finding goes by retention (a second operator with --retention) and so
    # does its Report.
    wait_for(lambda: report(stale) is not None, 30, what="the stale namespace's Report")
    op.stop()
    # Retention goes by pullwatch's own clock: make the stale Finding one last observed two days
    # ago (an Event's own time is never trusted for deletion).
    for name, f in cluster.findings(stale).items():
        f["status"]["lastObserved"] = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 2 * 86400)
        )
        code, body = cluster.local.request(
            "PUT", f"/apis/pullwatch.dev/v1alpha1/namespaces/{stale}/findings/{name}/status", f
        )
        assert code == 200, body
    start_operator(
        "--standalone",
        "-n",
        ns,
        "-n",
        stale,
        "--openreports",
        "--openreports-interval",
        "1",
        "--retention",
        "1d",
        "--maintenance-interval",
        "2",
    )
    wait_for(
        lambda: report(stale) is None and cluster.findings(stale) == {},
        60,
        what="the stale Finding and its Report removed",
    )
    # the sweep that deleted the stale Finding judged the fresh ones too: they stay, and so
    # does their Report
    assert len(cluster.findings(ns)) == 4
    wait_for(lambda: len((report(ns) or {}).get("results", [])) == 4, 30, what="the fresh Report")


def _supp(name, ns, spec):
    return {
        "apiVersion": SUPPRESSION,
        "kind": "Suppression",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def _ready(cluster, kind, name, ns=None):
    where = ["-n", ns] if ns else []
    obj = json.loads(cluster.kubectl("get", kind, name, *where, "-o", "json").stdout)
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    return {c["type"]: c for c in status.get("conditions", [])}.get("Ready"), status


def test_suppressions_cover_the_right_things_are_counted_and_expire(cluster, start_operator):
    a, b = cluster.namespace("suppa"), cluster.namespace("suppb")
    pa, pb = Pulls(cluster, a), Pulls(cluster, b)

    def after(seconds: float) -> str:
        moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    expires = after(86400)  # in force while the pulls are judged; brought forward below
    for obj in (
        _supp(  # the scanner rule: only from the operator's namespace (cluster admins)
            f"cis-{a}",
            "pullwatch-system",
            {
                "reason": "weekly CIS benchmark",
                "rules": ["scanner"],
                "images": ["aquasec/kube-bench:*"],
                "workloads": ["cis-*"],
                "namespaces": [a],
                "expires": SOON,
            },
        ),
        _supp(
            "temporary",
            a,
            {"reason": "until the fix ships", "workloads": ["legacy"], "expires": expires},
        ),
        _supp("overreach", a, {"reason": "x", "namespaces": ["*"], "expires": SOON}),
        _supp(
            f"ci-{b}",
            "pullwatch-system",
            {"reason": "CI builds", "rules": ["suspicious"], "namespaces": [b], "expires": SOON},
        ),
    ):
        cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
    op = start_operator(
        "--standalone", "-n", a, "-n", b, "--maintenance-interval", "3", "--census-interval", "1"
    )
    pa.pull("cis-weekly", "aquasec/kube-bench:v0.7.0", count=2)  # scanner: covered; suspicious: not
    pa.pull("hunter", "aquasec/kube-hunter:0.6.8")  # not covered: another workload and image
    pa.pull("legacy", "evil/legacy:1", count=3)  # covered until it expires
    pb.pull("builder", "evil/builder:1")  # covered by the cluster-wide one

    def cover(ns, rule, workload):
        f = cluster.by_workload(ns).get((rule, workload))
        return f and (f["status"].get("suppression") or {}).get("name")

    wait_for(
        lambda: (
            cover(a, SCANNER, "cis-weekly") == f"cis-{a}"
            and cover(b, SUSPICIOUS, "builder") == f"ci-{b}"
            and cover(a, SUSPICIOUS, "legacy") == "temporary"
        ),
        30,
        what="the covered Findings",
    )
    assert not cover(a, SUSPICIOUS, "cis-weekly") and not cover(a, SCANNER, "hunter")
    f = cluster.by_workload(a)[(SCANNER, "cis-weekly")]
    assert (
        f["status"]["count"] == 2 and f["status"]["suppressedPulls"] == 2
    )  # still counted: evidence
    cond, _ = wait_for(
        lambda: _ready(cluster, "suppressions", f"cis-{a}", "pullwatch-system"),
        20,
        what="the Suppression's status",
    )
    assert cond["status"] == "True"
    wait_for(
        lambda: (
            _ready(cluster, "suppressions", f"cis-{a}", "pullwatch-system")[1].get("hidden") == 2
        ),
        30,
        what="hidden pulls counted",
    )
    cond, _ = wait_for(
        lambda: _ready(cluster, "suppressions", "overreach", a), 20, what="the refused one's status"
    )
    assert (
        cond["status"] == "False"
        and "allowed only on Suppressions in pullwatch-system" in cond["message"]
    )
    # every detected pull is counted; the covered ones are also counted apart (alerts take the
    # difference)
    assert op.metric("pullwatch_pulls_detected_total", rule=SCANNER, severity="high") == 3
    assert op.metric("pullwatch_pulls_suppressed_total", rule=SCANNER, severity="high") == 2
    table = cluster.kubectl("get", "suppressions", "-n", "pullwatch-system").stdout.splitlines()
    assert table[0].split()[:8] == [
        "NAME",
        "RULES",
        "IMAGES",
        "WORKLOADS",
        "EXPIRES",
        "HIDDEN",
        "FINDINGS",
        "READY",
    ]
    # the temporary one expires: it stops covering, and says so
    temporary = _supp(
        "temporary",
        a,
        {"reason": "until the fix ships", "workloads": ["legacy"], "expires": after(2)},
    )
    cluster.kubectl("apply", "-f", "-", input=json.dumps(temporary))
    wait_for(
        lambda: not cover(a, SUSPICIOUS, "legacy"),
        90,
        what="the expired Suppression to stop covering",
    )
    cond, _ = wait_for(
        lambda: (lambda r: r if r and r[0]["status"] == "False" else None)(
            _ready(cluster, "suppressions", "temporary", a)
        ),
        30,
        what="Expired in its status",
    )
    assert cond["reason"] == "Expired"


def test_a_new_scanner_name_takes_effect_without_a_restart(cluster, start_operator):
    ns = cluster.namespace("newscanner")
    kubelet = Pulls(cluster, ns)
    start_operator("--standalone", "-n", ns)
    kubelet.pull("secrets-a", "trufflesecurity/trufflehog:3.63")
    wait_for(
        lambda: (SUSPICIOUS, "secrets-a") in cluster.by_workload(ns),
        20,
        what="the pull, as merely suspicious",
    )
    assert (SCANNER, "secrets-a") not in cluster.by_workload(ns)
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": SUPPRESSION,
                "kind": "ScannerImages",
                "metadata": {"name": "e2e-secret-scanners"},
                "spec": {"names": ["trufflehog", "Not/Valid"]},
            }
        ),
    )
    try:
        cond, status = wait_for(
            lambda: _ready(cluster, "scannerimages", "e2e-secret-scanners"),
            20,
            what="the ScannerImages status",
        )
        assert cond["status"] == "False" and status["names"] == 1 and status["namesInForce"] >= 12
        kubelet.pull("secrets-b", "trufflesecurity/trufflehog:3.63")
        wait_for(
            lambda: (SCANNER, "secrets-b") in cluster.by_workload(ns),
            20,
            what="a scanner Finding for trufflehog",
        )
    finally:
        cluster.kubectl("delete", "scannerimages", "e2e-secret-scanners")
