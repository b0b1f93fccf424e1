"""Every input read or refused loudly (issue 8): the shapes real tools write, damage, hostile data.

Each test here failed before the fix it names: a silent miss (exit 0, nothing found), a
traceback, a widening of the allowlist, or a forgery counted as a pull.
"""

import bz2
import codecs
import gzip
import io
import json
import lzma
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubelet import as_events_v1, audit_entries, image_event, other_event
from paths import DATA, finding_items
from pullwatch.core.allowlist import Allowlist, policy_from_object
from pullwatch.core.audit import AuditDeduper, decode_audit_entry
from pullwatch.scan.records import ReadStats, iter_objects
from pullwatch.scan.sources import Source

PULLWATCH = str(Path(sys.executable).parent / "pullwatch")
HUNTER = "aquasec/kube-hunter:0.6.8"
ALLOW = str(DATA / "allowed-images.yaml")


def hunter(seq=1, pod="hunter-x7k2p"):
    return image_event("Pulling", "recon", pod, HUNTER, seq=seq)


def noise(i):
    return other_event("Started", "recon", f"web-{i}", "Started container web", seq=100 + i)


def scan(*args, stdin=None, timeout=120):
    return subprocess.run(
        [PULLWATCH, "scan", *args], input=stdin, capture_output=True, timeout=timeout
    )


def scan_bytes(tmp_path, data: bytes, *args, name="input"):
    path = tmp_path / name
    path.write_bytes(data)
    return scan(str(path), "-o", "json", *args)


def rules_found(r):
    return sorted(
        {(f["spec"]["rule"], f["spec"]["workload"]["name"]) for f in finding_items(r.stdout)}
    )


SCANNER_HIT = ("kubernetes-scanner-image-pulling", "hunter")  # pod hunter-x7k2p: a controller's


def read(data: bytes):
    stats = ReadStats()
    return list(iter_objects(Source("t", io.BytesIO(data)), stats)), stats


# -- silent misses -------------------------------------------------------------------------


@pytest.mark.parametrize("indent", [4, 2])
@pytest.mark.parametrize("wrapped", [False, True])
def test_kubectl_watch_json_is_indented_objects_back_to_back(tmp_path, indent, wrapped):
    """`kubectl get events -A -w -o json` (the README's command): one indented object per Event."""
    events = [noise(1), hunter(), noise(2)]
    if wrapped:  # --output-watch-events
        events = [{"type": "ADDED", "object": e} for e in events]
    data = "".join(json.dumps(e, indent=indent) + "\n" for e in events).encode()
    r = scan_bytes(tmp_path, data)
    assert r.returncode == 0, r.stderr
    assert SCANNER_HIT in rules_found(r)
    assert b"records read: 3" in r.stderr


def test_concatenated_values_need_bounded_memory_and_resync_after_a_cut_record():
    events = [hunter(seq=i, pod=f"hunter-{i:05d}") for i in range(200)]
    text = "".join(json.dumps(e, indent=4) + "\n" for e in events)
    cut = text.index('"involvedObject"', text.index("hunter-00100"))  # record 100 cut short
    damaged = text[:cut] + "\n" + text[text.index("\n{\n", cut) + 1 :]
    objs, stats = read(damaged.encode())
    pods = {o["involvedObject"]["name"] for _, o in objs}
    assert len(pods) == 199 and "hunter-00100" not in pods
    assert sum(stats.damaged.values()) == 1


@pytest.mark.parametrize("shape", ["list-pretty", "jsonl", "yaml"])
def test_a_utf8_byte_order_mark_loses_nothing(tmp_path, shape):
    if shape == "list-pretty":
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": [hunter()]}, indent=4)
    elif shape == "jsonl":
        body = json.dumps(hunter()) + "\n" + json.dumps(noise(1)) + "\n"
    else:
        body = yaml.safe_dump(hunter())
    r = scan_bytes(tmp_path, codecs.BOM_UTF8 + body.encode())
    assert r.returncode == 0, r.stderr
    assert SCANNER_HIT in rules_found(r)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_as_windows_powershell_writes_them(tmp_path, encoding):
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": [noise(1), hunter()]}, indent=4)
    r = scan_bytes(tmp_path, body.encode(encoding))
    assert r.returncode == 0, r.stderr
    assert SCANNER_HIT in rules_found(r)


