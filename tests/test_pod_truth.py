"""What a tenant can do to the pure core with the rights it has, and why it no longer works:
crowding a namespace's cap with forged Events so a container that really ran is dropped; a
collision of the 40-bit Finding name that steers another namespace's detections into its own
Finding; a pod spec patched while the kubelet pulls; a forged pull Event that hides "ran with
no pull Event". Each test fails without its fix."""

from __future__ import annotations

import schemas
from pullwatch.core import body as body_module
from pullwatch.core import findings as findings_module
from pullwatch.core.allowlist import Allowlist, policy_from_object
from pullwatch.core.audit import AuditDeduper, audit_observations
from pullwatch.core.collect import Collector
from pullwatch.core.detector import Caps, Detector
from pullwatch.core.evidence import MISSING, SEEN
from pullwatch.core.findings import Identity
from pullwatch.core.observations import Intent
from pullwatch.core.pods import decode_pod
from pullwatch.core.pulls import Actor, decode_event
from pullwatch.core.workload import infer

NOW = 1_800_000_000.0
MINUTE = int(NOW) // 60
HUNTER_ID = "docker.io/aquasec/kube-hunter@sha256:" + "a" * 64
VALIDATOR = schemas.load_validators()[("pullwatch.dev/v1alpha1", "Finding")]
ALLOW_NGINX = Allowlist(
    [
        policy_from_object(
            {
                "apiVersion": "pullwatch.dev/v1alpha1",
                "kind": "AllowedImages",
                "metadata": {"name": "a"},
                "spec": {"images": ["docker.io/library/nginx:*"]},
            }
        )
    ]
)


def pull_event(ns: str, name: str, pod: str, image: str, container: str = "c") -> dict:
    return {
        "reason": "Pulling",
        "message": f'Pulling image "{image}"',
        "count": 1,
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {
            "kind": "Pod",
            "name": pod,
            "namespace": ns,
            "fieldPath": f"spec.containers{{{container}}}",
        },
    }


def pod(ns: str, name: str, spec_image: str, status_image: str | None = None, image_id=HUNTER_ID):
    status = {
        "name": "c",
        "containerID": "containerd://x" + name,
        "imageID": image_id,
        "state": {"running": {"startedAt": "2027-01-15T08:00:00Z"}},
    }
    if status_image is not None:
        status["image"] = status_image
    return {
        "metadata": {"name": name, "namespace": ns, "uid": "u-" + name},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": spec_image}]},
        "status": {"containerStatuses": [status]},
    }


def observe(d: Detector, obs):
    return d.observe(obs, None, minute=MINUTE, clock=NOW)


def runs_of(d: Detector, obj: dict) -> list:
    return [det for run in decode_pod(obj) for det in observe(d, run)]


def check(body: dict) -> None:
    assert schemas.problems(VALIDATOR, body) == [], schemas.problems(VALIDATOR, body)


def fill_scanner_cap(d: Detector, ns: str, n: int) -> None:
    for i in range(n):
        ev = pull_event(ns, f"forged-{i}", f"w{i}", "aquasec/kube-hunter")
        observe(d, decode_event(ev))
    assert d.capped("scanner", ns)


# -- 1. a detection past a cap is never dropped -------------------------------------------------
def test_a_container_run_past_the_cap_is_recorded_in_the_overflow_finding_and_said_unpulled():
    d = Detector(Allowlist(), caps=Caps(5000, 5, reserve=0))
    fill_scanner_cap(d, "ci", 5)
    dets = runs_of(d, pod("ci", "hunter", "aquasec/kube-hunter:0.6.8"))
    scanner = [x for x in dets if x.state.identity.rule == "scanner"]
    assert scanner and scanner[0].state.identity.is_overflow and scanner[0].running
    assert scanner[0].folded.workload == "hunter"
    overflow = scanner[0].state
    (entry,) = overflow.evidence().running.values()
    assert entry[0] == "hunter"
    # no pull Event for it (the kubelet's budget was used up): the evasion signal, counted
    settled = [x for x in d.settle(NOW + 3600) if x.state is overflow]
    assert settled and settled[0].missing
    body = overflow.body()
    assert body["status"]["ranWithoutPullEvent"] == 1
    assert body["status"]["running"]["sample"][0]["pod"] == "hunter"
    assert any("hunter" in f["what"] for f in body["status"]["folded"]["sample"])
    check(body)


