"""Findings that merge exactly (issue 19): merge(scan(A), scan(B)) == scan(A + B).

The counting state a Finding keeps is a join - per Event series its highest observation, the
containers and pod creations as sets - so merge is commutative, associative and idempotent, and
scanning shards and merging them gives exactly the Findings of scanning everything: checked here
for every corpus under tests/data, through the console scripts, and as properties of the core.
"""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kubelet import audit_entries, image_event
from paths import DATA
from pullwatch.core.allowlist import Allowlist
from pullwatch.core.audit import AuditDeduper, decode_audit_entry
from pullwatch.core.collect import Collector, merge
from pullwatch.core.detector import Detector
from pullwatch.core.observations import MAIN, ActorChange, Running
from pullwatch.core.pulls import Actor, decode_event
from pullwatch.core.workload import Workload

PULLWATCH = str(Path(sys.executable).parent / "pullwatch")
ALLOW = str(DATA / "allowed-images.yaml")
CORPORA = [
    "events-list.json",
    "events-list.yaml",
    "events-v1.json",
    "watch.jsonl",
    "bare.jsonl",
    "audit.jsonl",
    "malformed.jsonl",
    "real-kubelet.json",
]


def records(name: str) -> list:
    """The corpus' records as JSON values (a List's items; lines; YAML documents' items)."""
    text = (DATA / name).read_text()
    if name.endswith(".jsonl"):
        return [line for line in text.splitlines() if line.strip()]  # raw: damaged lines too
    doc = yaml.safe_load(text) if name.endswith(".yaml") else json.loads(text)
    return [json.dumps(item) for item in doc["items"]]


def scan(*paths: Path, fmt: str = "json") -> dict:
    r = subprocess.run(
        [PULLWATCH, "scan", *map(str, paths), "-a", ALLOW, "-o", fmt], capture_output=True
    )
    assert r.returncode in (0, 3), r.stderr
    return json.loads(r.stdout)


def run_merge(*paths: Path) -> dict:
    r = subprocess.run([PULLWATCH, "merge", *map(str, paths), "-o", "json"], capture_output=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("name", CORPORA)
def test_scanning_shards_then_merging_equals_scanning_everything(name, tmp_path):
    lines = records(name)
    whole = tmp_path / "whole.jsonl"
    whole.write_text("\n".join(lines) + "\n")
    expected = scan(whole)
    rng = random.Random(name)  # a different split per corpus, the same on every run
    shards = [[] for _ in range(3)]
    for line in lines:
        shards[rng.randrange(3)].append(line)
    outputs = []
    for i, shard in enumerate(shards):
        path = tmp_path / f"shard{i}.jsonl"
        path.write_text("\n".join(shard) + "\n" if shard else "")
        out = tmp_path / f"shard{i}.json"
        out.write_text(json.dumps(scan(path)))
        outputs.append(out)
    assert run_merge(*outputs) == expected
    assert run_merge(*reversed(outputs)) == expected  # commutative
    assert run_merge(*outputs, *outputs) == expected  # idempotent
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(run_merge(outputs[0], outputs[1])))
    assert run_merge(partial, outputs[2]) == expected  # associative


def test_merge_refuses_what_it_cannot_merge_exactly(tmp_path):
    out = scan(DATA / "events-list.json")
    finding = out["items"][0]
    operator_like = json.loads(json.dumps(finding))
    del operator_like["metadata"]["annotations"]
    damaged = json.loads(json.dumps(finding))
    damaged["metadata"]["annotations"]["pullwatch.dev/merge-state"] = "v2:AAAA v2:AAAA"
    future = json.loads(json.dumps(finding))
    future["metadata"]["annotations"]["pullwatch.dev/merge-state"] = "v9:AAAA v9:AAAA"
    for doc, why in (
        (operator_like, "no merge state"),
        (damaged, "damaged merge state"),
        (future, "another pullwatch version"),
    ):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [doc]}))
        r = subprocess.run([PULLWATCH, "merge", str(path)], capture_output=True)
        assert r.returncode == 2 and why in r.stderr.decode(), r.stderr
        assert b"item 1" in r.stderr  # it names which document


# -- the same as properties of the core ------------------------------------------------------

NODES = ["node-1", "node-2"]
PODS = ["web-7d9f8b6c5d-bcdfg", "web-7d9f8b6c5d-hjklm", "hunter", "db-0"]
IMAGES = ["evil/x:1", "evil/x:2", "aquasec/kube-hunter:0.6.8"]


@st.composite
def observations(draw):
    """Pulls (Events and audit creates of the same Events), containers seen running and people
    changing workloads, with repeats and rising counts: what shards would share or split."""
    out, names = [], []
    for i in range(draw(st.integers(1, 14))):
        pod, image = draw(st.sampled_from(PODS)), draw(st.sampled_from(IMAGES))
        kind = draw(st.sampled_from(["Pulling", "Pulled", "Present"]))
        ev = image_event(
            kind,
            "ns",
            pod,
            image,
            node=draw(st.sampled_from(NODES)),
            count=draw(st.integers(1, 4)),
            seq=draw(st.integers(0, 5)),
            t=draw(st.integers(0, 600)),
        )
        if names and draw(st.integers(0, 5)) == 0:
            # an earlier Event rewritten by its writer to name this pod or image: one series
            ev["metadata"]["name"] = draw(st.sampled_from(names))
        names.append(ev["metadata"]["name"])
        if draw(st.booleans()):
            out.append(decode_event(ev))
        else:
            entry = audit_entries(ev, f"a{i}", node=draw(st.sampled_from(NODES)))[1]
            out.append(decode_audit_entry(entry, AuditDeduper()))
        if draw(st.integers(0, 3)) == 0:
            out.append(
                Running(
                    "ns",
                    pod,
                    f"u-{pod}",
                    pod.split("-")[0],
                    MAIN,
                    image,
                    "sha256:" + "a1" * 32,
                    "node-1",
                    "2026-11-18T11:00:00Z",
                    Workload("Pod", pod, "read"),
                )
            )
        if draw(st.integers(0, 4)) == 0:
            who = Actor(draw(st.sampled_from(["alice", "bob"])), (), ("10.0.0.9",), "kubectl")
            out.append(
                ActorChange(
                    "ns",
                    "web",
                    "Deployment",
                    who,
                    "patch deployments",
                    f"2026-11-18T11:0{draw(st.integers(0, 9))}:00Z",
                )
            )
    return out


