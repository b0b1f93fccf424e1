"""The core's side of the three witnesses: Events, Pods and the audit log checking each other.

Each test gives the detector observations as the witnesses' decoders make them and asserts what
the Finding then says - counts never inflated by a second witness, forgeries named, the person
who did it, what ran with no pull Event.
"""

import itertools

import pytest

from kubelet import audit_entries, image_event, with_count
from pullwatch.core.allowlist import Allowlist, policy_from_object
from pullwatch.core.audit import AuditDeduper, audit_observations
from pullwatch.core.detector import Caps, Detector
from pullwatch.core.ledger import MAX_SERIES, Ledger
from pullwatch.core.observations import MAIN, ActorChange, Authored, Intent, Running
from pullwatch.core.pulls import Actor, decode_event
from pullwatch.core.workload import Workload

HUNTER = "aquasec/kube-hunter:0.6.8"
DIGEST = "sha256:" + "ab" * 32
NOW = 1_795_003_200.0  # an hour after kubelet.EPOCH, the moment the test data's Events happened
ALICE = Actor("alice", ("devs",), ("10.1.2.3",), "kubectl/v1.32")


def running(pod="hunter", image=HUNTER, digest=DIGEST, ns="ci", at_startup=False, started=None):
    return Running(
        ns,
        pod,
        f"uid-{pod}",
        "hunter",
        MAIN,
        image,
        digest,
        "node-1",
        started or "2026-11-18T11:59:00Z",  # a minute before NOW
        Workload("Pod", pod, "read"),
        at_startup,
    )


def finding(d: Detector, rule: str, ns: str | None = None):
    found = [
        s
        for s in d.states.values()
        if s.identity.rule == rule and (ns is None or s.namespace == ns)
    ]
    assert len(found) == 1, [s.name for s in d.states.values()]
    return found[0].body()


def test_an_event_counts_in_its_own_namespace_and_a_claim_of_another_is_a_forgery():
    ev = image_event("Pulling", "attacker", "payments-api-7d9f8b6c5d-x7k2p", HUNTER)
    ev["involvedObject"]["namespace"] = "prod"  # events/v1-style Events may name any namespace
    d = Detector(Allowlist())
    dets = d.observe(decode_event(ev), clock=NOW)
    assert {det.state.namespace for det in dets} == {"attacker"}
    assert all(det.forged for det in dets)
    body = finding(d, "scanner")
    assert body["metadata"]["namespace"] == "attacker"
    assert body["spec"]["reportedBy"]["verified"] is False
    assert body["spec"]["reportedBy"]["claimedNamespace"] == "prod"
    assert body["status"]["reporters"]["forged"] == 1
    assert not [s for s in d.states.values() if s.namespace == "prod"]


def test_made_up_namespaces_grow_no_state():
    d = Detector(Allowlist(), caps=Caps(5000, 250))
    for i in range(300):
        ev = image_event("Pulling", "attacker", f"p{i}", "evil/x:1", seq=i)
        ev["involvedObject"]["namespace"] = f"made-up-{i}"
        d.observe(decode_event(ev), clock=NOW)
    assert set(d.by_namespace) == {"attacker"}
    assert {ns for _, ns in d.per_namespace} == {"attacker"}


def test_a_container_seen_running_is_evidence_never_a_pull():
    d = Detector(Allowlist())
    d.observe(decode_event(image_event("Pulling", "ci", "hunter", HUNTER, count=2)), clock=NOW)
    dets = d.observe(running(), clock=NOW)
    assert all(det.running for det in dets)
    body = finding(d, "scanner")
    assert body["status"]["count"] == 2  # the Pod witness never inflates the count
    assert body["status"]["running"]["containers"] == 1
    assert body["status"]["digests"] == [{"digest": DIGEST, "containers": 1}]
    assert body["status"]["witnesses"] == ["events", "pods"]
    assert body["status"]["outcomes"]["ran"] == "yes"
    d.settle(NOW + 120)
    assert finding(d, "scanner")["status"]["running"]["sample"][0]["pullEvent"] == "seen"
    assert d.observe(running(), clock=NOW) == [] or not any(
        det.running for det in d.observe(running(), clock=NOW)
    )  # seen again: nothing new


def test_a_container_that_ran_with_no_pull_event_is_said_so():
    d = Detector(Allowlist())
    d.observe(running(pod="sneaky"), clock=NOW)
    body = finding(d, "scanner")
    assert body["status"]["count"] == 0 and body["status"]["seenBy"] == "pods"
    assert body["status"]["running"]["sample"][0]["pullEvent"] == "pending"
    assert not d.settle(NOW + 59)  # the grace: its pull Event may still be on its way
    assert d.settle(NOW + 61) and "ranWithoutPullEvent" in finding(d, "scanner")["status"]
    assert finding(d, "scanner")["status"]["running"]["sample"][0]["pullEvent"] == "missing"


