"""`pullwatch scan` end to end through the installed console script, against golden files.

Regenerate the golden files after an intended change with PULLWATCH_UPDATE_GOLDEN=1 and review
the diff like code.
"""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paths import DATA, finding_items

GOLDEN = DATA / "golden"
ALLOW = str(DATA / "allowed-images.yaml")
PULLWATCH = str(Path(sys.executable).parent / "pullwatch")
INPUTS = [
    "events-list.json",
    "events-list.yaml",
    "events-v1.json",
    "watch.jsonl",
    "bare.jsonl",
    "audit.jsonl",
    "malformed.jsonl",
]


def scan(*args, stdin=None, cwd=None):
    return subprocess.run(
        [PULLWATCH, "scan", *args], input=stdin, capture_output=True, timeout=60, cwd=cwd
    )


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PULLWATCH_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"output differs from {path}"


@pytest.mark.parametrize("name", INPUTS)
def test_json_output_and_summary_are_golden(name):
    r = scan(name, "-a", ALLOW, "-o", "json", cwd=DATA)  # relative: the messages name the input
    assert r.returncode == (3 if name == "malformed.jsonl" else 0), (
        r.stderr
    )  # malformed: damaged lines
    check_golden(f"{name}.json", r.stdout.decode())
    check_golden(f"{name}.summary", r.stderr.decode())


@pytest.mark.parametrize("fmt", ["table", "yaml", "jsonl"])
def test_other_formats_are_golden(fmt):
    r = scan(str(DATA / "events-list.json"), "-a", ALLOW, "-o", fmt)
    assert r.returncode == 0
    check_golden(f"events-list.json.{fmt}", r.stdout.decode())


def findings(name, *extra):
    r = scan(str(DATA / name), "-a", ALLOW, "-o", "json", *extra)
    assert r.returncode == 0, r.stderr
    return finding_items(r.stdout)


def test_every_event_shape_gives_the_same_findings():
    reference = findings("events-list.json")
    assert len(reference) == 10
    for name in ("events-list.yaml", "events-v1.json", "watch.jsonl", "bare.jsonl"):
        assert findings(name) == reference, name


def test_audit_gives_the_same_detections_with_their_authors():
    ref = {f["metadata"]["name"]: f["status"]["count"] for f in findings("events-list.json")}
    audit = findings("audit.jsonl")
    intents = [f for f in audit if f["status"]["count"] == 0]
    audit = [f for f in audit if f["status"]["count"]]
    assert {f["metadata"]["name"]: f["status"]["count"] for f in audit} == ref
    # and a pod created with kube-hunter: recorded at its creation, before any pull
    assert [(f["spec"]["rule"], f["status"]["intent"]["pods"]) for f in intents] == [
        ("kubernetes-scanner-image-pulling", 1),
        ("kubernetes-suspicious-image-pulling", 1),
    ]
    assert all(
        f["spec"]["source"] == "audit"
        and f["spec"]["reportedBy"]["user"].startswith("system:node:")
        for f in audit
    )
    miner = next(f for f in audit if "xmrig" in f["metadata"]["name"])
    assert miner["spec"]["message"].startswith(
        "Suspicious image docker.io/randomuser/xmrig:latest pulled in Kubernetes on node "
    )


def test_expected_detections():
    found = findings("events-list.json")
    by_name = {
        (f["metadata"]["namespace"], f["spec"]["rule"], f["spec"]["image"]): f["status"]["count"]
        for f in found
    }
    ran = {(f["spec"]["image"], f["status"]["outcomes"]["ran"]) for f in found}
    assert {
        ("aquasec/kube-bench:nope", "no"),
        ("aquasec/kube-hunter:0.6.8", "yes"),
        ("registry.example.net:5000/mirrors/aquasec/kube-bench:v0.7.0", "unknown"),
    } <= ran  # only a Pulling
    scanner, suspicious = "kubernetes-scanner-image-pulling", "kubernetes-suspicious-image-pulling"
    hunter, bench = (
        "aquasec/kube-hunter:0.6.8",
        "registry.example.net:5000/mirrors/aquasec/kube-bench:v0.7.0",
    )
    assert by_name == {
        ("default", scanner, hunter): 3,
        ("default", suspicious, hunter): 3,  # Pulling 3 + 3 Pulled = 3
        ("ci", scanner, bench): 1,
        ("ci", suspicious, bench): 1,
        ("ci", scanner, "aquasec/kube-bench:nope"): 1,  # a failed pull is an attempt
        ("ci", suspicious, "aquasec/kube-bench:nope"): 1,
        ("security", scanner, hunter): 1,  # allowlisted, still a scanner
        ("default", scanner, "bishopfox/peirates:1.1.13"): 1,  # already present
        ("default", suspicious, "bishopfox/peirates:1.1.13"): 1,
        ("team-a-web", suspicious, "docker.io/randomuser/xmrig:latest"): 1,
    }