@pytest.mark.parametrize("pretty", [False, True])
@pytest.mark.parametrize("api_version_last", [False, True])
def test_raw_events_k8s_io_list_whose_items_carry_no_api_version(
    tmp_path, pretty, api_version_last
):
    """`kubectl get --raw /apis/events.k8s.io/v1/events`: the List names the apiVersion once."""
    items = []
    for ev in (noise(1), hunter()):
        item = as_events_v1(ev)
        del item["apiVersion"], item["kind"]
        items.append(item)
    doc = {
        "kind": "EventList",
        "apiVersion": "events.k8s.io/v1",
        "metadata": {"resourceVersion": "7"},
        "items": items,
    }
    if api_version_last:
        doc = {"items": items, "kind": "EventList", "apiVersion": "events.k8s.io/v1"}
    data = json.dumps(doc, indent=4 if pretty else None).encode()
    r = scan_bytes(tmp_path, data)
    assert r.returncode == 0, r.stderr
    assert SCANNER_HIT in rules_found(r)


def test_a_compact_list_longer_than_any_line_limit_is_streamed(monkeypatch):
    import pullwatch.scan.jsontext as jsontext
    import pullwatch.scan.records as records

    monkeypatch.setattr(records, "CHUNK", 4096)
    monkeypatch.setattr(jsontext, "CHUNK", 4096)
    items = [noise(i) for i in range(300)] + [hunter()]
    objs, stats = read(
        json.dumps({"kind": "EventList", "apiVersion": "v1", "items": items}).encode()
    )
    assert [o["involvedObject"]["name"] for _, o in objs if o["reason"] == "Pulling"] == [
        "hunter-x7k2p"
    ]
    assert stats.records == 301 and not stats.damaged and stats.examined < 20  # noise is not parsed


def test_a_yaml_stream_with_one_bad_document_keeps_the_others(tmp_path):
    docs = [yaml.safe_dump(noise(1)), "reason: Pulling\nfoo: [unclosed\n", yaml.safe_dump(hunter())]
    r = scan_bytes(tmp_path, "---\n".join(docs).encode())
    assert r.returncode == 3  # the bad document could not be read: said, not hidden
    assert SCANNER_HIT in rules_found(r)
    assert b"damaged 1: invalid YAML document" in r.stderr


def test_a_yaml_list_with_one_bad_item_keeps_the_others(tmp_path):
    text = yaml.safe_dump(
        {"apiVersion": "v1", "items": [noise(1), {"x": 1}, hunter()], "kind": "List"}
    )
    text = text.replace("- x: 1\n", "- x: [Pulled\n")  # damage the middle item only
    objs, stats = read(text.encode())
    assert [o["involvedObject"]["name"] for _, o in objs if o.get("reason") == "Pulling"] == [
        "hunter-x7k2p"
    ]
    assert stats.damaged == {"invalid YAML List item": 1}


def test_unquoted_yaml_timestamps_and_impossible_dates_do_not_crash(tmp_path):
    text = yaml.safe_dump(hunter()).replace("'2026", "2026").replace("Z'", "Z")
    text += "---\nreason: Pulled\nlastTimestamp: 2026-02-30\n"
    objs, stats = read(text.encode())
    assert (
        objs[0][1]["firstTimestamp"] == hunter()["firstTimestamp"]
    )  # a string, as Kubernetes keeps it
    assert objs[1][1]["lastTimestamp"] == "2026-02-30" and not stats.damaged


def test_input_whose_records_were_all_skipped_is_not_a_clean_no_findings(tmp_path):
    pods = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"p{i}"}}
            for i in range(5)
        ],
    }
    r = scan(str(_write(tmp_path / "pods.json", json.dumps(pods, indent=4))))
    assert r.returncode == 3
    assert r.stdout != b"No findings.\n" and b"not read in full" in r.stdout
    assert b"none of the 5 records read is a Kubernetes Event" in r.stderr


# -- crashes and damaged compression --------------------------------------------------------


def _write(path, text):
    path.write_text(text)
    return path


def _jsonl(n, hunter_at):
    lines = [json.dumps(noise(i)) for i in range(n)]
    lines[hunter_at] = json.dumps(hunter())
    return ("\n".join(lines) + "\n").encode()


