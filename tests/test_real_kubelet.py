"""`pullwatch scan` over Events a real kubelet 1.20.2 wrote (recorded by
tests/e2e/test_realnode.py):
every one read, the outcome counts exactly what the kubelet reported, the output golden.

The recording holds one namespace per real-node test: pods pulled with Always (kube-hunter, an
allowed and an unlisted image), IfNotPresent on a present image, a crash loop, a missing tag and
an unreachable registry.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kubelet import expected_outcomes, reported
from paths import DATA, finding_items
from pullwatch.core.pulls import decode_event, error_class
from test_cli import check_golden

EVENTS = DATA / "real-kubelet.json"
ALLOW = DATA / "real-kubelet-allowed.json"
PULLWATCH = str(Path(sys.executable).parent / "pullwatch")
SCANNER, SUSPICIOUS = "kubernetes-scanner-image-pulling", "kubernetes-suspicious-image-pulling"


@pytest.fixture(scope="module")
def events():
    return json.loads(EVENTS.read_text())["items"]


@pytest.fixture(scope="module")
def scanned():
    r = subprocess.run(
        [PULLWATCH, "scan", EVENTS.name, "-a", ALLOW.name, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=DATA,
    )
    assert r.returncode == 0, r.stderr
    return r


def test_scan_reads_every_real_event_and_is_golden(scanned, events):
    summary = scanned.stderr.splitlines()[0]
    assert (
        f"records read: {len(events)}" in summary
        and "skipped: 0" in summary
        and "damaged" not in scanned.stderr
    )
    check_golden("real-kubelet.json.json", scanned.stdout)
    check_golden("real-kubelet.json.summary", scanned.stderr)


def test_every_real_image_event_decodes_as_what_the_kubelet_meant(events):
    kinds = {}
    for e in events:
        pull = decode_event(e)
        kinds.setdefault((e["reason"], pull.kind if pull else None), 0)
        kinds[(e["reason"], pull.kind if pull else None)] += 1
    # Created/Started, "Back-off restarting failed container" and "Error: ErrImagePull" name no pull
    assert set(kinds) == {
        ("Pulling", "pulling"),
        ("Pulled", "pulled"),
        ("Pulled", "present"),
        ("Failed", "failed"),
        ("BackOff", "backoff"),
        ("Created", None),
        ("Started", None),
        ("BackOff", None),
        ("Failed", None),
    }


def test_outcome_counts_are_exactly_what_the_kubelet_reported(scanned, events):
    findings = finding_items(scanned.stdout)
    pods = {(e["involvedObject"]["namespace"], e["involvedObject"]["name"]): e for e in events}
    got = {
        (f["metadata"]["namespace"], f["spec"]["workload"]["name"], f["spec"]["rule"]): f
        for f in findings
    }
    expected_rules = {
        "hunter": {SCANNER, SUSPICIOUS},
        "cached": {SCANNER, SUSPICIOUS},
        "loop": {SCANNER, SUSPICIOUS},
        "doomed": {SCANNER, SUSPICIOUS},
        "unlisted": {SUSPICIOUS},
        "allowed": set(),
    }
    assert {p for _, p in pods} == set(expected_rules)
    for ns, pod in pods:
        did = reported(events, pod, ns)
        assert did["pulling"] + did["present"] > 0
        rules = {rule for (fns, fpod, rule) in got if (fns, fpod) == (ns, pod)}
        assert rules == expected_rules[pod], pod
        for rule in rules:
            status = got[(ns, pod, rule)]["status"]
            assert status["count"] == did["pulling"] + did["present"], (pod, rule)
            outcomes = {k: v for k, v in status["outcomes"].items() if k != "lastError"}
            assert outcomes == expected_outcomes(did), (pod, rule)
            if did["failed"]:
                message = next(
                    e["message"]
                    for e in events
                    if e["involvedObject"] == pods[(ns, pod)]["involvedObject"]
                    and e["message"].startswith("Failed to pull image ")
                )
                assert status["outcomes"]["lastError"]["class"] == error_class(message) != "other"
    doomed = sorted(
        got[k]["status"]["outcomes"]["lastError"]["class"]
        for k in got
        if k[1] == "doomed" and k[2] == SCANNER
    )
    assert doomed == ["not found", "unreachable"]
    assert got[next(k for k in got if k[1] == "loop")]["status"]["count"] >= 3