def test_stdin_and_gzip(tmp_path):
    raw = (DATA / "watch.jsonl").read_bytes()
    gz = tmp_path / "watch.jsonl.gz"
    gz.write_bytes(gzip.compress(raw))
    expected = findings("watch.jsonl")
    r = scan("-", "-a", ALLOW, "-o", "json", stdin=raw)
    assert finding_items(r.stdout) == expected
    r = scan("-", "-a", ALLOW, "-o", "json", stdin=gzip.compress(raw))
    assert finding_items(r.stdout) == expected
    assert finding_items(scan(str(gz), "-a", ALLOW, "-o", "json").stdout) == expected


def test_several_files_are_one_scan_and_duplicates_do_not_double():
    once = {f["metadata"]["name"]: f["status"]["count"] for f in findings("bare.jsonl")}
    r = scan(
        str(DATA / "bare.jsonl"),
        str(DATA / "bare.jsonl"),
        str(DATA / "events-list.json"),
        "-a",
        ALLOW,
        "-o",
        "json",
    )
    assert {f["metadata"]["name"]: f["status"]["count"] for f in finding_items(r.stdout)} == once


def test_table_escapes_terminal_control_characters():
    r = scan(str(DATA / "malformed.jsonl"), "-a", ALLOW)
    out = r.stdout.decode()
    assert "\x1b" not in out and "\x07" not in out
    assert "Evil/\\x1b[31mImage" in out  # a pod name cannot carry them: it is not a valid name


def test_malformed_input_is_skipped_counted_and_later_records_still_count():
    r = scan(str(DATA / "malformed.jsonl"), "-a", ALLOW, "-o", "json")
    assert r.returncode == 3  # lines that are not JSON could not be read: the input is damaged
    names = [f["metadata"]["name"] for f in finding_items(r.stdout)]
    assert any("after-the-garbage" in n for n in names)
    err = r.stderr.decode()
    assert "damaged 2: not JSON" in err and "skipped 2: image event without involvedObject\n" in err
    assert "skipped 1: image event without a message" in err
    assert "skipped 1: image event whose involvedObject.name is not a valid name" in err


def test_exit_codes(tmp_path):
    assert scan(str(DATA / "events-list.json"), "-a", ALLOW, "--fail-on-findings").returncode == 1
    quiet = tmp_path / "quiet.json"
    quiet.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": []}))
    assert scan(str(quiet), "--fail-on-findings").returncode == 0
    r = scan(str(tmp_path / "missing.json"))
    assert r.returncode == 3 and b"missing.json" in r.stderr  # an input that cannot be read
    assert (
        scan(str(DATA / "events-list.json"), "-a", str(tmp_path / "missing.yaml")).returncode == 2
    )
    assert scan(str(DATA / "events-list.json"), "--scanner", "Not/Valid").returncode == 2
    assert subprocess.run([PULLWATCH, "scan"], capture_output=True).returncode == 2


def test_invalid_allowed_images_are_reported_and_never_widen(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: pullwatch.dev/v1alpha1\nkind: AllowedImages\nmetadata: {name: bad}\n"
        "spec:\n  namespaces: team-a-*\n  images: ['**']\n---\n"
        "apiVersion: pullwatch.dev/v1alpha1\nkind: AllowedImages\nmetadata: {name: half}\n"
        "spec:\n  images: ['NOT VALID', 'quay.io/**']\n"
    )
    r = scan(str(DATA / "events-list.json"), "-a", str(bad), "-o", "json")
    assert r.returncode == 0
    err = r.stderr.decode()
    assert "AllowedImages bad: ignored: spec.namespaces must be a list" in err
    assert "AllowedImages half: pattern ignored: images[0]" in err
    images = {f["spec"]["image"] for f in finding_items(r.stdout)}
    assert "nginx:1.25.3" in images  # '**' of the broken object did not allow it
    assert (
        "quay.io/prometheus/node-exporter:v1.8.1" not in images
    )  # the valid pattern still applies


def test_custom_scanner_names():
    r = scan(
        str(DATA / "events-list.json"),
        "-a",
        ALLOW,
        "-o",
        "json",
        "--no-default-scanners",
        "--scanner",
        "xmrig",
    )
    rules = {(f["spec"]["rule"], f["spec"]["image"]) for f in finding_items(r.stdout)}
    assert ("kubernetes-scanner-image-pulling", "docker.io/randomuser/xmrig:latest") in rules
    assert not any(
        rule.endswith("scanner-image-pulling") and "kube-hunter" in img for rule, img in rules
    )


def test_output_is_a_v1_list_of_complete_findings():
    doc = json.loads(scan(str(DATA / "events-list.json"), "-a", ALLOW, "-o", "json").stdout)
    assert doc["apiVersion"] == "v1" and doc["kind"] == "List"
    *found, context = doc["items"]  # the Findings, then what a merge needs besides
    assert context["kind"] == "ScanContext" and "state" in context
    for f in found:
        assert f["apiVersion"] == "pullwatch.dev/v1alpha1" and f["kind"] == "Finding"
        assert {"count", "firstSeen", "lastSeen"} <= set(f["status"])