def test_truncated_gzip_keeps_what_was_read_and_the_other_inputs(tmp_path):
    gz = gzip.compress(_jsonl(4000, hunter_at=10))
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gz[: len(gz) // 2])
    other = tmp_path / "other.json"
    other.write_text(json.dumps(image_event("Pulling", "ci", "miner-1", "evil/miner:1")) + "\n")
    r = scan(str(cut), str(other), "-o", "json")
    assert r.returncode == 3, r.stderr
    found = rules_found(r)
    assert SCANNER_HIT in found and ("kubernetes-suspicious-image-pulling", "miner") in found
    assert b"Traceback" not in r.stderr
    assert f"pullwatch: {cut}: gzip data is truncated".encode() in r.stderr


def test_corrupt_gzip_block_keeps_what_came_before(tmp_path):
    raw = _jsonl(20000, hunter_at=50)
    gz = bytearray(gzip.compress(raw))
    gz[len(gz) // 2 : len(gz) // 2 + 16] = b"\xff" * 16
    r = scan_bytes(tmp_path, bytes(gz))
    assert r.returncode == 3 and b"Traceback" not in r.stderr
    assert SCANNER_HIT in rules_found(r)
    assert b"gzip data is" in r.stderr


def test_multi_member_gzip_bzip2_and_xz_are_read(tmp_path):
    half = len(_jsonl(100, 99)) // 2
    data = _jsonl(100, hunter_at=99)
    cut = data.rfind(b"\n", 0, half) + 1
    for blob in (
        gzip.compress(data[:cut]) + gzip.compress(data[cut:]) + b"\0" * 8,
        bz2.compress(data),
        lzma.compress(data),
    ):
        r = scan_bytes(tmp_path, blob)
        assert r.returncode == 0, r.stderr
        assert SCANNER_HIT in rules_found(r)


def test_zstd_is_refused_loudly(tmp_path):
    r = scan_bytes(tmp_path, b"\x28\xb5\x2f\xfd" + b"\0" * 40)
    assert r.returncode == 3 and b"zstd-compressed" in r.stderr


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000,
        b'{"a":' * 50_000,
        b"- " * 50_000 + b"x\n",
        b"a: " + b"[" * 20_000 + b"\n",
        b"\xff\xfe\x00\xd8",
        b"\x00\x01\x02binary\xff" * 1000,
        b"\x1f\x8b\x08\x00garbage",
        b"BZh9garbage",
        b'{"kind": "List", "items": [' + b'{"reason": "Pulling", "message": 1},' * 10 + b"\n",
    ],
)
def test_no_traceback_on_hostile_bytes(tmp_path, data):
    r = scan_bytes(tmp_path, data)
    assert r.returncode in (0, 3), r.stderr
    assert b"Traceback" not in r.stderr and b"internal error" not in r.stderr


def test_large_allowlists_load_and_match(tmp_path):
    """RE2 failed to compile ~2,000 wildcard patterns in one set; 50,000 must work."""
    images = [f"r{i % 97}.example.com/team-{i}/*/a*-*:v*-{i}*" for i in range(25_000)]
    images += [f"docker.io/org{i}/**" for i in range(25_000)]
    allow = {
        "apiVersion": "pullwatch.dev/v1alpha1",
        "kind": "AllowedImages",
        "metadata": {"name": "big"},
        "spec": {"images": images},
    }
    policy = policy_from_object(allow)
    assert not policy.problems and len(policy.patterns) == 50_000
    allowlist = Allowlist([policy])
    assert allowlist.check("ns", "r3.example.com/team-3/x/ab-c:v1-3z").allowed
    assert allowlist.check("ns", "docker.io/org24999/a/b:1").allowed
    assert not allowlist.check("ns", "r3.example.com/team-3/x/b-c:v1-3z").allowed
    assert not allowlist.check("ns", "docker.io/org25000/a:1").allowed
    # and through `pullwatch scan`
    path = tmp_path / "big.yaml"
    path.write_text(json.dumps(allow))
    events = tmp_path / "events.jsonl"
    events.write_text(
        json.dumps(image_event("Pulling", "ns", "ok", "docker.io/org7/app:1"))
        + "\n"
        + json.dumps(image_event("Pulling", "ns", "bad", "docker.io/evil/app:1", seq=2))
        + "\n"
    )
    r = scan(str(events), "-a", str(path), "-o", "json")
    assert r.returncode == 0, r.stderr
    assert rules_found(r) == [("kubernetes-suspicious-image-pulling", "bad")]


def test_hostile_allowlist_files_are_a_clear_usage_error(tmp_path):
    for i, text in enumerate(
        [
            b"a: [" * 20_000,
            b"\xff\xfe\x00garbage",
            b"spec: {images: [\n",
            b"x: &a [*a, *a]\ny: 2026-02-30\n",
        ]
    ):
        path = tmp_path / f"allow-{i}.yaml"
        path.write_bytes(text)
        r = scan(str(DATA / "events-list.json"), "-a", str(path))
        assert r.returncode in (0, 2) and b"Traceback" not in r.stderr, (text[:20], r.stderr)


