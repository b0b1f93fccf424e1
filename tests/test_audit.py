"""Audit entries: who wrote each Event, who meant which image to run, who changed a workload.

Entries are built as the API server writes them (k8s.io/apiserver/pkg/audit): objectRef from
the request's URL (a create's name from its object), requestObject/responseObject by level,
RequestReceived logged before the handler ran (no objects, no responseStatus).
"""

import json

import pytest

from kubelet import as_events_v1, audit_entries, image_event, with_count
from pullwatch.core import audit
from pullwatch.core.allowlist import Allowlist
from pullwatch.core.audit import AuditDeduper, audit_observations, decode_audit_entry
from pullwatch.core.detector import Detector
from pullwatch.core.observations import EPHEMERAL, INIT, MAIN, ActorChange, Authored, Intent
from pullwatch.core.pulls import DecodeError, Pull
from pullwatch.core.workload import Workload

EV = image_event("Pulling", "default", "hunter", "aquasec/kube-hunter:0.6.8", node="worker-2")
T = "2026-11-18T11:06:40.000000Z"
CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"


def entry(
    verb,
    resource,
    name=None,
    *,
    namespace="shop",
    group=None,
    sub=None,
    user="alice",
    groups=("dev", "system:authenticated"),
    request=None,
    response=None,
    code=None,
    stage="ResponseComplete",
    audit_id="id-1",
    level="RequestResponse",
):
    ref = {"resource": resource, "namespace": namespace, "apiVersion": "v1"}
    if name:
        ref["name"] = name
    if group:
        ref["apiGroup"] = group
    if sub:
        ref["subresource"] = sub
    out = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": level,
        "auditID": audit_id,
        "stage": stage,
        "verb": verb,
        "user": {"username": user, "groups": list(groups)},
        "sourceIPs": ["10.0.9.9"],
        "userAgent": "kubectl/v1.29.4 (linux/amd64)",
        "objectRef": ref,
        "requestReceivedTimestamp": T,
        "stageTimestamp": T,
    }
    if stage != "RequestReceived":
        out["responseStatus"] = {"metadata": {}, "code": code or (201 if verb == "create" else 200)}
    if request is not None:
        out["requestObject"] = request
    if response is not None:
        out["responseObject"] = response
    return out


def pod_obj(
    name="hunter",
    *,
    containers=(("hunter", "aquasec/kube-hunter:0.6.8"),),
    init=(),
    owners=None,
    labels=None,
    generate=None,
):
    meta = {"namespace": "shop"}
    if name:
        meta["name"] = name
    if generate:
        meta["generateName"] = generate
    if owners:
        meta["ownerReferences"] = owners
    if labels:
        meta["labels"] = labels
    spec = {"containers": [{"name": n, "image": i} for n, i in containers]}
    if init:
        spec["initContainers"] = [{"name": n, "image": i} for n, i in init]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def observe(e):
    return audit_observations(e, AuditDeduper())


# -- Events: pulls and their authors ----------------------------------------------------------


def test_create_of_an_event_is_a_pull_with_its_actor():
    (_received, complete) = audit_entries(EV, "id-1", node="worker-2", ip="10.0.3.7")
    pull = decode_audit_entry(complete, AuditDeduper())
    assert pull.source == "audit" and pull.image == "aquasec/kube-hunter:0.6.8"
    assert pull.actor.user == "system:node:worker-2"
    assert pull.actor.groups == ("system:nodes", "system:authenticated")
    assert pull.actor.source_ips == ("10.0.3.7",)
    assert pull.actor.user_agent.startswith("kubelet/")
    # the series the Event watch names too (namespace/name), so the two count once
    assert pull.series == f"default/{EV['metadata']['name']}" and pull.namespace == "default"


def test_create_is_a_pull_and_an_authored():
    pull, authored = observe(audit_entries(EV, "id-1", node="worker-2")[1])
    assert isinstance(pull, Pull)
    assert authored == Authored(
        "default",
        EV["metadata"]["name"],
        pull.actor,
        "create",
        EV["firstTimestamp"].replace("Z", ".000000Z"),
        "worker-2",  # the node the created Event names: what its author is judged against
    )


