"""Issue 11's pure parts: Suppressions, scanner names as data, OpenReports bodies, metric names."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubelet import image_event
from paths import finding_items
from pullwatch.core.allowlist import Allowlist
from pullwatch.core.detector import Detector
from pullwatch.core.pulls import decode_event
from pullwatch.core.reports import report_for
from pullwatch.core.rules import ScannerList, scanner_list_from_object, scanner_names
from pullwatch.core.suppressions import Suppressions, suppression_from_object

PULLWATCH = str(Path(sys.executable).parent / "pullwatch")
SCANNER, SUSPICIOUS = "kubernetes-scanner-image-pulling", "kubernetes-suspicious-image-pulling"


CREATED, EXPIRES = "2026-11-01T00:00:00Z", "2026-12-31T00:00:00Z"  # within the 90 days


def supp(spec, name="s", namespace="team-a", created=CREATED):
    spec = {"expires": EXPIRES, **spec}
    meta = {"name": name, "namespace": namespace}
    if created:
        meta["creationTimestamp"] = created
    return suppression_from_object(
        {
            "apiVersion": "pullwatch.dev/v1alpha1",
            "kind": "Suppression",
            "metadata": meta,
            "spec": {k: v for k, v in spec.items() if v is not None},
        },
        "pullwatch-system",
    )


@pytest.mark.parametrize(
    "spec, problem",
    [
        ({"rules": ["scanner"]}, "spec.reason is required"),
        ({"reason": "x", "rules": ["no-such-rule"]}, "names no known rule"),
        ({"reason": "x", "images": ["NOT VALID"]}, "spec.images[0]"),
        ({"reason": "x", "images": []}, "non-empty list"),
        ({"reason": "x", "namespaces": ["*"]}, "allowed only on Suppressions in pullwatch-system"),
        ({"reason": "x", "expires": "next tuesday"}, "RFC 3339"),
        ({"reason": "x", "expires": None}, "spec.expires is required"),
        ({"reason": "x", "expires": "2027-03-01T00:00:00Z"}, "more than 90 days after"),
        ({"reason": "x", "rules": ["scanner"]}, "only by a Suppression in pullwatch-system"),
    ],
)
def test_a_malformed_suppression_covers_nothing_and_says_why(spec, problem):
    s = supp(spec)
    assert not s.usable and any(problem in p for p in s.problems), s.problems
    assert not s.covers(SCANNER, "team-a", "w", "docker.io/aquasec/kube-hunter:1", 0)


def test_only_the_operator_namespace_may_silence_the_scanner_rule():
    for rules in (["*"], None):
        tenant = supp({"reason": "x", "rules": rules})
        assert tenant.usable and "every rule but" in tenant.notes[0]
        assert not tenant.covers(SCANNER, "team-a", "w", "docker.io/aquasec/kube-hunter:1", 0)
        assert tenant.covers(SUSPICIOUS, "team-a", "w", "docker.io/aquasec/kube-hunter:1", 0)
    admin = supp({"reason": "x", "rules": ["*"]}, namespace="pullwatch-system")
    assert admin.covers(SCANNER, "pullwatch-system", "w", "docker.io/aquasec/kube-hunter:1", 0)


def test_the_longest_expiry_counts_from_creation():
    assert supp({"reason": "x", "expires": "2027-01-29T00:00:00Z"}).usable  # day 89
    # No creationTimestamp (a file): judged from when it is read.
    body = {
        "apiVersion": "pullwatch.dev/v1alpha1",
        "kind": "Suppression",
        "metadata": {"name": "s", "namespace": "team-a"},
        "spec": {"reason": "x", "expires": "2099-01-01T00:00:00Z"},
    }
    assert not suppression_from_object(body, "pullwatch-system", now=time.time()).usable


def test_what_a_suppression_covers():
    s = supp(
        {
            "reason": "CIS run",
            "rules": ["scanner"],
            "images": ["aquasec/kube-bench:*"],
            "workloads": ["cis-*"],
            "namespaces": ["team-a"],
        },
        namespace="pullwatch-system",
    )
    assert s.covers(SCANNER, "team-a", "cis-weekly", "docker.io/aquasec/kube-bench:v1", 0)
    assert not s.covers(
        SUSPICIOUS, "team-a", "cis-weekly", "docker.io/aquasec/kube-bench:v1", 0
    )  # rule
    assert not s.covers(
        SCANNER, "team-b", "cis-weekly", "docker.io/aquasec/kube-bench:v1", 0
    )  # namespace
    assert not s.covers(SCANNER, "team-a", "web", "docker.io/aquasec/kube-bench:v1", 0)  # workload
    assert not s.covers(
        SCANNER, "team-a", "cis-weekly", "docker.io/aquasec/kube-hunter:v1", 0
    )  # image
    assert not s.covers(
        SCANNER, "team-a", "cis-weekly", "docker.io/aquasec/kube-bench:v1", 1.8e9
    )  # expired
    cluster_wide = supp({"reason": "x", "namespaces": ["ci-*"]}, namespace="pullwatch-system")
    assert cluster_wide.usable and cluster_wide.covers(
        SUSPICIOUS, "ci-7", "w", "docker.io/a/b:1", 0
    )
    assert not cluster_wide.covers(SUSPICIOUS, "prod", "w", "docker.io/a/b:1", 0)


def test_a_covered_pull_is_still_counted_and_the_finding_names_its_suppression():
    d = Detector(Allowlist())
    d.suppressions = Suppressions([supp({"reason": "accepted", "images": ["evil/x:*"]})])
    ev = image_event("Pulling", "team-a", "web", "evil/x:1", count=3)
    (det,) = d.observe(decode_event(ev), now=1.79e9)
    assert det.delta == 3 and det.suppressed is not None
    status = det.state.body()["status"]
    assert status["count"] == 3 and status["suppressedPulls"] == 3
    assert status["suppression"] == {
        "namespace": "team-a",
        "name": "s",
        "reason": "accepted",
        "expires": EXPIRES,
    }
    assert d.recheck_suppressions(now=1.8e9) == [det.state]  # expired: the Finding is active again
    assert "suppression" not in det.state.body()["status"]


def test_scanner_names_as_data():
    lst = scanner_list_from_object(
        {
            "apiVersion": "pullwatch.dev/v1alpha1",
            "kind": "ScannerImages",
            "metadata": {"name": "x"},
            "spec": {"names": ["trufflehog"]},
        }
    )
    assert lst.names == {"trufflehog"} and not lst.problems
    d = Detector(Allowlist())
    d.scanners = scanner_names([lst])
    assert [
        x.state.identity.rule
        for x in d.observe(
            decode_event(image_event("Pulling", "ns", "p", "trufflesecurity/trufflehog:3"))
        )
    ] == ["scanner", "suspicious"]
    assert "kube-hunter" not in scanner_names([ScannerList("r", frozenset({"nmap"}), True)])


def test_scan_reads_suppressions_and_scanner_images_from_config_files(tmp_path):
    config = tmp_path / "pullwatch.yaml"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "pullwatch.dev/v1alpha1",
                        "kind": "ScannerImages",
                        "metadata": {"name": "more"},
                        "spec": {"names": ["trufflehog"]},
                    },
                    {
                        "apiVersion": "pullwatch.dev/v1alpha1",
                        "kind": "Suppression",
                        "metadata": {"name": "ok", "namespace": "pullwatch-system"},
                        "spec": {
                            "reason": "our own CI scanner",
                            "rules": ["*"],
                            "workloads": ["audit"],
                            "namespaces": ["ci"],
                            "expires": time.strftime(
                                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30 * 86400)
                            ),
                        },
                    },
                ],
            }
        )
    )
    events = tmp_path / "events.jsonl"
    events.write_text(
        json.dumps(image_event("Pulling", "ci", "secrets", "trufflesecurity/trufflehog:3"))
        + "\n"
        + json.dumps(image_event("Pulling", "ci", "audit", "aquasec/kube-bench:1", seq=2))
        + "\n"
    )
    r = subprocess.run(
        [PULLWATCH, "scan", str(events), "-c", str(config), "-o", "json"], capture_output=True
    )
    assert r.returncode == 0, r.stderr
    found = {(f["spec"]["rule"], f["spec"]["workload"]["name"]): f for f in finding_items(r.stdout)}
    assert (SCANNER, "secrets") in found  # the new scanner name
    assert found[(SCANNER, "audit")]["status"]["suppression"]["name"] == "ok"
    assert "suppression" not in found[(SCANNER, "secrets")]["status"]


def test_an_openreports_report_mirrors_the_findings():
    d = Detector(Allowlist())
    d.suppressions = Suppressions(
        [supp({"reason": "accepted", "workloads": ["ok-*"]}, namespace="ns")]
        # a tenant's: it covers the suspicious ok-app Finding, never the scanner one
    )
    d.observe(
        decode_event(image_event("Pulling", "ns", "hunter", "aquasec/kube-hunter:1", count=2)),
        now=0,
    )
    d.observe(decode_event(image_event("Pulling", "ns", "ok-app", "evil/x:1", seq=2)), now=0)
    report = report_for("ns", d.states.values())
    assert report["apiVersion"] == "openreports.io/v1alpha1" and report["kind"] == "Report"
    assert report["source"] == "pullwatch" and report["summary"] == {
        "pass": 0,
        "fail": 2,
        "warn": 0,
        "error": 0,
        "skip": 1,
    }
    first = report["results"][0]
    assert (first["policy"], first["severity"], first["result"], first["scored"]) == (
        SCANNER,
        "high",
        "fail",
        True,
    )
    assert all(isinstance(v, str) for r in report["results"] for v in r["properties"].values())
    skipped = next(r for r in report["results"] if r["result"] == "skip")
    assert skipped["properties"]["suppressedBy"] == "ns/s"
    messages = {r["properties"]["resultID"]: r["message"] for r in report["results"]}
    d.observe(
        decode_event(image_event("Pulling", "ns", "hunter", "aquasec/kube-hunter:1", count=7)),
        now=0,
    )
    again = report_for("ns", d.states.values())
    assert {
        r["properties"]["resultID"]: r["message"] for r in again["results"]
    } == messages  # stable
    assert report_for("other", d.states.values()) is None
    assert len(report_for("ns", d.states.values(), max_results=1)["results"]) == 1


def test_metric_names_and_bounded_labels():
    pytest.importorskip("prometheus_client")
    from pullwatch.kube import metrics

    for family in metrics.REGISTRY.collect():
        assert family.name.startswith("pullwatch_"), family.name
        for sample in family.samples:
            assert not set(sample.labels) - {
                "rule",
                "severity",
                "namespace",
                "reason",
                "verb",
                "outcome",
                "stream",
                "le",
                "scope",  # of Suppressions: cluster | namespace
                "state",  # of Suppressions: active | expired | invalid
                "change",  # of Suppressions: created | changed
                "budget",  # the one a Suppression is over: namespace | cluster
                "kind",  # of audit entries
            }, (family.name, sample.labels)
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