def test_inventory_at_start_up_tells_expired_events_from_missing_ones():
    d = Detector(Allowlist())
    d.observe(running(pod="old", at_startup=True, started="2026-11-18T00:00:00Z"), clock=NOW)
    sample = finding(d, "scanner")["status"]["running"]["sample"][0]
    assert sample["pullEvent"] == "expired" and sample["atStartup"] is True  # Events gone: TTL


def test_a_scanner_by_digest_whatever_its_name():
    d = Detector(Allowlist(), scanner_digests=[DIGEST])
    d.observe(running(image="registry.corp/tools/netcheck:1"), clock=NOW)
    body = finding(d, "scanner")
    assert body["spec"]["repository"] == "registry.corp/tools/netcheck"
    by_name = Detector(Allowlist()).observe(running(image="registry.corp/tools/netcheck:1"))
    assert [det.state.identity.rule for det in by_name] == ["suspicious"]  # no digest known


def test_an_allowlist_may_pin_a_digest():
    pin = policy_from_object(
        {
            "apiVersion": "pullwatch.dev/v1alpha1",
            "kind": "AllowedImages",
            "metadata": {"name": "pins"},
            "spec": {"images": [f"registry.corp/app@{DIGEST}"]},
        }
    )
    d = Detector(Allowlist([pin]), scanners=[])
    assert d.observe(running(image="registry.corp/app:1"), clock=NOW) == []  # that digest ran
    other = running(image="registry.corp/app:1", digest="sha256:" + "cd" * 32)
    assert [det.state.identity.rule for det in d.observe(other, clock=NOW)] == ["suspicious"]


def hunter_pod_created(time: str | None = "2026-11-18T10:00:00Z", audit_id="audit-1") -> Intent:
    """The audit log's create of pod ``hunter`` (a scanner image) by alice."""
    return Intent(
        "ci",
        "hunter",
        "hunter",
        MAIN,
        HUNTER,
        Workload("Pod", "hunter", "read"),
        ALICE,
        time,
        audit_id,
    )


def test_a_pod_created_with_a_scanner_is_recorded_before_any_pull():
    d = Detector(Allowlist())
    intent = hunter_pod_created()
    d.observe(intent, clock=NOW)
    body = finding(d, "scanner")
    assert body["status"]["count"] == 0 and body["status"]["intent"]["pods"] == 1
    assert body["status"]["intent"]["first"]["user"] == "alice"
    assert body["spec"]["actor"]["user"] == "alice" and body["status"]["seenBy"] == "audit"


def test_who_wrote_the_event_verifies_it_in_either_order():
    ev = image_event("Pulling", "ci", "hunter", HUNTER, node="node-1")
    name = ev["metadata"]["name"]
    kubelet = Actor("system:node:node-1", ("system:nodes",), ("10.0.0.1",), "kubelet")
    d = Detector(Allowlist())
    d.observe(decode_event(ev), clock=NOW)  # the Event watch first: not known yet
    assert "verified" not in finding(d, "scanner")["spec"]["reportedBy"]
    d.observe(Authored("ci", name, kubelet, "create", None))
    assert finding(d, "scanner")["spec"]["reportedBy"]["verified"] is True
    tenant = Actor("system:serviceaccount:ci:bot", (), ("10.0.9.9",), "curl")
    d2 = Detector(Allowlist())
    d2.observe(Authored("ci", name, tenant, "create", None))  # the audit entry first
    (det, _) = d2.observe(decode_event(ev), clock=NOW)
    assert det.forged
    body = finding(d2, "scanner")
    assert body["spec"]["reportedBy"] == {
        "component": "kubelet",
        "user": "system:serviceaccount:ci:bot",
        "kubelet": False,
        "verified": False,
    }
    assert body["status"]["forgedBy"] == "system:serviceaccount:ci:bot"