def test_a_forged_pull_in_the_overflow_finding_does_not_cover_a_container_of_another_image():
    d = Detector(Allowlist(), caps=Caps(5000, 2, reserve=0))
    fill_scanner_cap(d, "ci", 2)
    # an Event naming the pod's container, of an allowlisted-looking image, counted in overflow
    observe(d, decode_event(pull_event("ci", "cover", "hunter", "aquasec/kube-hunter-x")))
    runs_of(d, pod("ci", "hunter", "aquasec/kube-hunter:0.6.8"))
    (settled,) = [x for x in d.settle(NOW + 3600) if x.state.identity.rule == "scanner"]
    assert settled.missing


def test_an_intent_past_the_cap_is_recorded_in_the_overflow_finding():
    d = Detector(Allowlist(), caps=Caps(5000, 3, reserve=0))
    fill_scanner_cap(d, "ci", 3)
    actor = Actor("mallory", ("devs",), ("10.0.0.1",), "kubectl")
    intent = Intent(
        "ci", "hunter", "c", "main", "aquasec/kube-hunter", infer("hunter"), actor,
        "2027-01-15T08:00:00Z", "audit-1",
    )  # fmt: skip
    dets = [x for x in observe(d, intent) if x.state.identity.rule == "scanner"]
    assert dets and dets[0].state.identity.is_overflow and dets[0].changed
    body = dets[0].state.body()
    assert body["status"]["intent"]["last"]["user"] == "mallory"
    check(body)


def test_what_the_pods_say_ran_has_its_own_budget_that_forged_events_cannot_fill():
    d = Detector(Allowlist(), caps=Caps(5000, 250))
    fill_scanner_cap(d, "ci", 250)
    dets = runs_of(d, pod("ci", "hunter", "aquasec/kube-hunter:0.6.8"))
    (scanner,) = [x for x in dets if x.state.identity.rule == "scanner"]
    assert scanner.created and not scanner.state.identity.is_overflow
    assert scanner.state.identity.workload == "hunter" and scanner.state.count == 0
    # the reserve is bounded: past it, the overflow Finding records them
    for i in range(40):
        runs_of(d, pod("ci", f"hunter-{i}", "aquasec/kube-hunter:0.6.8"))
    regular = [s for s in d.states.values() if s.identity.rule == "scanner"]
    assert sum(not s.identity.is_overflow for s in regular) == 250 + Caps(1, 1).reserve
    (overflow,) = [s for s in regular if s.identity.is_overflow]
    assert overflow.evidence().running_count == 41 - Caps(1, 1).reserve


# -- 2. a name is one identity's only -------------------------------------------------------------
def _force_collision(monkeypatch, a: Identity, b: Identity) -> str:
    real = findings_module.finding_name
    clash = real(*a)

    def fake(rule, namespace, workload, repository, salt=0):
        if salt == 0 and (rule, namespace, workload, repository) in (tuple(a), tuple(b)):
            return clash
        return real(rule, namespace, workload, repository, *([salt] if salt else []))

    monkeypatch.setattr(findings_module, "finding_name", fake)
    monkeypatch.setattr(body_module, "finding_name", fake, raising=False)
    return clash