def test_one_audit_id_at_several_stages_is_one_request():
    dedupe = AuditDeduper()
    pulls = [decode_audit_entry(e, dedupe) for e in audit_entries(EV, "id-1")]
    assert sum(p is not None for p in pulls) == 1
    # a second request (another auditID) is another pull
    assert decode_audit_entry(audit_entries(EV, "id-2")[0], dedupe) is not None


def test_received_stage_without_objects_is_not_counted_and_does_not_hide_the_response():
    received, complete = audit_entries(EV, "id-1")
    received.pop("requestObject")  # as the API server logs it: before the handler ran
    dedupe = AuditDeduper()
    assert audit_observations(received, dedupe) == []
    assert len(audit_observations(complete, dedupe)) == 2
    assert audit_observations(complete, dedupe) == []  # the same stage logged twice


def test_events_k8s_io_create():
    e = audit_entries(as_events_v1(EV), "id-3", stages=("ResponseComplete",))[0]
    e["objectRef"]["apiGroup"] = "events.k8s.io"
    assert decode_audit_entry(e, AuditDeduper()).image == "aquasec/kube-hunter:0.6.8"


def test_patch_whose_response_is_the_whole_event_is_the_series_count():
    """The kubelet's recorder patches the Event's count on every repeat."""
    create = audit_entries(EV, "c", stages=("ResponseComplete",))[0]
    patch = audit_entries(with_count(EV, 4), "p", stages=("ResponseComplete",), verb="patch")[0]
    patch["requestObject"] = {"count": 4, "lastTimestamp": "2026-11-18T11:08:40Z"}
    dedupe = AuditDeduper()
    first, second = decode_audit_entry(create, dedupe), decode_audit_entry(patch, dedupe)
    assert first.series == second.series and (first.count, second.count) == (1, 4)


def test_patch_at_request_level_says_who_wrote_but_is_no_pull():
    patch = audit_entries(with_count(EV, 4), "p", stages=("ResponseComplete",), verb="patch")[0]
    patch["requestObject"] = {"count": 4}
    patch.pop("responseObject")
    (authored,) = observe(patch)
    assert authored.verb == "patch" and authored.name == EV["metadata"]["name"]
    assert decode_audit_entry(patch, AuditDeduper()) is None


def test_metadata_level_create_names_the_author():
    e = audit_entries(EV, "m", stages=("ResponseComplete",))[0]
    e.pop("requestObject"), e.pop("responseObject")
    (authored,) = observe(e)
    assert authored.actor.user == "system:node:worker-1" and authored.verb == "create"


def test_a_tenant_writing_a_kubelet_event_is_its_author():
    forged = audit_entries(EV, "f", stages=("ResponseComplete",))[0]
    forged["user"] = {
        "username": "system:serviceaccount:attacker:ci",
        "groups": ["system:serviceaccounts"],
    }
    pull, authored = observe(forged)
    assert pull.actor.user == authored.actor.user == "system:serviceaccount:attacker:ci"
    assert pull.component == "kubelet"  # the Event's own claim, which the author contradicts


def test_other_resources_verbs_and_failures_never_fire():
    dedupe = AuditDeduper()
    pod = {**EV, "kind": "Pod"}
    assert decode_audit_entry(audit_entries(pod, "p", resource="pods")[1], dedupe) is None
    assert decode_audit_entry(audit_entries(EV, "s", code=403)[1], dedupe) is None
    assert observe(audit_entries(EV, "s2", code=409)[1]) == []
    sub = audit_entries(EV, "t")[1]
    sub["objectRef"]["subresource"] = "status"
    assert observe(sub) == []
    panic = audit_entries(EV, "u")[1]
    panic["stage"] = "Panic"
    assert observe(panic) == []
    deleted = audit_entries(EV, "v", verb="delete")[1]
    assert observe(deleted) == []
    crd = audit_entries(EV, "w")[1]
    crd["objectRef"]["apiGroup"] = "forge.example.com"  # a custom resource named "events"
    assert observe(crd) == []


