"""Both rules and exact counting."""

from kubelet import image_event, with_count
from pullwatch.core.allowlist import Allowlist, policy_from_object
from pullwatch.core.detector import Detector
from pullwatch.core.pulls import decode_event
from pullwatch.core.rules import SCANNER_RULE, SUSPICIOUS_RULE


def allow(*images, namespaces=None):
    spec = {"images": list(images)}
    if namespaces:
        spec["namespaces"] = namespaces
    return Allowlist([policy_from_object({"apiVersion": "pullwatch.dev/v1alpha1", "kind": "AllowedImages",
                                          "metadata": {"name": "t"}, "spec": spec})])


def rules_fired(detector, ev):
    return sorted(d.state.spec["rule"] for d in detector.observe(decode_event(ev)))


def test_rule_scores_and_identity():
    assert (SCANNER_RULE.risk_score, SCANNER_RULE.severity, SCANNER_RULE.id) == (
        81, "high", "4890cd6b-0112-4974-a272-c5c153aee551")
    assert (SUSPICIOUS_RULE.risk_score, SUSPICIOUS_RULE.severity, SUSPICIOUS_RULE.id) == (
        49, "medium", "4d3a17b3-0a6d-4ae0-9421-46623a69c122")
    assert SCANNER_RULE.mitre.technique_id == SUSPICIOUS_RULE.mitre.technique_id == "T1526"


def test_scanner_fires_from_any_registry_and_even_when_allowlisted():
    d = Detector(allow("docker.io/**", "registry.example.net:5000/**", "quay.io/**"))
    for image in ("aquasec/kube-hunter", "registry.example.net:5000/mirrors/aquasec/kube-hunter:v0.6.7",
                  "quay.io/someone/kube-bench@sha256:" + "a" * 64, "kube-recon", "bishopfox/peirates:1"):
        assert rules_fired(d, image_event("Pulling", "ns", "p", image)) == [SCANNER_RULE.name], image


def test_scanner_names_match_the_last_component_only():
    d = Detector(allow("**", "quay.io/**"))
    for image in ("kube-hunter-dashboard", "mykube-hunter", "quay.io/kube-hunter/web:1", "kube-bench-exporter"):
        assert rules_fired(d, image_event("Pulling", "ns", "p", image)) == [], image


def test_scanner_list_is_configurable():
    d = Detector(allow("docker.io/**"), scanners={"nmap"})
    assert rules_fired(d, image_event("Pulling", "ns", "p", "instrumentisto/nmap")) == [SCANNER_RULE.name]
    # kube-hunter is not in this custom list, and the image is allowlisted: nothing fires
    assert rules_fired(d, image_event("Pulling", "ns", "p", "aquasec/kube-hunter")) == []


def test_suspicious_fires_for_unlisted_and_not_for_allowed():
    d = Detector(allow("nginx:1.25.*", namespaces=["team-a-*"]))
    assert rules_fired(d, image_event("Pulling", "team-a-x", "p", "nginx:1.25.3")) == []
    assert rules_fired(d, image_event("Pulling", "team-b", "p", "nginx:1.25.3")) == [SUSPICIOUS_RULE.name]
    (det,) = d.observe(decode_event(image_event("Pulling", "team-a-x", "q", "nginx:1.26")))
    assert "no AllowedImages pattern for namespace team-a-x" in det.state.spec["notAllowedReason"]


def test_invalid_image_is_suspicious_and_says_why():
    ev = image_event("Pulling", "ns", "p", "x")
    ev["message"] = 'Pulling image "Evil/Image"'
    (det,) = Detector(allow("**")).observe(decode_event(ev))
    assert det.state.spec["normalizedImage"] is None
    assert "not a valid image reference" in det.state.spec["notAllowedReason"]


def test_series_adds_only_the_difference():
    d = Detector(Allowlist())
    ev = image_event("Pulling", "ns", "p", "nginx", count=2)
    assert [x.delta for x in d.observe(decode_event(ev))] == [2]
    assert [x.delta for x in d.observe(decode_event(with_count(ev, 5)))] == [3]
    assert [x.delta for x in d.observe(decode_event(with_count(ev, 5)))] == [0]
    assert [x.delta for x in d.observe(decode_event(with_count(ev, 4)))] == [0]  # stale replay
    assert d.findings()[0]["status"]["count"] == 5


def test_pulling_and_its_successfully_pulled_are_one_pull():
    d = Detector(Allowlist())
    d.observe(decode_event(image_event("Pulling", "ns", "p", "nginx", count=3, seq=1)))
    for seq in (2, 3, 4):  # kubelet writes a distinct Successfully-pulled Event per pull
        d.observe(decode_event(image_event("Pulled", "ns", "p", "nginx", seq=seq)))
    assert d.findings()[0]["status"]["count"] == 3


def test_successfully_pulled_without_its_pulling_still_counts():
    d = Detector(Allowlist())
    for seq in (2, 3):
        d.observe(decode_event(image_event("Pulled", "ns", "p", "nginx", seq=seq)))
    assert d.findings()[0]["status"]["count"] == 2


def test_already_present_counts_on_top():
    d = Detector(Allowlist())
    d.observe(decode_event(image_event("Pulling", "ns", "p", "nginx", seq=1)))
    d.observe(decode_event(image_event("Pulled", "ns", "p", "nginx", seq=2)))
    d.observe(decode_event(image_event("Present", "ns", "p", "nginx", seq=3, count=2)))
    assert d.findings()[0]["status"]["count"] == 3