def test_a_name_collision_between_namespaces_keeps_each_namespace_in_its_own_finding(monkeypatch):
    ra, rb = "docker.io/evil/a/kube-hunter", "docker.io/evil/b/kube-hunter"
    attacker = Identity("scanner", "attacker", "hunter", ra)
    prod = Identity("scanner", "prod", "hunter", rb)
    clash = _force_collision(monkeypatch, attacker, prod)
    assert attacker.name == prod.name == clash
    d = Detector(Allowlist(), caps=Caps(5000, 250))
    observe(d, decode_event(pull_event("attacker", "x1", "hunter", ra + ":1")))
    dets = observe(d, decode_event(pull_event("prod", "hunter.17f0", "hunter", rb + ":1")))
    (prod_det,) = [x for x in dets if x.state.identity.rule == "scanner"]
    assert prod_det.state.namespace == "prod" and prod_det.created and prod_det.delta == 1
    assert prod_det.state.name != clash and d.collisions >= 1
    prod_pod = pod("prod", "hunter", rb + ":1", image_id=rb + "@sha256:" + "a" * 64)
    ran = [x for x in runs_of(d, prod_pod) if x.state.identity.rule == "scanner"]
    assert [x.state.name for x in ran] == [prod_det.state.name]
    by_ns = {s.namespace: s for s in d.states.values() if s.identity.rule == "scanner"}
    assert by_ns["attacker"].count == 1 and by_ns["prod"].count == 1
    assert by_ns["attacker"].evidence().running == {}
    # written, adopted again (a restart) and found again under the same names
    bodies = [s.body() for s in by_ns.values()]
    for b in bodies:
        check(b)
    again = Detector(Allowlist(), caps=Caps(5000, 250))
    for b in bodies:
        again.adopt(b)
    dets = observe(again, decode_event(pull_event("prod", "hunter.2", "hunter", rb + ":1")))
    (x,) = [x for x in dets if x.state.identity.rule == "scanner"]
    assert x.state.name == prod_det.state.name and x.delta == 1 and x.state.count == 2
    # the attacker's Finding retired: prod's keeps its salted name
    again.forget(clash)
    dets = observe(again, decode_event(pull_event("prod", "hunter.3", "hunter", rb + ":1")))
    (x,) = [x for x in dets if x.state.identity.rule == "scanner"]
    assert x.state.name == prod_det.state.name and x.state.count == 3
    # scan names them the same way
    c = Collector(Detector(Allowlist()))
    c.add(decode_event(pull_event("attacker", "x1", "hunter", ra + ":1")))
    c.add(decode_event(pull_event("prod", "hunter.17f0", "hunter", rb + ":1")))
    names = {b["metadata"]["namespace"]: b["metadata"]["name"] for b in c.bodies()
             if b["metadata"]["name"].startswith("scanner-")}  # fmt: skip
    assert names == {"attacker": clash, "prod": prod_det.state.name}


def test_a_stored_finding_whose_name_another_identity_holds_is_not_merged_into_it(monkeypatch):
    ra, rb = "docker.io/evil/a/kube-hunter", "docker.io/evil/b/kube-hunter"
    attacker = Identity("scanner", "attacker", "hunter", ra)
    prod = Identity("scanner", "prod", "hunter", rb)
    _force_collision(monkeypatch, attacker, prod)
    d = Detector(Allowlist())
    observe(d, decode_event(pull_event("prod", "p1", "hunter", rb + ":1")))
    other = Detector(Allowlist())
    observe(other, decode_event(pull_event("attacker", "a1", "hunter", ra + ":1")))
    observe(other, decode_event(pull_event("attacker", "a2", "hunter", ra + ":1")))
    (hand_made,) = [s.body() for s in other.states.values() if s.identity.rule == "scanner"]
    try:
        d.adopt(hand_made)
        raise AssertionError("merged")
    except ValueError:
        pass
    (mine,) = [s for s in d.states.values() if s.identity.rule == "scanner"]
    assert mine.namespace == "prod" and mine.count == 1


def test_a_series_route_is_followed_only_within_its_namespace(monkeypatch):
    d = Detector(Allowlist())
    a = decode_event(pull_event("attacker", "same", "hunter", "aquasec/kube-hunter"))
    b = decode_event(pull_event("prod", "same", "hunter", "aquasec/kube-hunter"))
    # a 48-bit series hash collision: both series hash alike
    monkeypatch.setattr("pullwatch.core.detector.short_hash", lambda text, bits: 7)
    observe(d, a)
    (x,) = [x for x in observe(d, b) if x.state.identity.rule == "scanner"]
    assert x.state.namespace == "prod"


# -- 3. what the kubelet reports ran ---------------------------------------------------------------
def test_a_pod_spec_patched_while_the_kubelet_pulls_is_judged_by_what_ran():
    d = Detector(ALLOW_NGINX)
    obj = pod("ci", "hunter", "nginx:1.25", "docker.io/aquasec/kube-hunter:latest")
    dets = runs_of(d, obj)
    rules = sorted((x.state.identity.rule, x.state.identity.repository) for x in dets)
    assert rules == [
        ("scanner", "docker.io/aquasec/kube-hunter"),
        ("suspicious", "docker.io/aquasec/kube-hunter"),
    ]
    body = dets[0].state.body()
    (entry,) = body["status"]["running"]["sample"]
    assert entry["ranImage"] == "docker.io/aquasec/kube-hunter:latest"
    check(body)
    # scan judges the same pod the same way, into the same Findings
    c = Collector(Detector(ALLOW_NGINX))
    for run in decode_pod(obj):
        c.add(run)
    assert sorted(b["metadata"]["name"] for b in c.bodies()) == sorted(x.state.name for x in dets)


