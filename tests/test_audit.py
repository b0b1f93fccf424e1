"""Audit logs: creates of events only, one auditID once, the actor carried into the Finding."""

from kubelet import as_events_v1, audit_entries, image_event
from pullwatch.core.allowlist import Allowlist
from pullwatch.core.audit import AuditDeduper, decode_audit_entry
from pullwatch.core.detector import Detector

EV = image_event("Pulling", "default", "hunter", "aquasec/kube-hunter:0.6.8", node="worker-2")


def test_create_of_an_event_is_a_pull_with_its_actor():
    (_received, complete) = audit_entries(EV, "id-1", node="worker-2", ip="10.0.3.7")
    pull = decode_audit_entry(complete, AuditDeduper())
    assert pull.source == "audit" and pull.image == "aquasec/kube-hunter:0.6.8"
    assert pull.actor.user == "system:node:worker-2"
    assert pull.actor.groups == ("system:nodes", "system:authenticated")
    assert pull.actor.source_ips == ("10.0.3.7",)
    assert pull.actor.user_agent.startswith("kubelet/")
    assert pull.series == EV["metadata"]["uid"]  # from the responseObject


def test_one_audit_id_at_several_stages_is_one_request():
    dedupe = AuditDeduper()
    pulls = [decode_audit_entry(e, dedupe) for e in audit_entries(EV, "id-1")]
    assert sum(p is not None for p in pulls) == 1
    # a second request (another auditID) is another pull
    assert decode_audit_entry(audit_entries(EV, "id-2")[0], dedupe) is not None


def test_events_k8s_io_create():
    entry = audit_entries(as_events_v1(EV), "id-3", stages=("ResponseComplete",))[0]
    entry["objectRef"]["apiGroup"] = "events.k8s.io"
    assert decode_audit_entry(entry, AuditDeduper()).image == "aquasec/kube-hunter:0.6.8"


def test_other_resources_verbs_and_failures_never_fire():
    dedupe = AuditDeduper()
    pod = {**EV, "kind": "Pod"}
    assert decode_audit_entry(audit_entries(pod, "p", resource="pods")[1], dedupe) is None
    assert decode_audit_entry(audit_entries(EV, "q", verb="patch")[1], dedupe) is None
    assert decode_audit_entry(audit_entries(EV, "r", verb="update")[1], dedupe) is None
    assert decode_audit_entry(audit_entries(EV, "s", code=403)[1], dedupe) is None
    sub = audit_entries(EV, "t")[1]
    sub["objectRef"]["subresource"] = "status"
    assert decode_audit_entry(sub, dedupe) is None
    meta_only = audit_entries(EV, "u")[1]
    meta_only.pop("requestObject")
    assert decode_audit_entry(meta_only, dedupe) is None


def test_finding_names_the_actor_in_its_message():
    entry = audit_entries(
        image_event("Pulling", "team-a", "m", "randomuser/xmrig"),
        "id-9",
        ip="10.0.9.9",
        node="worker-5",
    )[1]
    d = Detector(Allowlist())
    (det,) = d.observe(decode_audit_entry(entry, AuditDeduper()))
    spec = det.state.body()["spec"]
    assert spec["message"] == (
        "Suspicious image randomuser/xmrig pulled in Kubernetes from ip 10.0.9.9 "
        "by user system:node:worker-5"
    )
    assert spec["actor"] == {
        "user": "system:node:worker-5",
        "groups": ["system:nodes", "system:authenticated"],
        "sourceIPs": ["10.0.9.9"],
        "userAgent": entry["userAgent"],
    }
    assert spec["source"] == "audit"


def test_deduper_is_bounded():
    d = AuditDeduper(capacity=3)
    for i in range(10):
        assert d.first_time(str(i))
    assert len(d._seen) == 3