def bodies(collector: Collector) -> list:
    return json.loads(json.dumps(list(collector.bodies()) + [collector.context()]))


def scanned(obs: list) -> Collector:
    c = Collector(Detector(Allowlist()), clock=1.9e9)
    for o in obs:
        c.add(o)
    return c


def docs(collector: Collector) -> list:
    out = list(collector.bodies())
    context = collector.context()
    return [(f"d{i}", d) for i, d in enumerate(out + ([context] if context else []))]


@settings(max_examples=100)
@given(
    observations(),
    st.lists(st.integers(0, 2), min_size=14 * 3, max_size=14 * 3),
    st.randoms(use_true_random=False),
)
def test_merge_of_shards_is_the_scan_of_all(obs, where, rng):
    shards = [[], [], []]
    for o, i in zip(obs, where):
        shards[i].append(o)
    expected = bodies(scanned(obs))
    parts = [docs(scanned(s)) for s in shards]
    assert bodies(merge([d for p in parts for d in p], clock=1.9e9)) == expected
    shuffled = [d for p in parts for d in p]
    rng.shuffle(shuffled)
    assert bodies(merge(shuffled, clock=1.9e9)) == expected  # any order
    again = [d for p in parts for d in p] * 2
    assert bodies(merge(again, clock=1.9e9)) == expected  # twice: nothing more
    rng.shuffle(obs)
    assert bodies(scanned(obs)) == expected  # and scan itself ignores the order of its input


def test_a_series_rewritten_to_name_another_pod_leaves_the_context_exact():
    """An Event series whose later version names another pod (a tenant rewriting its own Event):
    the Finding keeps the later pull, so the scan context must carry the first pod's pull slot -
    the one no Finding holds - and not the kept one's. Scanning both versions at once and
    merging the two scanned apart must agree."""
    first = image_event("Pulling", "ns", PODS[0], IMAGES[0], count=1)
    later = image_event("Pulling", "ns", PODS[1], IMAGES[0], count=2)
    later["metadata"]["name"] = first["metadata"]["name"]  # the same series
    obs = [decode_event(first), decode_event(later)]
    expected = bodies(scanned(obs))
    shards = docs(scanned(obs[:1])) + docs(scanned(obs[1:]))
    assert bodies(merge(shards, clock=1.9e9)) == expected
    assert expected[-1] is not None  # the first pod's slot: held by no Finding


def test_a_rewritten_series_gives_the_same_findings_in_every_order():
    """One series seen naming pod A, then pod B, then pod A again with rising counts: whichever
    order the three come in, and however they are split between two scans, the Findings (their
    merge states included) and the scan context are the same."""
    import itertools

    name = image_event("Pulling", "ns", PODS[0], IMAGES[0])["metadata"]["name"]
    versions = []
    for count, pod in ((1, PODS[0]), (2, PODS[1]), (3, PODS[0])):
        ev = image_event("Pulling", "ns", pod, IMAGES[0], count=count)
        ev["metadata"]["name"] = name
        versions.append(decode_event(ev))
    expected = bodies(scanned(versions))
    for order in itertools.permutations(versions):
        assert bodies(scanned(list(order))) == expected
        for cut in (1, 2):
            shards = docs(scanned(list(order[:cut]))) + docs(scanned(list(order[cut:])))
            assert bodies(merge(shards, clock=1.9e9)) == expected


@pytest.mark.parametrize(
    "rewrite",
    [
        {"name": PODS[1]},  # another pod
        {"fieldPath": "spec.containers{sidecar}"},  # another container of the same pod
        {"uid": "another-uid"},
        {"namespace": "kube-system"},  # another claimed namespace: a forgery
    ],
)
def test_a_series_rewritten_with_the_same_count_and_times_is_order_free(rewrite):
    """`kubectl patch event` of only what an Event names keeps its count and times: the two
    versions must still not tie, or whichever came first would be kept (found in review)."""
    name = image_event("Pulling", "ns", PODS[0], IMAGES[0])["metadata"]["name"]
    before = image_event("Pulling", "ns", PODS[0], IMAGES[0], count=2)
    after = image_event("Pulling", "ns", PODS[0], IMAGES[0], count=2)
    before["metadata"]["name"] = after["metadata"]["name"] = name
    after["involvedObject"].update(rewrite)
    a, b = decode_event(before), decode_event(after)
    assert a != b
    expected = bodies(scanned([a, b]))
    assert bodies(scanned([b, a])) == expected
    for x, y in ((a, b), (b, a)):
        assert bodies(merge(docs(scanned([x])) + docs(scanned([y])), clock=1.9e9)) == expected
