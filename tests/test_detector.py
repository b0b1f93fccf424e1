"""Both rules, the workload as the unit, exact counting, caps and overflow, and the size bound."""

import json

import pytest

from kubelet import image_event, with_count
from pullwatch.core.allowlist import Allowlist, policy_from_object
from pullwatch.core.body import BUDGET
from pullwatch.core.detector import Caps, Detector
from pullwatch.core.ledger import MAX_SERIES
from pullwatch.core.pulls import decode_event
from pullwatch.core.rules import SCANNER_RULE, SUSPICIOUS_RULE
from pullwatch.core.state import FindingState
from pullwatch.core.workload import Workload


def allow(*images, namespaces=None):
    spec = {"images": list(images)}
    if namespaces:
        spec["namespaces"] = namespaces
    return Allowlist(
        [
            policy_from_object(
                {
                    "apiVersion": "pullwatch.dev/v1alpha1",
                    "kind": "AllowedImages",
                    "metadata": {"name": "t"},
                    "spec": spec,
                }
            )
        ]
    )


def observe(detector, ev, **kw):
    return detector.observe(decode_event(ev), **kw)


def rules_fired(detector, ev):
    return sorted(build(d.state)["spec"]["rule"] for d in observe(detector, ev))


def build(state):
    return state.body()