# -- widening and forgery --------------------------------------------------------------------


def _policy(spec):
    return policy_from_object(
        {
            "apiVersion": "pullwatch.dev/v1alpha1",
            "kind": "AllowedImages",
            "metadata": {"name": "p"},
            "spec": spec,
        }
    )


def test_empty_namespaces_matches_no_namespace_and_says_so():
    policy = _policy({"namespaces": [], "images": ["**"]})
    assert not Allowlist([policy]).check("default", "docker.io/library/nginx:1").allowed
    assert any("applies to no namespace" in p for p in policy.problems)


def test_other_empty_shapes_never_widen():
    assert any("allows nothing" in p for p in _policy({"images": []}).problems)
    assert not _policy({"namespaces": [""], "images": ["**"]}).usable
    assert not _policy({"namespaces": None, "images": None}).usable
    # null namespaces is the field left out (the API server drops nulls): every namespace
    assert (
        Allowlist([_policy({"namespaces": None, "images": ["**"]})])
        .check("x", "docker.io/a/b:1")
        .allowed
    )


def test_audit_create_of_another_groups_events_resource_is_not_a_pull():
    ev = hunter()
    forged = audit_entries(ev, "a1", stages=("ResponseComplete",))[0]
    forged["objectRef"]["apiGroup"] = "forge.example.com"
    forged["objectRef"]["apiVersion"] = "v1"
    assert decode_audit_entry(forged, AuditDeduper()) is None
    for group in (None, "events.k8s.io"):
        real = audit_entries(ev, f"a-{group}", stages=("ResponseComplete",))[0]
        if group:
            real["objectRef"]["apiGroup"] = group
        assert decode_audit_entry(real, AuditDeduper()) is not None


def test_who_reported_a_pull_is_in_the_finding(tmp_path):
    real, forged = hunter(), image_event("Pulling", "recon", "fake", HUNTER, seq=9)  # a bare pod
    forged["source"] = {"component": "kubectl", "host": "worker-1"}
    r = scan_bytes(tmp_path, (json.dumps(real) + "\n" + json.dumps(forged) + "\n").encode())
    by_pod = {
        f["spec"]["workload"]["name"]: f["spec"]["reportedBy"] for f in finding_items(r.stdout)
    }
    assert by_pod["hunter"] == {"component": "kubelet", "kubelet": True}
    assert by_pod["fake"] == {"component": "kubectl", "kubelet": False}
    entries = audit_entries(hunter(), "x1")
    for entry in entries:
        entry["user"]["username"] = "mallory"
    r = scan_bytes(tmp_path, "".join(json.dumps(e) + "\n" for e in entries).encode(), name="audit")
    reported = finding_items(r.stdout)[0]["spec"]["reportedBy"]
    assert reported["user"] == "mallory" and reported["kubelet"] is False


# -- memory and exit codes --------------------------------------------------------------------