def test_the_author_of_a_pull_event_is_its_reporter_and_is_verified():
    """The audit entry of an Event's create names who wrote it: the kubelet of the node the
    Event names is verified; anyone else forged. Neither is the workload's actor (a person)."""
    d = Detector(Allowlist())
    kubelets = audit_entries(
        image_event("Pulling", "team-a", "m", "randomuser/xmrig", node="worker-5"),
        "id-9",
        ip="10.0.9.9",
        node="worker-5",
    )[1]
    (det,) = d.observe(decode_audit_entry(kubelets, AuditDeduper()))
    spec = det.state.body()["spec"]
    assert spec["reportedBy"] == {
        "component": "kubelet",
        "user": "system:node:worker-5",
        "kubelet": True,
        "verified": True,
    }
    assert "actor" not in spec and spec["source"] == "audit"
    assert spec["message"] == (
        "Suspicious image randomuser/xmrig pulled in Kubernetes on node worker-5 by Pod/m "
        "(actor unknown)"
    )
    forged = audit_entries(
        image_event("Pulling", "team-a", "n", "randomuser/xmrig", node="worker-5"),
        "id-10",
        node="worker-6",  # another node's kubelet wrote it: not the one it names
    )[1]
    (det,) = d.observe(decode_audit_entry(forged, AuditDeduper()))
    assert det.forged and det.state.body()["spec"]["reportedBy"]["verified"] is False
    assert det.state.body()["status"]["forgedBy"] == "system:node:worker-6"


# -- pods: intent ------------------------------------------------------------------------------


def test_pod_created_by_a_person_is_an_intent_per_container_and_an_actor_change():
    p = pod_obj(
        init=(("setup", "busybox"),),
        containers=(("hunter", "aquasec/kube-hunter"), ("side", "nginx")),
    )
    found = observe(entry("create", "pods", "hunter", request=p, response=p))
    intents = [o for o in found if isinstance(o, Intent)]
    assert [(i.container, i.container_type, i.image) for i in intents] == [
        ("setup", INIT, "busybox"),
        ("hunter", MAIN, "aquasec/kube-hunter"),
        ("side", MAIN, "nginx"),
    ]
    assert all(
        i.actor.user == "alice" and i.pod == "hunter" and i.audit_id == "id-1" for i in intents
    )
    assert intents[0].workload == Workload("Pod", "hunter", "read")
    (change,) = [o for o in found if isinstance(o, ActorChange)]
    assert (change.workload, change.kind, change.action) == ("hunter", "Pod", "create pods")


def test_pod_created_by_a_controller_is_an_intent_without_an_actor():
    owners = [{"kind": "ReplicaSet", "name": "web-7d9f8b6c5d", "controller": True}]
    p = pod_obj("web-7d9f8b6c5d-x7k2p", owners=owners, labels={"pod-template-hash": "7d9f8b6c5d"})
    found = observe(
        entry(
            "create",
            "pods",
            "web-7d9f8b6c5d-x7k2p",
            user=CONTROLLER,
            groups=("system:serviceaccounts",),
            request=p,
            response=p,
        )
    )
    (intent,) = found  # no ActorChange: the person is whoever changed the Deployment
    assert intent.actor is None and intent.workload == Workload("Deployment", "web", "inferred")


def test_generated_name_at_request_level_names_the_workload_as_scan_infers_it():
    p = pod_obj(None, generate="hunter-")
    (intent, change) = observe(entry("create", "pods", request=p, level="Request"))
    assert intent.pod == "hunter-*" and intent.workload.name == "hunter"
    assert change.workload == "hunter"


def test_metadata_level_pod_create_still_says_who():
    (change,) = observe(entry("create", "pods", "hunter", level="Metadata"))
    assert change.action == "create pods" and change.actor.user == "alice"


