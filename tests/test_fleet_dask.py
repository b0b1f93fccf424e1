"""The fleet example (examples/fleet/dask_scan.py) on a real two-worker Dask cluster: the Findings
of its shard tasks, tree-reduced with the merge, are exactly those of one `pullwatch scan` over
everything (issue 19)."""

import importlib.util
import json
import random
import subprocess

import pytest

from paths import DATA, ROOT
from test_merge import ALLOW, CORPORA, PULLWATCH, records

distributed = pytest.importorskip("distributed")

spec = importlib.util.spec_from_file_location("dask_scan", ROOT / "examples/fleet/dask_scan.py")
dask_scan = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dask_scan)


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # a free loopback port: two clusters never clash
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def scan(*paths) -> tuple[list, int]:
    """The items `pullwatch scan -o json` writes, and how many records it read."""
    r = subprocess.run(
        [PULLWATCH, "scan", *map(str, paths), "-a", ALLOW, "-o", "json"], capture_output=True
    )
    assert r.returncode in (0, 3), r.stderr
    summary = r.stderr.decode().split("records read: ", 1)[1]
    return json.loads(r.stdout)["items"], int(summary.split()[0])


def test_dask_shards_then_tree_merge_equal_one_scan_of_everything(client, tmp_path):
    rng = random.Random(19)
    wholes, pieces = [], []
    for name in CORPORA:
        lines = records(name)
        whole = tmp_path / f"{name}.jsonl"
        whole.write_text("\n".join(lines) + "\n")
        wholes.append(whole)
        halves = [[], []]
        for line in lines:
            halves[rng.randrange(2)].append(line)
        for i, half in enumerate(halves):
            piece = tmp_path / f"{name}.{i}.jsonl"
            piece.write_text("\n".join(half) + "\n" if half else "")
            pieces.append(str(piece))
    rng.shuffle(pieces)
    shards = [pieces[i::5] for i in range(5)]  # 5 tasks of several inputs each
    expected, read = scan(*wholes)
    assert any(d["kind"] == "Finding" for d in expected)

    # fan_in=2: a tree of three levels over the five shards' results
    result = dask_scan.fleet_scan(client, shards, [ALLOW], fan_in=2)
    assert json.loads(json.dumps(result.documents)) == expected
    assert result.records == read
    assert any("not JSON" in e or "damaged" in e for e in result.errors)  # malformed.jsonl


def test_dask_example_writes_what_scan_writes(client, tmp_path):
    out = tmp_path / "fleet.json"
    shards = [str(DATA / "events-list.json"), f"{DATA / 'watch.jsonl'},{DATA / 'audit.jsonl'}"]
    code = dask_scan.main(
        ["--scheduler", client.scheduler.address, "-a", ALLOW, "-o", str(out), *shards]
    )
    assert code == 0
    expected, _ = scan(DATA / "events-list.json", DATA / "watch.jsonl", DATA / "audit.jsonl")
    assert json.loads(out.read_text())["items"] == expected


def test_the_example_shows_what_inputs_and_servers_say_escaped(monkeypatch, capsys):
    """An object key (whoever can write the bucket names it) and a server's answer reach the
    example's stderr as text, never as terminal control sequences (review)."""
    import contextlib

    from pullwatch.scan.fleet import ShardResult

    hostile = ShardResult([], ["s3://b/\x1b]0;owned\x07key: not read"], 0, 0, ["h: \x1b[2J"])
    monkeypatch.setattr(dask_scan, "Client", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(dask_scan, "fleet_scan", lambda *a, **k: hostile)
    assert dask_scan.main(["x", "--scheduler", "tcp://none", "-o", "/dev/null"]) == 3
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\\x1b]0;owned" in err and "note: h: \\x1b[2J" in err
