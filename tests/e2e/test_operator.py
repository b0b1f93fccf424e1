"""The operator against a real API server: RBAC, Findings, series, allowlist edits, scan parity."""

from __future__ import annotations

import json
import subprocess

import yaml
from harness import PULLWATCH, ROOT, SA, SCANNER, SUSPICIOUS, wait_for

from kubelet import image_event
from paths import finding_items

HUNTER = "aquasec/kube-hunter:0.6.8"


def allowed(name, images, namespaces=None):
    spec = {"images": images}
    if namespaces is not None:
        spec["namespaces"] = namespaces
    return {
        "apiVersion": "pullwatch.dev/v1alpha1",
        "kind": "AllowedImages",
        "metadata": {"name": name},
        "spec": spec,
    }


def ready(cluster, name):
    obj = json.loads(cluster.kubectl("get", "allowedimages", name, "-o", "json").stdout)
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    return {c["type"]: c for c in status.get("conditions", [])}.get("Ready")


def test_manifests_apply_and_rbac_is_least_privilege(cluster):
    assert (
        cluster.kubectl("get", "deployment", "pullwatch", "-n", "pullwatch-system").returncode == 0
    )
    who = f"--as=system:serviceaccount:{SA[0]}:{SA[1]}"

    def can(*args):
        r = cluster.kubectl("auth", "can-i", *args, who, check=False)
        return r.stdout.strip() == "yes"

    assert can("watch", "events") and can("list", "events", "-A")
    assert can("create", "findings.pullwatch.dev", "-n", "default")
    assert can("patch", "findings.pullwatch.dev", "-n", "default") and not can(
        "update", "findings.pullwatch.dev"
    )
    assert can("update", "findings.pullwatch.dev", "--subresource=status", "-n", "default")
    assert can("delete", "findings.pullwatch.dev", "-n", "default")  # retention
    assert can("patch", "allowedimages.pullwatch.dev", "--subresource=status")
    assert not can("patch", "allowedimages.pullwatch.dev")  # the status only, never the spec
    assert (
        can("get", "pods", "-n", "default")
        and can("get", "replicasets.apps")
        and can("get", "jobs.batch")
    )
    assert can("list", "pods", "-A") and can("watch", "pods", "-A")  # the Pod witness
    assert can("patch", "witnesses.pullwatch.dev", "--subresource=status")
    for denied in (
        ("get", "secrets", "-A"),
        ("list", "secrets"),
        ("create", "events"),
        ("create", "pods"),
        ("update", "pods"),
        ("list", "replicasets.apps"),
        ("delete", "events"),
        ("delete", "allowedimages.pullwatch.dev"),
        ("update", "allowedimages.pullwatch.dev"),
        ("get", "configmaps"),
        ("get", "deployments.apps"),
        ("*", "*"),
    ):
        assert not can(*denied), denied
    # and with the operator's own token, not just impersonation:
    sa_config = cluster.local.service_account_kubeconfig(*SA)
    r = cluster.kubectl("get", "secrets", "-A", kubeconfig=sa_config, check=False)
    assert r.returncode != 0 and "forbidden" in r.stderr.lower()


