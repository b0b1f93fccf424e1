"""The Pod witness' own logic, on pod objects shaped as the API server sends them: what it judges,
what it remembers (a fingerprint per pod, never the pod), when it forgets, what it tells the
workload resolver. Its stream is the Event stream's (tested there); the real API server and the
real kubelet are in tests/e2e/test_pods_witness.py."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import pytest
import yaml

from pullwatch.core.allowlist import Allowlist
from pullwatch.core.detector import Detector
from pullwatch.core.evidence import EXPIRED, PENDING
from pullwatch.core.observations import Running
from pullwatch.core.rules import ScannerList
from pullwatch.core.workload import Workload
from pullwatch.kube.api import ApiError
from pullwatch.kube.witnesses.pods import PodWitness
from pullwatch.kube.workloads import WorkloadResolver
from pullwatch.scan.pipeline import Config, scan_paths

DIGEST = "sha256:" + "4e" * 32


def pod(
    name: str = "hunter",
    uid: str = "0b8f8d4e-1",
    image: str = "registry.corp/tools/netcheck:1",
    started: str = "2026-11-18T11:06:40Z",
    owner: tuple[str, str] | None = None,
    labels: dict | None = None,
) -> dict:
    meta = {"name": name, "namespace": "team-a", "uid": uid, "resourceVersion": "10"}
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": owner[0],
                "name": owner[1],
                "uid": "o-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    if labels:
        meta["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": "node-1", "containers": [{"name": "main", "image": image}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "main",
                    "ready": False,
                    "restartCount": 0,
                    "image": image,
                    "imageID": f"registry.corp/tools/netcheck@{DIGEST}",
                    "containerID": "containerd://5d1f" + uid,
                    "started": True,
                    "state": {"running": {"startedAt": started}},
                }
            ],
        },
    }


class Seen:
    """What the witness hands over; a rule fires on the images in ``fires``."""

    def __init__(self, fires: tuple[str, ...] = ("registry.corp/tools/netcheck:1",)):
        self.runs: list[Running] = []
        self.fires = fires

    def __call__(self, run: Running) -> bool:
        self.runs.append(run)
        return run.image in self.fires


@pytest.fixture
def seen():
    return Seen()


def witness(observe, **kwargs) -> PodWitness:
    return PodWitness(None, observe, **kwargs)  # type: ignore[arg-type]  # no API: handle only


def test_a_pod_is_judged_once_until_what_its_containers_run_changes(seen):
    w = witness(seen)
    p = pod()
    w.handle("ADDED", p)
    assert [(r.container, r.digest, r.at_startup) for r in seen.runs] == [("main", DIGEST, True)]
    ready = copy.deepcopy(p)
    ready["status"]["containerStatuses"][0]["ready"] = True
    ready["metadata"]["resourceVersion"] = "11"
    w.handle("MODIFIED", ready)  # readiness only: nothing new ran
    assert len(seen.runs) == 1 and w.judged == 1
    restarted = copy.deepcopy(ready)
    restarted["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] = (
        "2026-11-18T12:00:00Z"
    )
    w.handle("MODIFIED", restarted)
    assert len(seen.runs) == 2 and len(w.fingerprints) == 1
    w.handle("DELETED", restarted)
    assert w.fingerprints == {}


def test_the_first_list_is_the_start_up_inventory(seen):
    w = witness(seen)
    w.listing()
    w.handle("ADDED", pod())
    w.listed(True)
    w.stream.synced.set()
    w.handle("ADDED", pod("later", uid="u-2"))
    assert [(r.pod, r.at_startup) for r in seen.runs] == [("hunter", True), ("later", False)]


def test_a_relist_forgets_the_pods_it_no_longer_lists_and_a_failed_one_forgets_nothing(seen):
    w = witness(seen)
    w.stream.synced.set()
    for i in range(3):
        w.handle("ADDED", pod(f"p{i}", uid=f"u-{i}"))
    w.listing()
    w.handle("ADDED", pod("p1", uid="u-1"))
    w.listed(False)  # the list broke off: what it did not get to may still exist
    assert len(w.fingerprints) == 3
    w.listing()
    w.handle("ADDED", pod("p1", uid="u-1"))  # known, unchanged: kept, not judged again
    w.listed(True)  # p0 and p2 were deleted while the watch was away
    assert len(w.fingerprints) == 1 and len(seen.runs) == 3


def test_a_pod_where_nothing_ran_is_not_remembered(seen):
    w = witness(seen)
    p = pod()
    p["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    w.handle("ADDED", p)
    assert seen.runs == [] and w.fingerprints == {}


def test_a_damaged_pod_is_skipped_counted_and_not_decoded_again(seen):
    w = witness(seen)
    bad = pod()
    bad["spec"]["containers"][0]["name"] = "Not A Label"
    w.handle("ADDED", bad)
    w.handle("MODIFIED", copy.deepcopy(bad))
    assert seen.runs == [] and sum(w.skips.values()) == 1 and len(w.fingerprints) == 1
    w.handle("ADDED", {"metadata": "not an object"})
    assert sum(w.skips.values()) == 2


def test_memory_is_bounded(seen):
    w = witness(seen, max_pods=2)
    for i in range(5):
        w.handle("ADDED", pod(f"p{i}", uid=f"u-{i}"))
    assert len(w.fingerprints) == 2 and len(seen.runs) == 5


class CountingApi:
    """Answers every metadata read with 404 (the owner is gone) and records what was read."""

    def __init__(self):
        self.paths: list[str] = []

    async def request(self, method, path, **kwargs):
        self.paths.append(path)
        raise ApiError(404, "NotFound", "gone", method, path)


def test_owners_go_to_the_workload_resolver(seen):
    api = CountingApi()
    resolver = WorkloadResolver(api)  # type: ignore[arg-type]
    w = witness(seen, resolver=resolver)
    w.handle("ADDED", pod("agent-x7k2p", uid="u-1", owner=("DaemonSet", "agent")))
    w.handle("ADDED", pod("bare", uid="u-2"))
    assert resolver.cached("team-a", "agent-x7k2p") == Workload("DaemonSet", "agent", "read")
    assert resolver.cached("team-a", "bare") == Workload("Pod", "bare", "read")
    w.handle("ADDED", pod("allowed", uid="u-9", image="registry.corp/apps/web:1"))
    assert resolver.cached("team-a", "allowed") is None  # no rule fired: nothing to save a read for
    labels = {"pod-template-hash": "7d9f8b6c5d"}
    w.handle(
        "ADDED",
        pod(
            "web-7d9f8b6c5d-x7k2p", uid="u-3", owner=("ReplicaSet", "web-7d9f8b6c5d"), labels=labels
        ),
    )
    workload = asyncio.run(resolver.resolve("team-a", "web-7d9f8b6c5d-x7k2p"))
    # the pod itself is not read (the witness said who owns it); its ReplicaSet is
    assert api.paths == ["/apis/apps/v1/namespaces/team-a/replicasets/web-7d9f8b6c5d"]
    assert workload == Workload("Deployment", "web", "inferred")


def test_a_scanner_by_digest_runs_into_a_finding_that_counts_no_pull():
    detector = Detector(Allowlist(), scanner_digests=[DIGEST])
    clock = 1_800_000_000.0

    def observe(run):
        detector.observe(run, minute=int(clock) // 60, clock=clock)

    w = witness(observe)
    w.handle("ADDED", pod(started="2026-11-18T11:06:40Z"))  # long before the clock: expired
    w.stream.synced.set()
    w.handle("ADDED", pod("second", uid="u-2", started="2027-01-15T08:00:00Z"))
    scanner = [s for s in detector.states.values() if s.identity.rule == "scanner"]
    assert [s.identity.workload for s in scanner] == ["hunter", "second"]
    for state in scanner:
        assert state.count == 0
    entries = {s.identity.workload: next(iter(s.evidence().running.values())) for s in scanner}
    assert entries["hunter"][5:7] == [EXPIRED, True]
    assert entries["second"][5:7] == [PENDING, False]


def test_a_finding_of_containers_seen_running_only_writes_no_empty_ledger_strings():
    """The API server refuses an empty string in the ledger's hash fields (422): a Finding the
    Pod witness made has no pulled pods, so it must leave them out."""
    detector = Detector(Allowlist(), scanner_digests=[DIGEST])
    w = witness(lambda run: detector.observe(run, minute=1, clock=1_800_000_000.0))
    w.handle("ADDED", pod())
    for state in detector.states.values():
        ledger = state.body()["status"]["ledger"]
        assert "" not in ledger.values() and ledger["running"]
        again = type(state).from_body(state.body())
        assert again.evidence().running_hashes == state.evidence().running_hashes


def test_the_engine_runs_one_pod_witness_per_namespace_unless_told_not_to():
    import logging

    from pullwatch.kube.api import Api
    from pullwatch.kube.engine import Engine, Options
    from pullwatch.kube.health import Health
    from pullwatch.kube.quietlog import Quiet

    health, quiet = Health(), Quiet(logging.getLogger("test"))
    engine = Engine(Api(None), Options(namespaces=["a", "b"]), health, quiet)
    assert [w.stream.path for w in engine.pod_witnesses] == [
        "/api/v1/namespaces/a/pods",
        "/api/v1/namespaces/b/pods",
    ]
    for w in engine.pod_witnesses:  # liveness and workloads shared with the Event stream
        assert w.stream.health is health and w.resolver is engine.resolver
        assert w.observe == engine.observe
    assert [w.stream.path for w in Engine(Api(None), Options(), health, quiet).pod_witnesses] == [
        "/api/v1/pods"
    ]
    assert Engine(Api(None), Options(pod_witness=False), health, quiet).pod_witnesses == []


def test_a_new_configuration_judges_every_running_pod_again():
    judging, clock = ["v1"], [0.0]
    seen = Seen()
    w = witness(seen, judging=lambda: judging[0], rejudge_every=60, clock=lambda: clock[0])
    w.listing()
    w.handle("ADDED", pod())
    w.listed(True)
    w.stream.synced.set()
    assert not w.rejudge_due()  # nothing changed
    judging[0] = "v2"  # say, a ScannerImages digest was added
    clock[0] = 30.0
    assert not w.rejudge_due()  # the last list is too recent: asked again at the next watch
    clock[0] = 61.0
    assert w.rejudge_due()
    w.listing()
    w.handle("ADDED", pod())  # unchanged, judged all the same
    w.listed(True)
    assert [r.at_startup for r in seen.runs] == [True, False]
    assert not w.rejudge_due()
    w.handle("MODIFIED", pod())
    assert len(seen.runs) == 2  # back to judging what changes


def test_judging_every_pod_again_waits_five_times_as_long_as_the_last_list_took():
    judging, clock = ["v1"], [100.0]
    w = witness(Seen(), judging=lambda: judging[0], clock=lambda: clock[0])
    w.listing()
    clock[0] = 160.0  # a list of a minute (150,000 pods)
    w.listed(True)
    judging[0] = "v2"
    clock[0] = 160.0 + 299
    assert not w.rejudge_due()
    clock[0] = 160.0 + 301
    assert w.rejudge_due()


def test_scan_of_pod_lists_names_the_findings_the_pod_witness_makes(tmp_path):
    """The offline inventory: `pullwatch scan` over pods (as kubectl prints them, published by
    others; and this module's own) makes the Findings the operator's Pod witness makes of them."""
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [pod()]}))
    paths = [*sorted((Path(__file__).parent / "data" / "pods").iterdir()), own]
    detector = Detector(Allowlist(), scanner_digests=[DIGEST])
    w = witness(lambda run: bool(detector.observe(run, minute=1, clock=1_800_000_000.0)))
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            for item in doc.get("items") or [doc]:
                w.handle("ADDED", item)
    live = {name for name, state in detector.states.items() if state.has_evidence}
    digests = ScannerList("d", frozenset(), False, (), frozenset([DIGEST]))
    result = scan_paths(
        [str(p) for p in paths], Allowlist(), config=Config(scanner_lists=[digests])
    )
    assert result.complete and not result.stats.skipped
    assert {f["metadata"]["name"] for f in result.findings} == live
    assert len(live) == 5  # the three published pods' (suspicious), and ours: scanner + suspicious