def test_a_damaged_first_line_does_not_read_the_whole_file_into_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    line = json.dumps(noise(1)).encode() + b"\n"
    with open(path, "wb") as f:
        f.write(b'{"broken": \n')
        for _ in range(60_000_000 // len(line)):
            f.write(line)
        f.write(json.dumps(hunter()).encode() + b"\n")
    code = (
        f"import resource, subprocess; "
        f"r = subprocess.run([{PULLWATCH!r}, 'scan', {str(path)!r}, '-o', 'json'], "
        "capture_output=True); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "3"  # the broken line is damage
    assert int(out[1]) < 100 * 1024, f"peak RSS {int(out[1]) // 1024} MB for a 60 MB input"


def test_every_exit_code(tmp_path, monkeypatch, capsys):
    events = str(DATA / "events-list.json")
    assert scan(events, "-a", ALLOW).returncode == 0
    assert scan(events, "-a", ALLOW, "--fail-on-findings").returncode == 1
    assert scan(events, "--bogus-flag").returncode == 2
    assert scan(events, "-a", str(tmp_path / "missing.yaml")).returncode == 2
    assert scan(events, "--scanner", "Not/Valid").returncode == 2
    r = scan(str(tmp_path / "missing.json"), events, "--fail-on-findings")
    assert r.returncode == 3 and b"missing.json" in r.stderr  # 3 wins over 1: results incomplete
    import pullwatch.scan.pipeline as pipeline
    from pullwatch import cli

    def boom(*_a, **_k):
        raise KeyError("a bug")

    monkeypatch.setattr(pipeline, "scan_paths", boom)
    assert cli.main(["scan", events]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: KeyError" in err and "Traceback" not in err


def test_help_is_plain_text_and_documents_the_exit_codes():
    out = subprocess.run([PULLWATCH, "scan", "--help"], capture_output=True, text=True).stdout
    top = subprocess.run([PULLWATCH, "--help"], capture_output=True, text=True).stdout
    assert "``" not in out + top
    for code in ("0 ", "1 ", "2 ", "3 ", "4 "):
        assert f"\n  {code}" in out, code


def test_the_hot_path_caches_keep_no_long_text():
    """The caches of the hot path see names before they are validated (a pod name,
    a timestamp from an Event anyone wrote, up to a 16 MiB line): a long one is computed, never
    kept, so that 30,000 of them cannot pin gigabytes."""
    from pullwatch.core import findings, judge, ledger, pulls

    long = "a" * 1_000_000
    checks = [
        (ledger._short_hash, lambda: ledger.short_hash(long, 48)),
        (judge._pull_slot, lambda: judge.pull_slot("ns", long, "app", "nginx")),
        (judge._pull_slot, lambda: judge.pull_slot(long, "pod", "app", "nginx")),
        (pulls._parse_cached, lambda: pulls.parse_message(long, 'Pulling image "x"')),
        (findings._minute_of, lambda: findings.minute_of("2026-11-18T00:00:00" + long)),
    ]
    for cache, call in checks:
        before = cache.cache_info()
        call()
        after = cache.cache_info()
        assert (after.currsize, after.misses) == (before.currsize, before.misses), cache
    assert ledger.short_hash(long, 48) == ledger.short_hash(long, 48)  # the same, uncached
    assert pulls.container_of("spec.ephemeralContainers{" + "b" * 253 + "}") == "b" * 253
    assert pulls.container_of("spec.containers{" + long + "}") is None  # no container's name


def test_an_allowed_pull_in_an_invalid_namespace_is_skipped_before_anything_keeps_it(tmp_path):
    """The cheap look sees the namespace as written: one that is no namespace (here 200,000
    characters) is counted as skipped, as the full decode says, before any cache or the
    allowlist's per-namespace verdicts could keep it."""
    from pullwatch.core import judge
    from pullwatch.scan.pipeline import scan_paths

    allow = Allowlist(
        [
            policy_from_object(
                {
                    "apiVersion": "pullwatch.dev/v1alpha1",
                    "kind": "AllowedImages",
                    "metadata": {"name": "a"},
                    "spec": {"images": ["nginx:*"]},
                }
            )
        ]
    )
    lines = []
    for i in range(5):
        ev = image_event("Pulling", "web", f"p{i}", "nginx:1", seq=i)
        ev["metadata"]["namespace"] = ev["involvedObject"]["namespace"] = f"n{i}" + "x" * 200_000
        lines.append(json.dumps({"type": "ADDED", "object": ev}))
    path = tmp_path / "long-namespaces.jsonl"
    path.write_text("\n".join(lines) + "\n")
    before = judge._pull_slot.cache_info().currsize
    result = scan_paths([str(path)], allow, parallel=False)
    assert result.stats.skipped["image event in an invalid namespace"] == 5
    assert result.pulls == 0 and not result.findings
    assert judge._pull_slot.cache_info().currsize == before


def test_records_nested_a_thousand_arrays_deep_are_skipped_not_a_crash(tmp_path):
    """orjson parses 1,024 levels of arrays; a reader that followed each level with a
    generator ended the whole scan with a RecursionError."""
    hunter = json.dumps(image_event("Pulling", "ci", "hunter", "aquasec/kube-hunter:0.6.8", seq=1))
    deep = "[" * 1000 + hunter + "]" * 1000
    path = tmp_path / "deep.jsonl"
    path.write_text(deep + "\n" + hunter + "\n")
    r = subprocess.run(
        [PULLWATCH, "scan", str(path), "-o", "json"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "records nested deeper than 4 arrays or Lists" in r.stderr
    counts = [f["status"]["count"] for f in finding_items(r.stdout)]
    assert counts == [1, 1]  # the line after it: its scanner and suspicious Findings, once each
