"""The memory budget for live Event series (core/liveseries.py), on Findings a Detector built from
real pull Events: a namespace that floods with distinct Event names is cut, the others keep
every series, and no pull is lost from a count."""

from kubelet import image_event
from pullwatch.core.allowlist import Allowlist
from pullwatch.core.detector import Detector
from pullwatch.core.liveseries import trim_live_series
from pullwatch.core.pulls import decode_event


def flood(detector: Detector, namespace: str, workloads: int, per_workload: int) -> None:
    for w in range(workloads):
        for i in range(per_workload):
            ev = image_event("Pulling", namespace, f"app{w}-7d9f8b6c5d-{i:05d}", "evil/miner:1")
            detector.observe(decode_event(ev))


def live(detector: Detector, namespace: str) -> int:
    return sum(len(s.series_keys()) for s in detector.states.values() if s.namespace == namespace)


def counts(detector: Detector) -> dict[str, int]:
    return {s.name: s.count for s in detector.states.values()}


def test_the_flooding_namespace_is_cut_and_the_quiet_one_keeps_every_series():
    detector = Detector(Allowlist([]))
    flood(detector, "flood", workloads=4, per_workload=300)
    flood(detector, "quiet", workloads=2, per_workload=20)
    before = counts(detector)
    changed = trim_live_series(detector.states.values(), per_namespace=600, total=10_000)
    assert changed and {s.namespace for s in changed} == {"flood"}
    assert live(detector, "flood") <= 600 and live(detector, "quiet") == 40
    assert counts(detector) == before  # closed slots stay counted


def test_the_total_budget_cuts_the_largest_namespaces_first():
    detector = Detector(Allowlist([]))
    flood(detector, "big", workloads=2, per_workload=400)
    flood(detector, "mid", workloads=1, per_workload=200)
    flood(detector, "small", workloads=1, per_workload=50)
    trim_live_series(detector.states.values(), per_namespace=10_000, total=650)
    assert live(detector, "small") == 50 and live(detector, "mid") == 200
    assert live(detector, "big") <= 400  # 650 - 250: the big one alone paid


def test_within_budget_nothing_is_touched_and_cold_findings_stay_packed():
    detector = Detector(Allowlist([]))
    flood(detector, "a", workloads=3, per_workload=10)
    detector.cool(10**9)
    assert all(s.cold for s in detector.states.values())
    assert trim_live_series(detector.states.values(), per_namespace=100, total=100) == []
    assert all(s.cold for s in detector.states.values())