def test_an_image_id_reported_by_containerd_for_a_digest_is_handled():
    d = Detector(ALLOW_NGINX)
    # the pod named its image by digest: containerd reports status.image as the image id
    spec = "aquasec/kube-hunter@sha256:" + "a" * 64
    dets = runs_of(d, pod("ci", "hunter", spec, "sha256:" + "b" * 64))
    assert {x.state.identity.repository for x in dets} == {"docker.io/aquasec/kube-hunter"}
    for x in dets:
        (entry,) = x.state.evidence().running.values()
        assert entry[7] is None  # no mismatch: what ran is what the spec named
    # an innocent name, hunter by its imageID: a scanner
    dets = runs_of(d, pod("ci", "n", "nginx:1.25", "sha256:" + "b" * 64))
    assert "scanner" in {x.state.identity.rule for x in dets}


def test_what_ran_being_allowed_is_not_suspicious_and_a_matching_status_changes_nothing():
    d = Detector(ALLOW_NGINX)
    nginx_id = "docker.io/library/nginx@sha256:" + "c" * 64
    assert runs_of(d, pod("web", "w", "nginx:1.25", "docker.io/library/nginx:1.25", nginx_id)) == []
    assert runs_of(d, pod("web", "w2", "nginx:1.25", None, nginx_id)) == []


def test_an_audit_patch_that_changes_a_pods_image_is_an_intent():
    entry = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "auditID": "p1",
        "stage": "ResponseComplete",
        "verb": "patch",
        "user": {"username": "mallory", "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.0.9"],
        "objectRef": {"resource": "pods", "namespace": "ci", "name": "web", "apiVersion": "v1"},
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": "2027-01-15T08:00:00Z",
        "requestObject": {"spec": {"containers": [{"name": "c", "image": "aquasec/kube-hunter"}]}},
        "responseObject": {
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "ci"},
            "spec": {
                "containers": [
                    {"name": "c", "image": "aquasec/kube-hunter"},
                    {"name": "side", "image": "nginx:1.25"},
                ]
            },
        },
    }
    found = audit_observations(entry, AuditDeduper())
    intents = [o for o in found if isinstance(o, Intent)]
    assert [(i.container, i.image, i.actor.user) for i in intents] == [
        ("c", "aquasec/kube-hunter", "mallory")
    ]
    # a patch of labels writes no image: no intent
    quiet = {**entry, "auditID": "p2", "requestObject": {"metadata": {"labels": {"a": "b"}}}}
    assert [o for o in audit_observations(quiet, AuditDeduper()) if isinstance(o, Intent)] == []


# -- 4. a pull Event covers a container only if it names what ran ----------------------------------
def _run_with_pull(pull_image: str) -> str:
    d = Detector(Allowlist())
    observe(d, decode_event(pull_event("ci", "forged", "hunter", pull_image)))
    runs_of(d, pod("ci", "hunter", "registry.corp/tools/netcheck:1", None))  # hunter by imageID
    states = [s for s in d.states.values() if s.identity.rule == "scanner"]
    d.settle(NOW + 3600)
    (entry,) = states[0].evidence().running.values()
    return entry[5]


def test_a_pull_event_of_another_image_does_not_hide_a_run_without_pull_event():
    assert _run_with_pull("docker.io/library/nginx:1.25") == MISSING


def test_a_pull_event_of_the_image_that_ran_covers_it():
    assert _run_with_pull("registry.corp/tools/netcheck:1") == SEEN


def test_an_unlisted_spec_stays_suspicious_whatever_name_the_runtime_shows_for_its_content():
    # the node holds the same content under an allowed name too: the runtime may show that one
    d = Detector(ALLOW_NGINX)
    nginx_id = "docker.io/library/nginx@sha256:" + "c" * 64
    dets = runs_of(d, pod("web", "w", "evil/web:1", "docker.io/library/nginx:1.25", nginx_id))
    assert [(x.state.identity.rule, x.state.identity.repository) for x in dets] == [
        ("suspicious", "docker.io/evil/web")
    ]