@pytest.mark.parametrize(
    "request_object",
    [
        # Kubernetes >= 1.23 (kubectl debug): a strategic merge patch of the Pod
        {"spec": {"ephemeralContainers": [{"name": "debugger", "image": "busybox"}]}},
        # Kubernetes 1.16-1.22: an update with the EphemeralContainers object
        {
            "kind": "EphemeralContainers",
            "apiVersion": "v1",
            "ephemeralContainers": [{"name": "debugger", "image": "busybox"}],
        },
        # a JSON patch
        [
            {
                "op": "add",
                "path": "/spec/ephemeralContainers/-",
                "value": {"name": "debugger", "image": "busybox"},
            }
        ],
    ],
)
def test_kubectl_debug_is_an_ephemeral_intent(request_object):
    response = pod_obj("web-1", owners=[{"kind": "StatefulSet", "name": "web", "controller": True}])
    e = entry(
        "patch",
        "pods",
        "web-1",
        sub="ephemeralcontainers",
        request=request_object,
        response=response,
    )
    intent, change = observe(e)
    assert (intent.container, intent.container_type, intent.image) == (
        "debugger",
        EPHEMERAL,
        "busybox",
    )
    assert (
        intent.workload == Workload("StatefulSet", "web", "read") and intent.actor.user == "alice"
    )
    assert change.action == "patch pods/ephemeralcontainers" and change.workload == "web"


def test_pod_status_and_other_subresources_are_no_observation():
    for sub in ("status", "binding", "eviction", "exec", "log"):
        assert observe(entry("create", "pods", "x", sub=sub, user="system:node:n1")) == []
        assert observe(entry("patch", "pods", "x", sub=sub)) == []


# -- workloads: who changed them ---------------------------------------------------------------


def test_scale_of_a_deployment_by_a_person():
    scale = {"kind": "Scale", "apiVersion": "autoscaling/v1", "spec": {"replicas": 3}}
    (change,) = observe(
        entry(
            "patch",
            "deployments",
            "web",
            group="apps",
            sub="scale",
            request={"spec": {"replicas": 3}},
            response=scale,
        )
    )
    assert (change.workload, change.kind, change.action) == (
        "web",
        "Deployment",
        "patch deployments/scale",
    )
    assert observe(entry("update", "deployments", "web", group="apps", sub="status")) == []


@pytest.mark.parametrize(
    ("resource", "group", "name", "obj", "expected"),
    [
        ("cronjobs", "batch", "backup", None, ("backup", "CronJob")),
        ("statefulsets", "apps", "db", None, ("db", "StatefulSet")),
        ("daemonsets", "apps", "agent", None, ("agent", "DaemonSet")),
        # a ReplicaSet's changes are its Deployment's, by its owner when it was logged…
        (
            "replicasets",
            "apps",
            "web-abc",
            {
                "kind": "ReplicaSet",
                "metadata": {
                    "name": "web-abc",
                    "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": True}],
                },
            },
            ("web", "Deployment"),
        ),
        # …whole and with no owner it is its own…
        (
            "replicasets",
            "apps",
            "web-7d9f8b6c5d",
            {"kind": "ReplicaSet", "metadata": {"name": "web-7d9f8b6c5d"}},
            ("web-7d9f8b6c5d", "ReplicaSet"),
        ),
        # …and by the naming rules when it was not logged
        ("replicasets", "apps", "web-7d9f8b6c5d", None, ("web", "Deployment")),
        ("jobs", "batch", "backup-29375040", None, ("backup", "CronJob")),
        (
            "jobs",
            "batch",
            "migrate",
            {
                "kind": "Job",
                "metadata": {
                    "name": "migrate",
                    "ownerReferences": [{"kind": "CronJob", "name": "nightly", "controller": True}],
                },
            },
            ("nightly", "CronJob"),
        ),
    ],
)
def test_workload_changes_name_the_top_workload(resource, group, name, obj, expected):
    (change,) = observe(entry("patch", resource, name, group=group, response=obj))
    assert (change.workload, change.kind) == expected


def test_controllers_changes_name_no_actor():
    for user in (
        CONTROLLER,
        "system:serviceaccount:kube-system:deployment-controller",
        "system:kube-controller-manager",
        "system:serviceaccount:kube-system:generic-garbage-collector",
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
    ):
        assert (
            observe(
                entry(
                    "patch",
                    "deployments",
                    "web",
                    group="apps",
                    user=user,
                    groups=("system:serviceaccounts",),
                )
            )
            == []
        )
    # a tenant's CI service account is an actor
    (change,) = observe(
        entry("patch", "deployments", "web", group="apps", user="system:serviceaccount:ci:deployer")
    )
    assert change.actor.user == "system:serviceaccount:ci:deployer"


