"""The multi-core scan gives exactly the sequential scan's Findings and counters."""

import itertools
import json
import pickle

import orjson
import pytest

import pullwatch.scan.parallel as parallel
from kubelet import audit_entries, image_event, other_event, with_count
from pullwatch.core.allowlist import Allowlist, policy_from_object
from pullwatch.scan.pipeline import scan_paths

ALLOW = Allowlist(
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


@pytest.fixture
def stream(tmp_path):
    lines = []
    hunter = image_event(
        "Pulling", "default", "hunter", "aquasec/kube-hunter:0.6.8", count=1, seq=1
    )
    lines.append({"type": "ADDED", "object": hunter})  # the series starts in the first range...
    for i in range(3000):
        ns = f"ns{i % 7}"
        if i % 10 == 0:
            lines.append(
                {
                    "type": "ADDED",
                    "object": image_event("Pulling", ns, f"p{i % 50}", "nginx:1.25", seq=i),
                }
            )
        elif i % 37 == 0:
            lines.append(
                {
                    "type": "ADDED",
                    "object": image_event("Pulled", ns, f"m{i % 5}", "evil/miner", seq=i),
                }
            )
        else:
            lines.append(
                {
                    "type": "ADDED",
                    "object": other_event("Started", ns, f"p{i % 50}", "Started", seq=i),
                }
            )
        if i == 1500:
            lines.append('not json but "Pulling"')
    lines.append({"type": "MODIFIED", "object": with_count(hunter, 9)})  # ...and rises in the last
    path = tmp_path / "stream.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return str(path)


def test_parallel_equals_sequential(stream, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_BYTES", 1)
    assert parallel.usable(stream)
    seq = scan_paths([stream], ALLOW, parallel=False)
    par = scan_paths([stream], ALLOW, parallel=True)
    assert list(par.findings) == list(seq.findings)
    assert (par.pulls, par.stats.records, par.stats.examined, dict(par.stats.skipped)) == (
        seq.pulls,
        seq.stats.records,
        seq.stats.examined,
        dict(seq.stats.skipped),
    )
    hunter = [f for f in par.findings if "kube-hunter" in f["metadata"]["name"]]
    assert hunter and all(f["status"]["count"] == 9 for f in hunter)


def test_findings_built_on_every_core_are_the_sequential_ones_encoded(stream, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_BYTES", 1)
    monkeypatch.setattr(parallel, "MIN_FINDINGS", 1)
    monkeypatch.setattr(parallel, "BUILD_CHUNK", 2)  # several chunks: their order must hold
    seq = scan_paths([stream], ALLOW, parallel=False)
    par = scan_paths([stream], ALLOW, parallel=True)
    assert len(seq.findings) > 4 and parallel.can_build(len(par.findings))
    option = orjson.OPT_INDENT_2
    expected = [orjson.dumps(f, option=option) for f in seq.findings]
    assert list(par.findings.encoded(option)) == expected
    assert [orjson.dumps(f, option=option) for f in par.findings] == expected  # table, YAML
    assert list(seq.findings.encoded(option)) == expected  # one core: the same bytes


def test_ranges_are_line_aligned_and_cover_the_file(stream):
    data = open(stream, "rb").read()
    ranges = parallel.line_aligned_ranges(stream, 7)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    for (_, b), (c, _) in itertools.pairwise(ranges):
        assert b == c and data[b - 1 : b] == b"\n"


def test_not_used_for_small_gzip_or_non_json_lines(tmp_path, stream):
    assert not parallel.usable(stream)  # below MIN_BYTES
    assert not parallel.usable("-")
    yaml_file = tmp_path / "x.yaml"
    yaml_file.write_text("a: 1\n")
    assert not parallel.usable(str(yaml_file))


def test_a_name_collision_is_resolved_in_file_order(tmp_path, monkeypatch):
    """After a name collision, the identity seen first in the file keeps its name, as in a
    sequential scan, whichever witness (an Event, an audit entry) each came from."""
    from pullwatch.core import findings as findings_module
    from pullwatch.core.findings import Identity

    first = Identity("scanner", "b", "hunter", "docker.io/evil/b/kube-hunter")
    later = Identity("scanner", "a", "hunter", "docker.io/evil/a/kube-hunter")
    real = findings_module.finding_name
    clash = real(*first)

    def colliding(rule, namespace, workload, repository, salt=0):
        if salt == 0 and (rule, namespace, workload, repository) in (tuple(first), tuple(later)):
            return clash
        return real(rule, namespace, workload, repository, salt)

    monkeypatch.setattr(findings_module, "finding_name", colliding)
    monkeypatch.setattr(parallel, "MIN_BYTES", 1)
    event = image_event("Pulling", "b", "hunter", "evil/b/kube-hunter:1", seq=1)
    audited = image_event("Pulling", "a", "hunter", "evil/a/kube-hunter:1", seq=2)
    lines = [{"type": "ADDED", "object": event}, *audit_entries(audited, "id-1")]
    lines += [
        {"type": "ADDED", "object": other_event("Started", "c", f"p{i}", "Started", seq=i)}
        for i in range(3, 3000)
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert parallel.usable(str(path))
    seq = scan_paths([str(path)], ALLOW, parallel=False)
    par = scan_paths([str(path)], ALLOW, parallel=True)
    assert list(par.findings) == list(seq.findings)
    names = {(f["metadata"]["namespace"], f["metadata"]["name"]) for f in par.findings}
    assert ("b", clash) in names and ("a", clash) not in names


def test_what_a_range_kept_travels_back_unchanged():
    from pullwatch.core.audit import entry_observations
    from pullwatch.core.pulls import decode_event

    pulls = [
        decode_event(image_event("Pulling", "web", "hunter", "aquasec/kube-hunter", seq=i))
        for i in range(3)
    ]
    pulled = decode_event(image_event("Pulled", "web", "x-1", "evil/x:1", count=4, with_uid=False))
    event = image_event("Pulling", "ci", "scan", "aquasec/kube-bench", seq=9)
    audited = [entry_observations(e) for e in audit_entries(event, "id-7")]
    assert any(obs and any(o.actor for o in obs) for _, obs in audited)  # pulls with an author
    kept = [("", [pulls[0]]), ("", [pulled]), ("", [pulls[1], pulls[2]]), *audited, ("", [])]
    rows = parallel._portable(kept)
    assert sum(len(r) > 2 for r in rows) == 2  # the plain Event pulls went flat
    assert list(parallel._restored(pickle.loads(pickle.dumps(rows)))) == kept


KILLED_WORKER = """
import os, signal, sys
import pullwatch.scan.parallel as parallel
parallel.MIN_BYTES = parallel.MIN_FINDINGS = 1
parallel.BUILD_CHUNK = 1
parent = os.getpid()
phase = sys.argv[2]
real = getattr(parallel, phase)
def dies(*args, **kwargs):
    if os.getpid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer does
    return real(*args, **kwargs)
setattr(parallel, phase, dies)
from pullwatch.cli import main
sys.exit(main(["scan", sys.argv[1], "-o", "json", "--quiet"]))
"""


@pytest.mark.parametrize("phase", ["_scan_range", "_build_chunk"])
def test_a_killed_worker_fails_the_scan_instead_of_hanging_it(stream, phase):
    import subprocess
    import sys

    # The deadline only guards the suite against the hang this test is about.
    r = subprocess.run(
        [sys.executable, "-c", KILLED_WORKER, stream, phase],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 5, r.stderr
    assert r.stderr.startswith("pullwatch: a worker process of the multi-core scan"), r.stderr


HELPER_DIES_AHEAD = """
import concurrent.futures, os, signal, sys, time
import pullwatch.scan.parallel as parallel
parallel.BUILD_CHUNK = 1
pools = []
class Recorded(concurrent.futures.ProcessPoolExecutor):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        pools.append(self)
concurrent.futures.ProcessPoolExecutor = Recorded
parent = os.getpid()
class Names:
    def names(self):
        return [str(i) for i in range(20)]
def build(chunk):
    if os.getpid() != parent and chunk == ["13"]:
        os.kill(os.getpid(), signal.SIGKILL)  # a chunk queued ahead of the one waited for
    if os.getpid() == parent and chunk == ["10"]:
        while not pools[-1]._broken:  # the parent is busy while the helper dies
            time.sleep(0.01)
    return chunk
try:
    list(parallel._built(Names(), build, 2))
except parallel.WorkerDied as exc:
    print("died:", exc)
"""


def test_a_helper_killed_ahead_of_the_parent_fails_the_scan_too():
    """The helper dies on a chunk queued ahead while the parent builds its own: the next submit,
    not a result, meets the broken pool. Before: BrokenProcessPool, an internal error (exit 4)."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", HELPER_DIES_AHEAD], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("died: a worker process of the multi-core scan"), r.stdout