def test_the_person_who_changed_the_workload_is_in_the_finding_and_its_message():
    d = Detector(Allowlist(), scanners=[])
    d.observe(
        ActorChange(
            "web", "shop", "Deployment", ALICE, "create deployments", "2026-11-18T09:00:00Z"
        )
    )
    d.observe(
        decode_event(image_event("Pulling", "web", "shop-7d9f8b6c5d-x7k2p", "evil/x:1")), clock=NOW
    )
    spec = finding(d, "suspicious")["spec"]
    assert spec["actor"]["user"] == "alice" and spec["actor"]["action"] == "create deployments"
    assert spec["message"] == (
        "Suspicious image evil/x:1 pulled in Kubernetes from ip 10.1.2.3 by user alice"
    )
    bob = Actor("bob", (), ("10.1.2.4",), "kubectl")
    d.observe(ActorChange("web", "shop", "Deployment", bob, "patch deployments/scale", None))
    status = finding(d, "suspicious")["status"]
    assert [a["user"] for a in status["actors"]] == ["bob", "alice"]  # newest first
    assert finding(d, "suspicious")["spec"]["actor"]["user"] == "alice"  # the first stays


def test_only_events_known_says_node_and_workload_not_unknown():
    d = Detector(Allowlist(), scanners=[])
    d.observe(decode_event(image_event("Pulling", "web", "shop-7d9f8b6c5d-x7k2p", "evil/x:1")))
    assert finding(d, "suspicious")["spec"]["message"] == (
        "Suspicious image evil/x:1 pulled in Kubernetes on node worker-1 by Deployment/shop "
        "(actor unknown)"
    )