def test_two_containers_with_the_same_image_are_counted_separately_in_one_finding():
    d = Detector(Allowlist())
    d.observe(decode_event(image_event("Pulling", "ns", "p", "nginx", container="a", seq=1)))
    d.observe(decode_event(image_event("Pulling", "ns", "p", "nginx", container="b", seq=2)))
    d.observe(decode_event(image_event("Pulled", "ns", "p", "nginx", container="a", seq=3)))
    (f,) = d.findings()
    assert f["status"]["count"] == 2 and set(f["status"]["tallies"]) == {"a", "b"}


def test_spellings_of_one_image_are_one_finding():
    d = Detector(Allowlist())
    d.observe(decode_event(image_event("Pulling", "ns", "p", "nginx", seq=1)))
    d.observe(decode_event(image_event("Pulling", "ns", "p", "docker.io/library/nginx:latest", seq=2)))
    (f,) = d.findings()
    assert f["status"]["count"] == 2 and f["spec"]["image"] == "nginx"


def test_seed_from_a_finding_then_relist_adds_nothing():
    d1 = Detector(Allowlist())
    ev = image_event("Pulling", "ns", "p", "nginx", count=3)
    d1.observe(decode_event(ev))
    body = d1.findings()[0]
    d2 = Detector(Allowlist())  # a restarted operator
    assert d2.seed(body) is not None
    assert [x.delta for x in d2.observe(decode_event(ev))] == [0]
    assert [x.delta for x in d2.observe(decode_event(with_count(ev, 4)))] == [1]
    assert d2.findings()[0]["status"]["count"] == 4


def test_seed_rejects_garbage():
    assert Detector(Allowlist()).seed({"metadata": {}}) is None
    assert Detector(Allowlist()).seed({"metadata": {"name": "x", "namespace": "y"}, "spec": {},
                                       "status": {"series": [{"id": "a"}]}}) is None


def test_series_memory_is_bounded():
    d = Detector(Allowlist(), max_series=4)
    for seq in range(50):
        d.observe(decode_event(image_event("Pulled", "ns", "p", "nginx", seq=seq)))
    (f,) = d.findings()
    assert len(f["status"]["series"]) == 4 and f["status"]["count"] == 50


def test_finding_body_is_complete():
    d = Detector(Allowlist())
    ev = image_event("Pulling", "team-a", "hunter-1", "aquasec/kube-hunter:0.6.8", node="worker-7", container="h")
    d.observe(decode_event(ev))
    by_rule = {f["spec"]["rule"]: f for f in d.findings()}
    f = by_rule[SCANNER_RULE.name]
    assert f["apiVersion"] == "pullwatch.dev/v1alpha1" and f["kind"] == "Finding"
    assert f["metadata"]["namespace"] == "team-a"
    assert f["metadata"]["name"].startswith("scanner-kube-hunter-hunter-1-")
    s = f["spec"]
    assert (s["riskScore"], s["impact"], s["confidence"], s["severity"]) == (81, 90, 90, "high")
    assert s["mitre"] == {"techniqueId": "T1526", "technique": "Cloud Service Discovery", "tactic": "Discovery"}
    assert s["message"] == "Kubernetes Scanner image pulled on host worker-7"
    assert s["image"] == "aquasec/kube-hunter:0.6.8"
    assert s["normalizedImage"] == "docker.io/aquasec/kube-hunter:0.6.8"
    assert s["involvedObject"]["container"] == "h" and s["node"] == "worker-7"
    assert (s["reason"], s["source"]) == ("Pulling", "events")
    assert f["status"]["count"] == 1 and f["status"]["firstSeen"] == ev["firstTimestamp"]
    sus = by_rule[SUSPICIOUS_RULE.name]["spec"]
    assert sus["message"] == ("Suspicious image aquasec/kube-hunter:0.6.8 pulled in Kubernetes "
                              "from ip unknown by user unknown")


def test_names_are_deterministic_and_distinct():
    a = Detector(Allowlist()).observe(decode_event(image_event("Pulling", "ns", "p", "nginx")))[0].state.name
    b = Detector(Allowlist()).observe(decode_event(image_event("Pulling", "ns", "p", "nginx", seq=9)))[0].state.name
    c = Detector(Allowlist()).observe(decode_event(image_event("Pulling", "ns2", "p", "nginx")))[0].state.name
    assert a == b != c and len(a) <= 253


def test_merge_takes_the_higher_high_water_mark_per_series():
    ev_a = image_event("Pulling", "ns", "p", "nginx", count=3, seq=1)
    ev_b = image_event("Pulled", "ns", "p", "nginx", count=1, seq=2)
    here, there = Detector(Allowlist()), Detector(Allowlist())
    here.observe(decode_event(ev_a))                        # this process saw a at 3
    there.observe(decode_event(with_count(ev_a, 2)))        # the stored copy saw a at 2 and b
    there.observe(decode_event(ev_b))
    (state,) = here.states.values()
    here.merge(there.findings()[0])
    assert state.count == 3 and {s[2] for s in state.series.values()} == {3, 1}
    here.merge(there.findings()[0])                          # merging again changes nothing
    assert state.count == 3


def test_merge_keeps_retired_tallies_of_evicted_series():
    d = Detector(Allowlist(), max_series=2)
    for seq in range(5):
        d.observe(decode_event(image_event("Present", "ns", "p", "nginx", seq=seq)))
    body = d.findings()[0]
    assert body["status"]["retired"] == {"p": {"pulling": 0, "pulled": 0, "present": 3}}
    fresh = Detector(Allowlist(), max_series=2)
    assert fresh.merge(body).count == 5