def pod(base: str, i: int) -> str:
    """A pod name as generateName makes it: base + 5 characters of the random alphabet."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    suffix = "".join(alphabet[(i // 27**k) % 27] for k in range(5))
    return f"{base}-{suffix}"


def only(detector):
    (f,) = detector.findings()
    return f


def test_rule_scores_and_identity():
    assert (SCANNER_RULE.risk_score, SCANNER_RULE.severity, SCANNER_RULE.id) == (
        81,
        "high",
        "4890cd6b-0112-4974-a272-c5c153aee551",
    )
    assert (SUSPICIOUS_RULE.risk_score, SUSPICIOUS_RULE.severity, SUSPICIOUS_RULE.id) == (
        49,
        "medium",
        "4d3a17b3-0a6d-4ae0-9421-46623a69c122",
    )
    assert SCANNER_RULE.mitre.technique_id == SUSPICIOUS_RULE.mitre.technique_id == "T1526"


def test_scanner_fires_from_any_registry_and_even_when_allowlisted():
    d = Detector(allow("docker.io/**", "registry.example.net:5000/**", "quay.io/**"))
    for image in (
        "aquasec/kube-hunter",
        "registry.example.net:5000/mirrors/aquasec/kube-hunter:v0.6.7",
        "quay.io/someone/kube-bench@sha256:" + "a" * 64,
        "kube-recon",
        "bishopfox/peirates:1",
    ):
        assert rules_fired(d, image_event("Pulling", "ns", "p", image)) == [SCANNER_RULE.name], (
            image
        )


def test_scanner_names_match_the_last_component_only():
    d = Detector(allow("**", "quay.io/**"))
    for image in (
        "kube-hunter-dashboard",
        "mykube-hunter",
        "quay.io/kube-hunter/web:1",
        "kube-bench-exporter",
    ):
        assert rules_fired(d, image_event("Pulling", "ns", "p", image)) == [], image


def test_scanner_list_is_configurable():
    d = Detector(allow("docker.io/**"), scanners={"nmap"})
    assert rules_fired(d, image_event("Pulling", "ns", "p", "instrumentisto/nmap")) == [
        SCANNER_RULE.name
    ]
    assert rules_fired(d, image_event("Pulling", "ns", "p", "aquasec/kube-hunter")) == []


def test_suspicious_fires_for_unlisted_and_not_for_allowed():
    d = Detector(allow("nginx:1.25.*", namespaces=["team-a-*"]))
    assert rules_fired(d, image_event("Pulling", "team-a-x", "p", "nginx:1.25.3")) == []
    assert rules_fired(d, image_event("Pulling", "team-b", "p", "nginx:1.25.3")) == [
        SUSPICIOUS_RULE.name
    ]
    (det,) = observe(d, image_event("Pulling", "team-a-x", "q", "nginx:1.26"))
    assert (
        "no AllowedImages pattern for namespace team-a-x"
        in build(det.state)["spec"]["notAllowedReason"]
    )


def test_invalid_image_is_suspicious_and_says_why():
    ev = image_event("Pulling", "ns", "p", "x")
    ev["message"] = 'Pulling image "Evil/Image"'
    (det,) = observe(Detector(allow("**")), ev)
    spec = build(det.state)["spec"]
    assert (
        spec["repository"] == "Evil/Image"
        and "not a valid image reference" in spec["notAllowedReason"]
    )


# -- exact counting ---------------------------------------------------------------------------


def test_series_adds_only_the_difference():
    d = Detector(Allowlist())
    ev = image_event("Pulling", "ns", "p", "nginx", count=2)
    assert [x.delta for x in observe(d, ev)] == [2]
    assert [x.delta for x in observe(d, with_count(ev, 5))] == [3]
    assert [x.delta for x in observe(d, with_count(ev, 5))] == [0]
    assert [x.delta for x in observe(d, with_count(ev, 4))] == [0]  # stale replay
    assert only(d)["status"]["count"] == 5


def test_pulling_and_its_successfully_pulled_are_one_pull():
    d = Detector(Allowlist())
    observe(d, image_event("Pulling", "ns", "p", "nginx", count=3, seq=1))
    for seq in (2, 3, 4):  # kubelet writes a distinct Successfully-pulled Event per pull
        observe(d, image_event("Pulled", "ns", "p", "nginx", seq=seq))
    assert only(d)["status"]["count"] == 3
    assert only(d)["status"]["outcomes"]["succeeded"] == 3


def test_successfully_pulled_without_its_pulling_still_counts():
    d = Detector(Allowlist())
    for seq in (2, 3):
        observe(d, image_event("Pulled", "ns", "p", "nginx", seq=seq))
    assert only(d)["status"]["count"] == 2


def test_already_present_counts_on_top_and_is_served_from_cache():
    d = Detector(Allowlist())
    observe(d, image_event("Pulling", "ns", "p", "nginx", seq=1))
    observe(d, image_event("Pulled", "ns", "p", "nginx", seq=2))
    observe(d, image_event("Present", "ns", "p", "nginx", seq=3, count=2))
    status = only(d)["status"]
    assert status["count"] == 3 and status["outcomes"] == {
        "succeeded": 1,
        "cached": 2,
        "failed": 0,
        "backoff": 0,
        "ran": "yes",
    }


def _failed(ns, pod, image, seq, count=1, error="rpc error: code = NotFound desc = x: not found"):
    ev = image_event("Pulling", ns, pod, image, seq=seq, count=count)
    ev.update(reason="Failed", type="Warning", message=f'Failed to pull image "{image}": {error}')
    ev["metadata"]["uid"] += "-failed"
    return ev


def test_failed_pulls_are_attempts_that_fire_and_say_nothing_ran():
    d = Detector(Allowlist())
    observe(d, image_event("Pulling", "ns", "hunter", "aquasec/kube-hunter:9.9", seq=1, count=4))
    observe(d, _failed("ns", "hunter", "aquasec/kube-hunter:9.9", seq=2, count=4))
    backoff = image_event("Pulling", "ns", "hunter", "aquasec/kube-hunter:9.9", seq=3, count=6)
    backoff.update(reason="BackOff", message='Back-off pulling image "aquasec/kube-hunter:9.9"')
    observe(d, backoff)
    scanner = next(f for f in d.findings() if f["spec"]["rule"] == SCANNER_RULE.name)
    outcomes = scanner["status"]["outcomes"]
    assert scanner["status"]["count"] == 4  # four attempts: Pulling 4, each ended in Failed
    assert (outcomes["failed"], outcomes["backoff"], outcomes["succeeded"], outcomes["ran"]) == (
        4,
        6,
        0,
        "no",
    )
    assert outcomes["lastError"]["class"] == "not found"


def test_a_failed_pull_seen_alone_is_still_an_attempt():
    d = Detector(Allowlist())
    observe(
        d,
        _failed(
            "ns",
            "p",
            "evil/x:1",
            seq=1,
            count=2,
            error="dial tcp 10.0.0.1:443: connect: connection refused",
        ),
    )
    status = only(d)["status"]
    assert status["count"] == 2 and status["outcomes"]["lastError"]["class"] == "unreachable"


def test_restart_relist_adds_nothing_and_counts_on():
    d1 = Detector(Allowlist())
    ev = image_event("Pulling", "ns", "p", "nginx", count=3)
    observe(d1, ev)
    body = only(d1)
    d2 = Detector(Allowlist())  # a restarted operator adopts what is stored
    d2.adopt(json.loads(json.dumps(body)))
    assert [x.delta for x in observe(d2, ev)] == [0]
    assert [x.delta for x in observe(d2, with_count(ev, 4))] == [1]
    assert only(d2)["status"]["count"] == 4


def test_adopt_refuses_objects_pullwatch_did_not_write():
    d = Detector(Allowlist())
    for bad in (
        {"metadata": {}},
        {"metadata": {"name": "x", "namespace": "y"}, "spec": {}},
        {
            "metadata": {"name": "suspicious-renamed-0000000000", "namespace": "ns"},
            "spec": {"workload": {"name": "w"}, "repository": "docker.io/library/nginx"},
        },
    ):
        with pytest.raises(ValueError):
            d.adopt(bad)


def test_merge_takes_the_higher_high_water_mark_per_series():
    ev_a = image_event("Pulling", "ns", "p", "nginx", count=3, seq=1)
    ev_b = image_event("Pulled", "ns", "p", "nginx", count=1, seq=2)
    here, there = Detector(Allowlist()), Detector(Allowlist())
    observe(here, ev_a)  # this process saw a at 3
    observe(there, with_count(ev_a, 2))  # the stored copy saw a at 2, and b
    observe(there, ev_b)
    state = here.adopt(only(there))
    assert state.count == 3 and sorted(v[2] for v in state.evidence().ledger.series.values()) == [
        1,
        3,
    ]
    here.adopt(only(there))  # merging again changes nothing
    assert state.count == 3


# -- the workload is the unit ----------------------------------------------------------------------


def test_a_deployments_replicas_and_its_rollout_are_one_finding():
    d = Detector(Allowlist())
    for i in range(50):
        observe(d, image_event("Pulling", "shop", pod("web-7d9f8b6c5d", i), "evil/app:1", seq=i))
    for i in range(10):  # a rollout: a new ReplicaSet hash and tag, the same repository
        observe(
            d, image_event("Pulling", "shop", pod("web-5c4b9d8f67", i), "evil/app:2", seq=100 + i)
        )
    f = only(d)
    assert f["spec"]["workload"] == {"kind": "Deployment", "name": "web", "source": "inferred"}
    assert f["status"]["count"] == 60 and f["status"]["podCount"] == 60
    assert {i["image"]: i["count"] for i in f["status"]["images"]} == {
        "evil/app:1": 50,
        "evil/app:2": 10,
    }
    assert len(f["status"]["pods"]) == 10  # the most recent ones, bounded


def test_a_cronjobs_runs_and_a_daemonsets_nodes_are_one_finding_each():
    d = Detector(Allowlist())
    for run, minutes in enumerate((29375040, 29375100, 29375160)):
        observe(
            d, image_event("Pulling", "ops", f"backup-{minutes}-x7k2p", "evil/backup:1", seq=run)
        )
    for n in range(12):
        observe(
            d,
            image_event(
                "Pulling", "ops", pod("agent", n), "evil/agent:1", node=f"node-{n}", seq=50 + n
            ),
        )
    by_workload = {f["spec"]["workload"]["name"]: f for f in d.findings()}
    assert by_workload["backup"]["spec"]["workload"]["kind"] == "CronJob"
    assert by_workload["backup"]["status"]["count"] == 3
    agent = by_workload["agent"]
    assert agent["status"]["count"] == 12 and agent["status"]["nodeCount"] == 12


def test_a_read_workload_wins_and_routing_stays_with_the_series():
    d = Detector(Allowlist())
    ev = image_event("Pulling", "ns", "db-2", "evil/db:1", count=2)
    (det,) = observe(
        d, ev, workload=Workload("Pod", "db-2", "read")
    )  # read: a bare pod, not a StatefulSet
    assert det.state.identity.workload == "db-2"
    (again,) = observe(d, with_count(ev, 3))  # later resolved by inference: still the same Finding
    assert again.state is det.state and again.delta == 1


def test_names_are_deterministic_and_distinct():
    def name(ns, pod, image="nginx", seq=0):
        return (
            Detector(Allowlist())
            .observe(decode_event(image_event("Pulling", ns, pod, image, seq=seq)))[0]
            .state.name
        )

    assert name("ns", "web-7d9f8b6c5d-x7k2p") == name(
        "ns", "web-6f7b9c8d45-zzzzz", "nginx:2", seq=5
    )
    assert name("ns", "web-7d9f8b6c5d-x7k2p") != name("ns2", "web-7d9f8b6c5d-x7k2p")
    assert name("ns", "web-7d9f8b6c5d-x7k2p") != name("ns", "api-7d9f8b6c5d-x7k2p")
    assert len(name("n" * 63, "p" * 63, "r" * 200 + "/x")) <= 253


# -- bounds
# ------------------------------------------------------------------------------------------


def test_caps_fold_detections_into_one_overflow_finding_per_rule_and_namespace_exactly():
    d = Detector(Allowlist(), caps=Caps(total=100, per_namespace=3))
    for i in range(10):
        observe(d, image_event("Pulling", "flood", f"job{i}", f"evil/img{i}:1", count=2, seq=i))
    observe(d, image_event("Pulling", "flood", "hunter", "aquasec/kube-hunter:1", seq=99))
    by_name = {f["metadata"]["name"]: f for f in d.findings()}
    suspicious = [f for f in by_name.values() if f["spec"]["rule"] == SUSPICIOUS_RULE.name]
    regular = [f for f in suspicious if not f["spec"].get("overflow")]
    (overflow,) = [f for f in suspicious if f["spec"].get("overflow")]
    assert len(regular) == 3 and sum(f["status"]["count"] for f in regular) == 6
    assert (
        overflow["status"]["count"] == 15
    )  # 7 folded workloads x 2, and kube-hunter's suspicious pull
    assert (
        overflow["status"]["folded"]["identities"] == 8
        and overflow["metadata"]["labels"]["pullwatch.dev/overflow"]
    )
    # the scanner rule has caps of its own: a flood of suspicious pulls never folds a scanner
    assert any(
        f["spec"]["rule"] == SCANNER_RULE.name and not f["spec"].get("overflow")
        for f in by_name.values()
    )


def test_folded_series_stay_in_the_overflow_finding_after_room_is_made():
    d = Detector(Allowlist(), caps=Caps(total=100, per_namespace=1))
    observe(d, image_event("Pulling", "ns", "a", "evil/a:1", seq=1))
    ev = image_event("Pulling", "ns", "b", "evil/b:1", seq=2)
    (folded,) = observe(d, ev)
    assert folded.state.identity.is_overflow and folded.folded.workload == "b"
    d.forget(
        next(n for n in d.states if not d.states[n].identity.is_overflow)
    )  # retention made room
    (again,) = observe(d, with_count(ev, 2))
    assert again.state is folded.state and again.delta == 1


def test_live_ledgers_are_bounded_and_the_count_stays_exact():
    d = Detector(Allowlist(), live_series=MAX_SERIES)
    for i in range(500):
        observe(d, image_event("Pulled", "ns", pod("web-7d9f8b6c5d", i), "nginx", seq=i))
    (state,) = d.states.values()
    assert len(state.evidence().ledger.series) <= MAX_SERIES and state.count == 500


@pytest.mark.parametrize("size", [1, 300, 1000])
def test_no_finding_outgrows_its_budget_whatever_the_input(size):
    d = Detector(Allowlist())
    for i in range(400):
        ev = image_event(
            "Pulling",
            "n" * 63,
            f"{'p' * (size % 200)}{i}",
            f"reg.example/{'a' * size}/img:{i}",
            node="w" * min(size, 253),
            container="c" * min(size, 253),
            seq=i,
            count=10**9,
        )
        ev["metadata"]["uid"] = f"{i:08d}" + "u" * 28
        observe(d, ev)
    for body in d.findings():
        assert len(json.dumps(body).encode()) <= BUDGET
        state = FindingState.from_body(json.loads(json.dumps(body)))
        assert state.count == body["status"]["count"]


def test_live_slots_close_by_when_pullwatch_saw_them_not_by_the_events_own_timestamps():
    """A week-old (or forged) lastTimestamp must not close a live series: its next update would
    then be counted in full again."""
    d = Detector(Allowlist(), live_series=MAX_SERIES)
    now = 29_400_000
    ev = image_event("Pulling", "ns", "p", "evil/x:1", count=1)  # stamped 2026-11-18
    observe(d, ev, minute=now)
    (state,) = d.states.values()
    assert state.evidence().ledger.close_before(now - 65) == 0
    assert [x.delta for x in observe(d, with_count(ev, 2), minute=now + 1)] == [1]
    assert (
        state.evidence().ledger.close_before(now + 200) == 1 and state.count == 2
    )  # closed: exact all the same


# -- idle Findings are kept packed -----------------------------------------------------------------


def _busy_finding(d):
    for i in range(30):  # pods, images, outcomes and series: every packed field has something in it
        observe(
            d,
            image_event("Pulling", "shop", pod("web-7d9f8b6c5d", i), f"evil/app:{i % 12}", seq=i),
            minute=100,
        )
        observe(
            d,
            image_event(
                "Present", "shop", pod("web-7d9f8b6c5d", i), f"evil/app:{i % 12}", seq=500 + i
            ),
            minute=100,
        )
    (state,) = [s for s in d.states.values() if s.count]
    return state


def test_a_cooled_finding_has_the_same_body_and_counts_on_exactly():
    d = Detector(Allowlist())
    state = _busy_finding(d)
    before, n = json.dumps(state.body(), sort_keys=True), state.count
    assert d.cool(idle_before=101) == 1 and state.cold
    assert json.dumps(state.body(), sort_keys=True) == before  # reading does not change it
    again = image_event("Pulling", "shop", pod("web-7d9f8b6c5d", 3), "evil/app:3", seq=3, count=2)
    assert [x.delta for x in observe(d, again, minute=102)] == [
        1
    ]  # the series' mark survived packing
    assert not state.cold and state.count == n + 1
    assert d.cool(idle_before=102) == 0  # pulled at minute 102: not idle yet


def test_a_finding_being_written_is_not_cooled():
    d = Detector(Allowlist())
    state = _busy_finding(d)
    assert d.cool(idle_before=101, busy={state.name}) == 0 and not state.cold


def test_an_adopted_finding_packed_at_once_is_the_one_stored():
    d = Detector(Allowlist())
    body = json.loads(json.dumps(_busy_finding(d).body()))
    d2 = Detector(Allowlist())
    adopted = d2.adopt(body)
    adopted.cool()
    assert adopted.cold and adopted.count == body["status"]["count"]
    assert adopted.body()["status"] == body["status"]
    ev = image_event("Pulling", "shop", pod("web-7d9f8b6c5d", 0), "evil/app:0", seq=0)
    assert [x.delta for x in observe(d2, ev)] == [0]  # a relist of what was counted adds nothing


def test_a_series_already_counted_needs_no_workload_read():
    """After a restart, the relist of a counted pull must not make the operator read its pod."""
    d = Detector(Allowlist())
    ev = image_event("Pulling", "shop", pod("web-7d9f8b6c5d", 1), "evil/app:1", count=2)
    assert not d.routed(decode_event(ev))
    observe(d, ev, workload=Workload("Deployment", "web", "read"))
    d2 = Detector(Allowlist())
    d2.adopt(json.loads(json.dumps(only(d))))
    assert d2.routed(decode_event(ev)) and d2.routed(decode_event(with_count(ev, 3)))
    other = image_event("Pulling", "shop", pod("web-7d9f8b6c5d", 2), "evil/app:1")
    assert not d2.routed(decode_event(other))  # a new pod: its workload is read
    assert not d2.routed(decode_event(image_event("Pulling", "shop", "p", "nginx:1", count=1)))