def test_a_future_event_time_is_clamped_and_the_operator_clock_is_what_retains():
    ev = image_event("Pulling", "ci", "hunter", HUNTER)
    ev["lastTimestamp"] = ev["firstTimestamp"] = "2099-01-01T00:00:00Z"
    d = Detector(Allowlist())
    (det, _) = d.observe(decode_event(ev), minute=int(NOW) // 60, clock=NOW)
    status = det.state.body()["status"]
    assert status["lastSeen"] == status["firstSeen"] == "2026-11-18T12:00:00Z"  # NOW
    assert det.state.last_observed == NOW and status["lastObserved"] == "2026-11-18T12:00:00Z"


def test_more_live_series_than_are_stored_are_still_counted_once_at_a_relist():
    d = Detector(Allowlist(), scanners=[], live_series=5000)
    suffixes = ["".join(p) for p in itertools.product("bcdfg", repeat=5)][:300]
    events = [
        image_event("Pulling", "web", f"web-7d9f8b6c5d-{x}", "evil/x:1", seq=i)
        for i, x in enumerate(suffixes)
    ]
    for ev in events:
        d.observe(decode_event(ev), minute=100)
    (state,) = d.states.values()
    assert state.count == 300
    for ev in events:  # a relist (410 Gone) delivers every live Event again
        d.observe(decode_event(ev), minute=101)
    assert state.count == 300
    stored = state.body()["status"]["ledger"]
    assert len(stored["series"]) <= MAX_SERIES and stored["folded"][0] == 300 - len(
        stored["series"]
    )
    d.adopt(state.body())  # its own write read back (a 409): folded pulls are not counted twice
    assert state.count == 300
    assert Ledger.decode(stored).count == 300  # a restart: the stored totals are exact


def test_a_version_1_ledger_is_re_keyed_when_its_event_is_seen_again():
    ev = image_event("Pulling", "ci", "hunter", HUNTER, count=3)
    old = Ledger()
    old.observe(ev["metadata"]["uid"], ("hunter", "hunter"), "pulling", 3, minute=100)
    v1 = old.encode()
    v1["v"] = 1
    v1["series"] = [s[:15] + s[16:] for s in v1["series"]]  # v1 had no verdict letter
    upgraded = Ledger.decode(v1)
    pull = decode_event(ev)
    assert (
        upgraded.observe(pull.series, ("hunter", "hunter"), "pulling", 3, 101, legacy_id=pull.uid)
        == 0
    )
    assert upgraded.count == 3 and upgraded.knows(pull.series)


def test_a_scanner_found_by_its_digest_had_its_tags_pull_event_all_the_same():
    """The kubelet's pull Event names the tag, not the digest: it lands in another Finding (or,
    allowlisted, in none) - the container found by its digest did have a pull Event."""
    allowed = policy_from_object(
        {
            "apiVersion": "pullwatch.dev/v1alpha1",
            "kind": "AllowedImages",
            "metadata": {"name": "tools"},
            "spec": {"images": ["registry.corp/tools/**"]},
        }
    )
    d = Detector(Allowlist([allowed]), scanner_digests=[DIGEST])
    ev = image_event(
        "Pulling", "ci", "hunter", "registry.corp/tools/netcheck:1", container="hunter"
    )
    assert d.observe(decode_event(ev), clock=NOW) == []  # allowed by name: no Finding of its own
    d.observe(running(image="registry.corp/tools/netcheck:1"), clock=NOW)
    d.settle(NOW + 3600)
    sample = finding(d, "scanner")["status"]["running"]["sample"][0]
    assert sample["pullEvent"] == "seen"


def test_a_finding_made_by_a_controllers_pod_create_learns_who_changed_its_workload():
    # The Deployment's creator is known first; its pod (created by the ReplicaSet controller:
    # no person) makes the Finding, which names the Deployment's creator at once.
    d = Detector(Allowlist())
    d.observe(ActorChange("web", "shop", "Deployment", ALICE, "create deployments", None))
    pod = "shop-7d9f8b6c5d-x7k2p"
    d.observe(
        Intent(
            "web",
            pod,
            "shop",
            MAIN,
            HUNTER,
            Workload("Deployment", "shop", "read"),
            None,
            "2026-11-18T10:00:00Z",
            "audit-2",
        ),
        clock=NOW,
    )
    assert finding(d, "scanner")["spec"]["actor"]["user"] == "alice"


def test_the_person_who_last_changed_the_workload_leads_and_a_new_create_forgets_the_old():
    """Who patched the image before the pull is named, not whoever first made the name; and a
    workload deleted and made again (a name reused, a namespace handed on) starts afresh."""
    d = Detector(Allowlist(), scanners=[])
    mallory = Actor("mallory", (), ("10.9.9.9",), "kubectl")
    carol = Actor("carol", (), ("10.7.7.7",), "kubectl")
    d.observe(ActorChange("web", "shop", "Deployment", ALICE, "create deployments", None))
    d.observe(ActorChange("web", "shop", "Deployment", mallory, "patch deployments", None))
    d.observe(
        decode_event(image_event("Pulling", "web", "shop-7d9f8b6c5d-x7k2p", "evil/x:1")), clock=NOW
    )
    found = finding(d, "suspicious")
    assert found["spec"]["actor"]["user"] == "mallory"
    assert [a["user"] for a in found["status"]["actors"]] == ["mallory", "alice"]
    d.observe(ActorChange("web", "api", "Deployment", ALICE, "create deployments", None))
    d.observe(ActorChange("web", "api", "Deployment", carol, "create deployments", None))
    assert [c.actor.user for c in d.actors.get("web", "api").recent] == ["carol"]


def test_the_address_the_api_server_saw_is_kept_not_the_clients_claims():
    from pullwatch.core.audit import actor_of

    forged = [f"192.0.2.{i}" for i in range(12)]
    actor = actor_of({"user": {"username": "bob"}, "sourceIPs": [*forged, "10.0.0.5"]})
    assert actor.source_ips[-1] == "10.0.0.5" and len(actor.source_ips) == 4
    d = Detector(Allowlist(), scanners=[])
    d.observe(ActorChange("web", "shop", "Deployment", actor, "create deployments", None))
    d.observe(
        decode_event(image_event("Pulling", "web", "shop-7d9f8b6c5d-x7k2p", "evil/x:1")), clock=NOW
    )
    assert finding(d, "suspicious")["spec"]["message"].endswith("from ip 10.0.0.5 by user bob")


# -- who wrote a pull Event: its create decides ------------------------------------------------
TENANT = "system:serviceaccount:ci:bot"


def kubelet_create(ev, level="RequestResponse"):
    """The audit entry of the kubelet's create of ``ev`` (Metadata level: no objects logged)."""
    (entry,) = audit_entries(ev, "create-1", node="node-1", stages=("ResponseComplete",))
    if level == "Metadata":
        del entry["requestObject"], entry["responseObject"]
    return entry


def tenant_patch(ev, audit_id="patch-1"):
    """A tenant's patch of ``ev`` (which it may send: patch on events in its namespace),
    logged with the Event as it is after the patch."""
    (entry,) = audit_entries(ev, audit_id, stages=("ResponseComplete",), verb="patch", code=200)
    entry["user"] = {"username": TENANT, "groups": ["system:serviceaccounts"]}
    entry["requestObject"] = {"source": ev["source"]}
    return entry


def feed(d, entry):
    return [det for obs in audit_observations(entry, AuditDeduper()) for det in d.observe(obs)]


@pytest.mark.parametrize("level", ["RequestResponse", "Metadata"])
def test_a_tenant_who_patches_source_host_first_cannot_make_a_kubelet_pull_look_forged(level):
    ev = image_event("Pulling", "ci", "hunter", HUNTER, node="node-1")
    patched = {**ev, "source": {**ev["source"], "host": "x"}}
    d = Detector(Allowlist())
    d.observe(decode_event(ev), clock=NOW)  # the Event watch sees the kubelet's Event
    dets = feed(d, tenant_patch(patched))  # then the tenant's patch, before the create's entry
    dets += d.observe(decode_event(patched), clock=NOW)  # the watch sees the patched Event
    dets += feed(d, kubelet_create(ev, level))  # the kubelet's create, judged on its own
    dets += d.observe(decode_event(patched), clock=NOW)  # and the watch again, after it
    body = finding(d, "scanner")
    assert not any(det.forged for det in dets)
    assert body["spec"]["reportedBy"]["verified"] is True
    assert body["spec"]["reportedBy"]["user"] == "system:node:node-1"
    assert "forgedBy" not in body["status"]
    assert body["status"]["count"] == 1


def test_a_later_patch_by_a_tenant_changes_neither_the_author_nor_the_verdict():
    ev = image_event("Pulling", "ci", "hunter", HUNTER, node="node-1")
    d = Detector(Allowlist())
    feed(d, kubelet_create(ev))  # the audit entry first this time
    dets = feed(d, tenant_patch(ev))  # a patch that changes nothing
    dets += d.observe(decode_event(with_count(ev, 2)), clock=NOW)  # the kubelet's repeat
    assert not any(det.forged for det in dets)
    body = finding(d, "scanner")
    assert body["spec"]["reportedBy"]["verified"] is True
    assert "forgedBy" not in body["status"]
    assert body["status"]["count"] == 2


def test_a_tenants_own_event_is_still_forged_whatever_it_patches_later():
    ev = image_event("Pulling", "ci", "hunter", HUNTER, node="node-1")
    (create,) = audit_entries(ev, "c", stages=("ResponseComplete",))
    create["user"] = {"username": TENANT, "groups": ["system:serviceaccounts"]}
    d = Detector(Allowlist())
    d.observe(decode_event(ev), clock=NOW)
    feed(d, tenant_patch(ev))
    dets = feed(d, create)
    assert any(det.forged == "author" for det in dets)
    assert finding(d, "scanner")["status"]["forgedBy"] == TENANT


def test_a_pull_event_with_a_generated_name_is_counted_once_and_said_forged():
    ev = image_event("Pulling", "ci", "hunter", HUNTER, node="node-1")
    (create,) = audit_entries(ev, "gen-1", stages=("ResponseComplete",))
    create["user"] = {"username": TENANT, "groups": ["system:serviceaccounts"]}
    # Request level: the API server logs the request before the name is generated
    del create["objectRef"]["name"], create["responseObject"]
    meta = create["requestObject"]["metadata"]
    meta.pop("name", None)
    meta["generateName"] = "hunter."
    d = Detector(Allowlist())
    dets = feed(d, create)
    assert dets and all(det.forged == "generated-name" and det.delta == 0 for det in dets)
    body = finding(d, "scanner")
    assert body["status"]["count"] == 0 and body["spec"]["reportedBy"]["verified"] is False
    assert body["status"]["forgedBy"] == TENANT
    named = {**ev, "metadata": {**ev["metadata"], "name": "hunter.x7k2p"}}
    dets = d.observe(decode_event(named), clock=NOW)  # the watch: the same Event, named
    assert dets and all(det.delta == 1 for det in dets)
    assert finding(d, "scanner")["status"]["count"] == 1


@pytest.mark.parametrize("event_watch_first", [True, False])
def test_a_finding_begun_by_a_pod_create_says_its_verified_kubelet_in_either_order(
    event_watch_first,
):
    """A Finding the audit log began (a pod created with a scanner) and whose pull came through
    the audit log before the Event watch: its status counted a verified pull, but its spec never
    named the reporter (a clean-clone e2e run saw it), as it does in the other order."""
    ev = image_event("Pulling", "ci", "hunter", HUNTER, node="node-1")
    entry = kubelet_create(ev)
    d = Detector(Allowlist())
    d.observe(hunter_pod_created(None, "i-1"), clock=NOW)
    witnesses = [lambda: d.observe(decode_event(ev), clock=NOW), lambda: feed(d, entry)]
    changed = [
        any(det.changed for det in see()) for see in witnesses[:: 1 if event_watch_first else -1]
    ]
    body = finding(d, "scanner")
    assert body["status"]["reporters"]["verified"] == 1 and body["status"]["count"] == 1
    reported = body["spec"]["reportedBy"]
    assert reported["verified"] is True and reported["user"] == "system:node:node-1", reported
    assert reported["component"] == "kubelet" and reported["kubelet"] is True, reported
    # the audit entry after the Event adds no pull, but the verdict: it must be written
    assert changed[0] and (changed[1] or not event_watch_first), changed