def test_findings_scores_counts_and_columns(cluster, operator):
    ns = cluster.namespace("det")
    cluster.apply(allowed("e2e-det", ["nginx:1.25.*"], [ns]))
    wait_for(lambda: ready(cluster, "e2e-det"), what="AllowedImages status")
    cluster.create_event(
        image_event("Pulling", ns, "hunter-1", HUNTER, node="worker-7", count=2, seq=1)
    )
    cluster.create_event(
        image_event("Pulling", ns, "miner", "docker.io/randomuser/xmrig:latest", seq=2)
    )
    cluster.create_event(image_event("Pulling", ns, "web", "nginx:1.25.3", seq=3))
    cluster.create_event(
        image_event(
            "Pulling",
            ns,
            "web2",
            "registry.example.net:5000/mirrors/aquasec/kube-bench:v0.7.0",
            seq=4,
        )
    )
    wait_for(  # each created, then its status written (a second write)
        lambda: (
            (fs := cluster.findings(ns))
            and len(fs) == 5
            and all("status" in f for f in fs.values())
        ),
        what="5 Findings, each with its status",
    )
    by = cluster.by_workload(ns)
    # hunter-1: a StatefulSet's pod by its name (no such pod exists here: inferred, and said so)
    assert set(by) == {
        (SCANNER, "hunter"),
        (SUSPICIOUS, "hunter"),
        (SUSPICIOUS, "miner"),
        (SCANNER, "web2"),
        (SUSPICIOUS, "web2"),
    }
    hunter = by[(SCANNER, "hunter")]
    assert (hunter["spec"]["riskScore"], hunter["spec"]["severity"], hunter["status"]["count"]) == (
        81,
        "high",
        2,
    )
    assert hunter["spec"]["workload"] == {
        "kind": "StatefulSet",
        "name": "hunter",
        "source": "inferred",
    }
    assert hunter["spec"]["message"] == "Kubernetes Scanner image pulled on host worker-7"
    assert hunter["spec"]["mitre"]["techniqueId"] == "T1526"
    assert by[(SUSPICIOUS, "miner")]["spec"]["riskScore"] == 49
    assert "ownerReferences" not in hunter["metadata"]  # evidence outlives the Pod
    table = cluster.kubectl("get", "findings", "-n", ns).stdout.splitlines()
    # how bad it is first: what a person triaging sorts by
    assert table[0].split() == [
        "NAME",
        "SEVERITY",
        "RISK",
        "KIND",
        "WORKLOAD",
        "IMAGE",
        "COUNT",
        "RAN",
        "SEEN",
        "BY",
        "LAST",
        "SEEN",
        "AGE",
    ]
    row = next(line.split() for line in table if line.startswith("scanner-hunter-kube-hunter"))
    assert row[1:9] == ["high", "81", "StatefulSet", "hunter", HUNTER, "2", "unknown", "events"]
    wide = cluster.kubectl("get", "findings", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[12:15] == ["RULE", "PODS", "NODES"]
    row = next(line.split() for line in wide if line.startswith("scanner-hunter-kube-hunter"))
    assert row[10:13] == [SCANNER, "1", "1"]
    assert ns in cluster.kubectl("get", "pullwatch", "-A").stdout  # the category
    assert "Finding" in cluster.kubectl("explain", "finding.spec").stdout


def test_series_count_follows_exactly(cluster, operator):
    ns = cluster.namespace("series")
    ev = image_event("Pulling", ns, "hunter", HUNTER, count=1, seq=1)
    stored = cluster.create_event(ev)
    name = stored["metadata"]["name"]

    def count():
        c = [
            f["status"].get("count")
            for f in cluster.findings(ns).values()
            if f["spec"]["rule"] == SCANNER
        ]
        return c[0] if c else None

    wait_for(lambda: count() == 1, what="count 1")
    cluster.set_count(ns, name, 4)
    wait_for(lambda: count() == 4, what="count 4")
    scanner_pulls = operator.metric("pullwatch_pulls_detected_total", rule=SCANNER, severity="high")
    cluster.set_count(ns, name, 4)  # the same count again: nothing new
    cluster.create_event(
        image_event("Pulled", ns, "hunter", HUNTER, seq=2)
    )  # completes a pull: not another
    cluster.create_event(image_event("Pulling", ns, "marker", "marker/image:1", seq=3))
    # the marker is counted after its pod is read, so once its Finding exists every Event before
    # it in the stream has been counted: none of them added a scanner pull
    wait_for(lambda: any("marker" in n for n in cluster.findings(ns)), what="the marker Finding")
    assert (
        operator.metric("pullwatch_pulls_detected_total", rule=SCANNER, severity="high")
        == scanner_pulls
    )
    assert count() == 4


def test_a_conflicting_write_is_reread_and_merged_and_keeps_triage_labels(cluster, operator):
    ns = cluster.namespace("conflict")
    pulled = cluster.create_event(image_event("Pulled", ns, "app", "evil/x:1", count=2, seq=1))
    counts = lambda: sorted(cluster.counts(ns).values())  # noqa: E731
    wait_for(lambda: counts() == [2], what="count 2")
    (name,) = cluster.findings(ns)
    # Someone else writes the Finding: the operator's resourceVersion is now stale (409 next).
    cluster.kubectl("label", "finding", name, "-n", ns, "triaged=yes")
    cluster.kubectl("annotate", "finding", name, "-n", ns, "owner=secops")
    cluster.set_count(ns, pulled["metadata"]["name"], 3)
    cluster.create_event(image_event("Pulling", ns, "app", "evil/x:1", count=4, seq=2))
    wait_for(lambda: counts() == [4], what="count 4 (max(pulling 4, pulled 3))")
    f = cluster.findings(ns)[name]
    assert f["status"]["outcomes"]["succeeded"] == 3
    assert (
        f["metadata"]["labels"]["triaged"] == "yes"
        and f["metadata"]["annotations"]["owner"] == "secops"
    )


def test_allowlist_add_edit_delete_take_effect_on_the_next_pull(cluster, operator):
    ns = cluster.namespace("allow")
    seq = iter(range(100, 200))

    def pull(pod, image):
        cluster.create_event(image_event("Pulling", ns, pod, image, seq=next(seq)))
        marker = f"marker-{pod}"
        cluster.create_event(image_event("Pulling", ns, marker, "marker/image:1", seq=next(seq)))
        wait_for(lambda: any(marker in n for n in cluster.findings(ns)), what=f"marker of {pod}")
        return any(f["spec"]["workload"]["name"] == pod for f in cluster.findings(ns).values())

    assert pull("a1", "corp/app:1")  # nothing allows it yet
    cluster.apply(allowed("e2e-allow", ["corp/app:*"], [ns]))
    wait_for(lambda: ready(cluster, "e2e-allow"), what="Ready")
    assert not pull("a2", "corp/app:2")  # added: allowed
    assert pull("a3", "corp/other:1")
    cluster.apply(allowed("e2e-allow", ["corp/other:*"], [ns]))
    wait_for(lambda: ready(cluster, "e2e-allow"), what="Ready after edit")
    assert pull("a4", "corp/app:3")  # edited away: suspicious again
    assert not pull("a5", "corp/other:2")
    in_force = operator.metric("pullwatch_allowlist_objects")
    cluster.kubectl("delete", "allowedimages", "e2e-allow")
    wait_for(
        lambda: operator.metric("pullwatch_allowlist_objects") == in_force - 1,
        30,
        what="the deletion in force",
    )
    assert pull("a6", "corp/other:3")  # deleted: nothing allows it


def test_invalid_allowedimages_refused_or_flagged_and_detection_goes_on(cluster, operator):
    ns = cluster.namespace("invalid")
    r = cluster.apply(allowed("e2e-empty-pattern", [""], [ns]), check=False)
    assert r.returncode != 0 and "images" in r.stderr  # the schema refuses it
    r = cluster.apply(allowed("e2e-not-a-list", "nginx", [ns]), check=False)
    assert r.returncode != 0
    cluster.apply(allowed("e2e-bad", ["NOT VALID", "**.evil.example/x", "good/image:*"], [ns]))
    cond = wait_for(lambda: ready(cluster, "e2e-bad"), what="status of e2e-bad")
    assert (
        cond["status"] == "False"
        and cond["reason"] == "InvalidPatterns"
        and "NOT VALID" in cond["message"]
    )
    status = json.loads(cluster.kubectl("get", "allowedimages", "e2e-bad", "-o", "json").stdout)[
        "status"
    ]
    assert status["patterns"] == 1 and status["normalizedPatterns"] == ["docker.io/good/image:*"]
    columns = cluster.kubectl("get", "allowedimages", "e2e-bad").stdout.splitlines()
    assert (
        columns[0].split() == ["NAME", "NAMESPACES", "PATTERNS", "READY", "AGE"]
        and "False" in columns[1]
    )
    cluster.create_event(image_event("Pulling", ns, "ok", "good/image:1", seq=1))
    cluster.create_event(image_event("Pulling", ns, "bad", "evil/image:1", seq=2))
    wait_for(lambda: any("bad" in n for n in cluster.findings(ns)), what="detection still working")
    assert not any(f["spec"]["workload"]["name"] == "ok" for f in cluster.findings(ns).values())
    cluster.kubectl("delete", "allowedimages", "e2e-bad")


def test_scan_of_the_same_events_gives_the_same_findings(cluster, operator, tmp_path):
    ns = cluster.namespace("parity")
    cluster.apply(allowed("e2e-parity", ["quay.io/prometheus/**"], [ns]))
    wait_for(lambda: ready(cluster, "e2e-parity"), what="Ready")
    stored = cluster.create_event(image_event("Pulling", ns, "hunter", HUNTER, count=3, seq=1))
    cluster.create_event(image_event("Pulled", ns, "hunter", HUNTER, seq=2))
    cluster.create_event(image_event("Present", ns, "pp", "bishopfox/peirates:1.1.13", seq=3))
    cluster.create_event(
        image_event("Pulling", ns, "ok", "quay.io/prometheus/node-exporter:v1", seq=4)
    )
    cluster.create_event(image_event("Pulling", ns, "miner", "evil/miner:1", seq=5))
    cluster.set_count(ns, stored["metadata"]["name"], 5)
    wait_for(
        lambda: sorted(cluster.counts(ns).values()) == [1, 1, 1, 5, 5], what="operator Findings"
    )
    (tmp_path / "events.json").write_text(
        cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout
    )
    (tmp_path / "allowed.yaml").write_text(
        cluster.kubectl("get", "allowedimages", "-o", "yaml").stdout
    )
    r = subprocess.run(
        [
            PULLWATCH,
            "scan",
            str(tmp_path / "events.json"),
            "-a",
            str(tmp_path / "allowed.yaml"),
            "-o",
            "json",
        ],
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    scanned = {f["metadata"]["name"]: f for f in finding_items(r.stdout)}

    def series(status):  # the series' keys (their minutes differ: scan has no clock)
        return sorted(x.split(".")[0] for x in status["ledger"]["series"])

    def facts(f):
        status = f.get("status") or {}
        if "ledger" not in status:
            return None
        return (
            f["spec"],
            status["count"],
            status["outcomes"],
            status["origin"],
            series(status),
        )

    # the operator's coalesced status writes land within seconds: until then, it may lag
    wait_for(
        lambda: (
            {n: facts(f) for n, f in cluster.findings(ns).items()}
            == {n: facts(f) for n, f in scanned.items()}
        ),
        30,
        what=lambda: (
            "the operator's Findings to be what scan makes of the same Events: "
            f"{ {n: facts(f) for n, f in cluster.findings(ns).items()} } != "
            f"{ {n: facts(f) for n, f in scanned.items()} }"
        ),
    )
    cluster.kubectl("delete", "allowedimages", "e2e-parity")


def test_real_audit_log_gives_the_same_detections_with_the_actor(cluster, operator, tmp_path):
    ns = cluster.namespace("audit")
    cluster.create_event(image_event("Pulling", ns, "hunter", HUNTER, seq=1))
    cluster.create_event(image_event("Pulling", ns, "miner", "evil/miner:1", seq=2))
    wait_for(lambda: len(cluster.findings(ns)) == 3, what="operator Findings")
    log = cluster.local.audit_log
    wait_for(lambda: log.exists() and ns in log.read_text(errors="replace"), what="the audit log")
    r = subprocess.run([PULLWATCH, "scan", str(log), "-o", "json"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    mine = {
        f["metadata"]["name"]: f
        for f in finding_items(r.stdout)
        if f["metadata"]["namespace"] == ns
    }
    assert set(mine) == set(cluster.findings(ns))
    miner = next(f for f in mine.values() if "miner" in f["metadata"]["name"])
    # Who wrote the Event (the test plays the kubelet as admin): not a node, so not verified.
    assert miner["spec"]["source"] == "audit" and miner["spec"]["reportedBy"]["user"] == "admin"
    assert miner["spec"]["reportedBy"]["verified"] is False
    assert miner["spec"]["message"].startswith(
        "Suspicious image evil/miner:1 pulled in Kubernetes on node "
    )  # nobody known to have changed the workload: the node and the workload are named


def test_kustomize_output_is_plain_readable_yaml():
    docs = list(
        yaml.safe_load_all(
            subprocess.run(
                ["kubectl", "kustomize", str(ROOT / "manifests")],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
    )
    kinds = sorted(d["kind"] for d in docs)
    crds = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition")
    assert crds == [
        "allowedimages.pullwatch.dev",
        "clusterkopfpeerings.kopf.dev",
        "findings.pullwatch.dev",
        "kopfpeerings.kopf.dev",
        "scannerimages.pullwatch.dev",
        "suppressions.pullwatch.dev",
        "witnesses.pullwatch.dev",
    ]
    assert "Deployment" in kinds
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    assert (
        pod["securityContext"]["runAsNonRoot"]
        and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"][
        "drop"
    ] == ["ALL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["resources"]["limits"]
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    for rule in role["rules"]:
        assert (
            "*" not in rule["verbs"]
            and "*" not in rule["resources"]
            and "secrets" not in rule["resources"]
        )


def test_the_witness_objects_say_what_pullwatch_sees(cluster, operator):
    """`kubectl get witnesses`: events Receiving once an image Event arrived, the audit webhook
    Disabled (not configured here), the Pod witness connected."""
    ns = cluster.namespace("wit")
    cluster.create_event(image_event("Pulling", ns, "web-1", "nginx:1.25.3", seq=1))

    def states() -> dict[str, str] | None:
        got = cluster.get("/apis/pullwatch.dev/v1alpha1/witnesses") or {}
        out = {w["metadata"]["name"]: (w.get("status") or {}).get("state") for w in got["items"]}
        return out if out.get("events") == "Receiving" else None

    seen = wait_for(states, 60, what="the events Witness Receiving")
    assert seen["audit"] == "Disabled" and seen["pods"] in ("Receiving", "Silent"), seen
    table = cluster.kubectl("get", "witnesses").stdout
    assert "LAST OBSERVATION" in table and "Receiving" in table, table