def test_a_workload_create_without_a_name_in_the_url_takes_the_objects():
    deployment = {"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "web"}}
    (change,) = observe(entry("create", "deployments", group="apps", request=deployment))
    assert change.workload == "web"


def test_impersonation_names_who_did_it():
    e = entry("patch", "deployments", "web", group="apps")
    e["impersonatedUser"] = {"username": CONTROLLER, "groups": ["system:serviceaccounts"]}
    (change,) = observe(e)  # alice pretending to be a controller is still alice
    assert change.actor.user == f"alice (as {CONTROLLER})"
    assert change.actor.groups == ("dev", "system:authenticated")


# -- damage, bounds and the byte pre-filter ----------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (
            lambda e: e["objectRef"].__setitem__("namespace", "../prod"),
            "audit entry without a valid objectRef.namespace",
        ),
        (lambda e: e.pop("auditID"), "audit entry without auditID"),
        (
            lambda e: e["requestObject"]["spec"]["containers"][0].__setitem__("name", "Bad Name"),
            "pod with an invalid container name",
        ),
        (
            lambda e: e["objectRef"].__setitem__("name", "a/b"),
            "audit entry of a pod with an invalid name",
        ),
    ],
)
def test_damaged_entries_are_a_decode_error(damage, reason):
    p = pod_obj()
    e = entry("create", "pods", "hunter", request=p)
    damage(e)
    with pytest.raises(DecodeError) as exc:
        observe(e)
    assert str(exc.value) == reason


def test_deduper_is_bounded():
    d = AuditDeduper(capacity=3)
    for i in range(10):
        assert d.first_time(str(i))
    assert len(d._seen) == 3


def observed_entries():
    p = pod_obj(init=(("setup", "busybox"),))
    yield audit_entries(EV, "e1")[1]
    patch = audit_entries(EV, "e2", verb="patch")[1]
    patch.pop("responseObject")
    patch["requestObject"] = {"count": 2}
    yield patch
    yield entry("create", "pods", "hunter", request=p)
    yield entry(
        "patch",
        "pods",
        "web-1",
        sub="ephemeralcontainers",
        request={"spec": {"ephemeralContainers": [{"name": "d", "image": "busybox"}]}},
    )
    yield entry("patch", "deployments", "web", group="apps", sub="scale")
    yield entry("update", "statefulsets", "db", group="apps")
    yield entry("create", "cronjobs", "backup", group="batch", level="Metadata")
    yield entry("patch", "daemonsets", "agent", group="apps")
    yield entry("patch", "jobs", "migrate", group="batch")
    yield entry("update", "replicasets", "web-7d9f8b6c5d", group="apps")


@pytest.mark.parametrize("e", list(observed_entries()), ids=lambda e: e["auditID"] + e["verb"])
def test_the_pre_filter_admits_every_entry_that_is_an_observation(e):
    assert observe(e)
    compact = json.dumps(e, separators=(",", ":"))
    for text in (json.dumps(e), compact, json.dumps(compact)):  # the last: inside a JSON string
        assert audit.wanted(text.encode()) and audit.wanted_text(text)
    assert audit.wanted_text(json.loads(json.dumps(compact)))


def test_the_pre_filter_drops_reads_and_other_resources():
    for e in (
        entry("get", "pods", "x"),
        entry("list", "deployments", group="apps"),
        entry("watch", "events"),
        entry("update", "leases", "kcm", group="coordination.k8s.io"),
    ):
        assert not audit.wanted(json.dumps(e).encode()) and not observe(e)


def test_a_dry_run_changes_nothing_and_is_no_observation():
    """`?dryRun=All`: nothing is stored - no Event, no pod, no change - so a tenant cannot make
    pulls, intents or actors out of requests that never happened."""
    (_received, complete) = audit_entries(EV, "id-dry", node="worker-2")
    complete["requestURI"] = "/api/v1/namespaces/default/events?dryRun=All&fieldManager=x"
    assert audit_observations(complete, AuditDeduper()) == []
    complete["requestURI"] = "/api/v1/namespaces/default/events"
    assert audit_observations(complete, AuditDeduper())  # the same entry, not a dry run
