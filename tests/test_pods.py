"""Pods: what ran, from real `kubectl get pods` output, and what damaged input gets.

The samples in tests/data/pods/ are published `kubectl get` outputs, abridged only of volumes:

* kuard-docker.json - `kubectl get pods -o json` on minikube with dockershim (imageID
  `docker-pullable://…`), a pod of a ReplicaSet with no pod-template-hash (a bare ReplicaSet):
  github.com/gpdgpa/kuard, temp.sh.
* orange-containerd.yaml - `kubectl get pod orange -o yaml` on Kubernetes 1.31 with containerd:
  an init container in CrashLoopBackOff (its last run in lastState, same containerID), the main
  container never started. From a CKA practice-exam transcript published on GitHub (found by
  its content in the search corpus; the repository could not be pinned down).
* nginx-ephemeral.yaml - `kubectl get pod nginx -oyaml` with a running ephemeral container,
  from OpenKruise's EphemeralJob proposal (github.com/openkruise/kruise,
  docs/proposals/20210826-ephemeraljob.md); its metadata omitted the pod's name and
  namespace, restored from the command.
"""

import copy
import json
import sys
import tracemalloc

import pytest
import yaml

from paths import DATA
from pullwatch.core.observations import EPHEMERAL, INIT, MAIN
from pullwatch.core.pods import (
    CANDIDATE,
    decode_pod,
    parse_image_id,
    pod_fingerprint,
    workload_of,
)
from pullwatch.core.pulls import DecodeError
from pullwatch.core.workload import Workload

PODS = DATA / "pods"
SHA = "sha256:" + "ab" * 32


def kuard():
    return json.loads((PODS / "kuard-docker.json").read_text())["items"][0]


def orange():
    return yaml.safe_load((PODS / "orange-containerd.yaml").read_text())


def pod(containers, statuses, *, init=(), init_statuses=(), owners=None, labels=None):
    meta = {"name": "web-7d9f8b6c5d-x7k2p", "namespace": "shop", "uid": "u-1"}
    if owners is not None:
        meta["ownerReferences"] = owners
    if labels is not None:
        meta["labels"] = labels
    return {
        "metadata": meta,
        "spec": {
            "nodeName": "node-1",
            "containers": list(containers),
            "initContainers": list(init),
        },
        "status": {
            "containerStatuses": list(statuses),
            "initContainerStatuses": list(init_statuses),
        },
    }


def running(name, image_id=f"docker.io/library/nginx@{SHA}", started="2026-11-18T11:06:40Z"):
    return {
        "name": name,
        "imageID": image_id,
        "containerID": "containerd://c1",
        "state": {"running": {"startedAt": started}},
    }


def test_docker_pod_list_gives_the_running_container_with_its_digest():
    (run,) = decode_pod(kuard())
    assert (run.namespace, run.pod, run.container, run.container_type) == (
        "default",
        "queue-l4dv8",
        "queue",
        MAIN,
    )
    assert run.image == "gcr.io/kuar-demo/kuard-amd64:1"
    assert run.digest == "sha256:bd17153e9a3319f401acc7a27759243f37d422c06cbbf01cb3e1f54bbbfe14f4"
    assert (run.node, run.started_at, run.state) == ("minikube", "2022-12-23T09:36:47Z", "running")
    assert run.pod_uid == "d8aa9a47-ad0f-4bbe-bc12-ab31605d3211"
    # a ReplicaSet named "queue" with no pod-template-hash label: a bare ReplicaSet
    assert run.workload == Workload("ReplicaSet", "queue", "read")


def test_crashlooping_init_container_ran_and_its_digest_is_known():
    runs = decode_pod(orange())
    assert [(r.container, r.container_type, r.state) for r in runs] == [
        ("init-myservice", INIT, "terminated")
    ]
    (run,) = runs
    # The spec's spelling, not the runtime's rewrite of it (status.image is busybox:latest)
    assert run.image == "busybox"
    assert run.digest == "sha256:768e5c6f5cb6db0794eec98dc7a967f40631746c32232b78a3105fb946f3ab83"
    assert run.started_at == "2024-11-01T00:54:55Z" and run.node == "controlplane"
    assert run.workload == Workload("Pod", "orange", "read")  # no controller: its own workload


def test_ephemeral_container_of_kubectl_debug_is_seen():
    (run,) = decode_pod(yaml.safe_load((PODS / "nginx-ephemeral.yaml").read_text()))
    assert (run.container, run.container_type, run.image) == (
        "nginx-ec",
        EPHEMERAL,
        "busybox:latest",
    )
    assert run.digest.startswith("sha256:b37dd066")


def test_an_older_run_in_last_state_has_no_digest_the_current_one_does():
    status = running("web")
    status["lastState"] = {
        "terminated": {"containerID": "containerd://c0", "startedAt": "2026-11-18T10:00:00Z"}
    }
    runs = decode_pod(pod([{"name": "web", "image": "nginx:1.25"}], [status]))
    assert [(r.state, r.started_at, r.digest) for r in runs] == [
        ("running", "2026-11-18T11:06:40Z", SHA),
        ("terminated", "2026-11-18T10:00:00Z", None),  # another container: maybe another image
    ]


def test_terminated_without_a_start_never_ran_and_waiting_containers_are_not_running():
    statuses = [
        {"name": "a", "imageID": "", "state": {"terminated": {"reason": "ContainerCannotRun"}}},
        {"name": "b", "imageID": "", "state": {"waiting": {"reason": "ImagePullBackOff"}}},
    ]
    spec = [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]
    assert decode_pod(pod(spec, statuses)) == []


def test_image_ids():
    repo = parse_image_id(f"docker-pullable://aquasec/kube-hunter@{SHA}")
    assert repo == (SHA, None)
    assert parse_image_id(f"docker.io/aquasec/kube-hunter@{SHA}") == (SHA, None)
    assert parse_image_id(f"docker://{SHA}") == (None, SHA)  # dockershim, no repo digest
    assert parse_image_id(SHA) == (None, SHA)  # containerd: an image imported on the node
    for junk in ("", "sha256:abc", f"repo@md5:{'a' * 32}", 7, None, "x@" + "a" * 2000):
        assert parse_image_id(junk) == (None, None)
    # an image id is no registry digest: the Running says the digest is unknown
    (run,) = decode_pod(pod([{"name": "web", "image": "nginx"}], [running("web", SHA)]))
    assert run.digest is None


@pytest.mark.parametrize(
    ("owners", "labels", "expected"),
    [
        (
            [{"kind": "ReplicaSet", "name": "web-7d9f8b6c5d", "controller": True}],
            {"pod-template-hash": "7d9f8b6c5d"},
            Workload("Deployment", "web", "inferred"),
        ),
        # The hash label does not match: the naming rules decide (the operator's resolver too)
        (
            [{"kind": "ReplicaSet", "name": "web-7d9f8b6c5d", "controller": True}],
            {"pod-template-hash": "other"},
            Workload("Deployment", "web", "inferred"),
        ),
        (
            [{"kind": "ReplicaSet", "name": "handmade", "controller": True}],
            {},
            Workload("ReplicaSet", "handmade", "read"),
        ),
        (
            [{"kind": "Job", "name": "backup-29375040", "controller": True}],
            None,
            Workload("CronJob", "backup", "inferred"),
        ),
        (
            [{"kind": "Job", "name": "migrate", "controller": True}],
            None,
            Workload("Job", "migrate", "read"),
        ),
        (
            [{"kind": "StatefulSet", "name": "db", "controller": True}],
            None,
            Workload("StatefulSet", "db", "read"),
        ),
        # an owner that is not the controller is not the workload
        (
            [{"kind": "ConfigMap", "name": "x"}],
            None,
            Workload("Pod", "web-7d9f8b6c5d-x7k2p", "read"),
        ),
    ],
)
def test_workload_from_owner_references(owners, labels, expected):
    meta = {"ownerReferences": owners}
    if labels is not None:
        meta["labels"] = labels
    assert workload_of("web-7d9f8b6c5d-x7k2p", meta) == expected
    p = pod([{"name": "web", "image": "nginx"}], [running("web")], owners=owners, labels=labels)
    assert decode_pod(p)[0].workload == expected


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.__setitem__("metadata", "x"), "pod without metadata"),
        (lambda p: p["metadata"].__setitem__("namespace", "Prod"), "pod in an invalid namespace"),
        (lambda p: p["metadata"].__setitem__("name", "../x"), "pod with an invalid name"),
        (lambda p: p["spec"].__setitem__("nodeName", "a/b"), "pod with an invalid nodeName"),
        (
            lambda p: p["spec"]["containers"][0].__setitem__("name", "Web"),
            "pod with an invalid container name",
        ),
        (
            lambda p: p["spec"]["containers"][0].__setitem__("image", ""),
            "pod with an invalid container image",
        ),
        (
            lambda p: p["spec"]["containers"].append({"name": "web", "image": "x"}),
            "pod with two containers of one name",
        ),
        (
            lambda p: p["status"]["containerStatuses"][0].__setitem__("name", "ghost"),
            "container status without its container in the spec",
        ),
        (
            lambda p: p["status"].__setitem__("containerStatuses", {"a": 1}),
            "pod whose status.containerStatuses is not a list",
        ),
        (
            lambda p: p["metadata"].__setitem__(
                "ownerReferences", [{"kind": "ReplicaSet", "name": "x/../y", "controller": True}]
            ),
            "pod whose controller has an invalid name",
        ),
        (
            lambda p: p["metadata"].__setitem__(
                "ownerReferences", [{"kind": "Replica Set", "name": "x", "controller": True}]
            ),
            "pod whose controller has an invalid kind",
        ),
        (lambda p: p.__setitem__("spec", None), "pod without spec"),
    ],
)
def test_damaged_pods_are_a_decode_error_with_a_countable_reason(damage, reason):
    p = pod([{"name": "web", "image": "nginx"}], [running("web")])
    damage(p)
    with pytest.raises(DecodeError) as exc:
        decode_pod(p)
    assert str(exc.value) == reason


def test_arbitrary_junk_never_raises_anything_but_decode_error():
    samples = [
        None,
        1,
        "pod",
        [],
        {},
        {"metadata": {}},
        {"metadata": {"name": 1}},
        {"metadata": {"name": "a", "namespace": "b"}, "spec": {"containers": "x"}},
    ]
    base = kuard()
    for key in ("status", "spec", "metadata"):
        for value in (None, 1, "x", [], {}):
            broken = copy.deepcopy(base)
            broken[key] = value
            samples.append(broken)
    for sample in samples:
        try:
            decode_pod(sample)
        except DecodeError:
            pass
        try:
            pod_fingerprint(sample)
        except DecodeError:
            pass


def test_fingerprint_changes_only_when_what_ran_changes():
    base = kuard()
    key, fingerprint = pod_fingerprint(base)
    probe = copy.deepcopy(base)
    probe["status"]["containerStatuses"][0]["ready"] = False
    probe["status"]["conditions"] = []
    probe["metadata"]["resourceVersion"] = "550099"
    assert pod_fingerprint(probe) == (key, fingerprint)  # a status update, nothing new ran
    restarted = copy.deepcopy(base)
    restarted["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] = (
        "2022-12-24T00:00:00Z"
    )
    other_image = copy.deepcopy(base)
    other_image["status"]["containerStatuses"][0]["imageID"] = f"docker-pullable://x@{SHA}"
    for changed in (restarted, other_image):
        new_key, new_fingerprint = pod_fingerprint(changed)
        assert new_key == key and new_fingerprint != fingerprint
    other_pod = copy.deepcopy(base)
    other_pod["metadata"]["uid"] = "another"
    assert pod_fingerprint(other_pod)[0] != key
    # the crashlooping init container's run is in lastState: it counts as started
    assert pod_fingerprint(orange())[1] != pod_fingerprint({"metadata": {"uid": "u"}})[1]


def test_a_pod_remembered_by_its_fingerprint_costs_about_100_bytes():
    """The Pod witness keeps {key: fingerprint}; DESIGN's budget is < 200 bytes per pod."""
    pods = []
    for i in range(20_000):
        p = kuard()
        p["metadata"]["uid"] = f"uid-{i}"
        pods.append(p)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    remembered = dict(pod_fingerprint(p) for p in pods)
    per_pod = (tracemalloc.get_traced_memory()[0] - before) / len(remembered)
    tracemalloc.stop()
    assert len(remembered) == 20_000
    print(f"{per_pod:.0f} bytes per remembered pod", file=sys.stderr)
    assert per_pod < 200


def test_candidate_bytes_are_in_every_started_pod_and_not_in_unstarted_ones():
    started = json.dumps(kuard()).encode()
    assert CANDIDATE in started
    pending = pod(
        [{"name": "web", "image": "nginx"}],
        [{"name": "web", "imageID": "", "state": {"waiting": {}}}],
    )
    assert CANDIDATE not in json.dumps(pending).encode() and decode_pod(pending) == []


def test_at_startup_is_carried():
    assert all(r.at_startup for r in decode_pod(kuard(), at_startup=True))


# -- the readers hand Pods to the pipeline ---------------------------------------------------


def read(data: bytes):
    import io

    from pullwatch.scan.records import ReadStats, iter_objects

    stats = ReadStats()
    return list(iter_objects(io.BufferedReader(io.BytesIO(data)), stats)), stats


def many_pods(n=20):
    out = []
    for i in range(n):
        p = kuard()
        p["metadata"]["name"] = f"queue-{i:05d}"
        p["metadata"]["uid"] = f"uid-{i}"
        if i % 2:  # not started yet: nothing ran, no need to parse it
            p["status"]["containerStatuses"][0] = {
                "name": "queue",
                "imageID": "",
                "state": {"waiting": {}},
            }
        out.append(p)
    return out


def test_pod_lists_reach_the_pipeline_in_every_format_kubectl_prints():
    pods = many_pods()
    started = {p["metadata"]["name"] for p in pods[::2]}
    as_list = {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": pods,
    }
    for data in (
        json.dumps(as_list, indent=4).encode(),  # kubectl get pods -A -o json
        yaml.safe_dump(as_list).encode(),  # kubectl get pods -A -o yaml
        "".join(json.dumps(p) + "\n" for p in pods).encode(),  # … | jq -c '.items[]'
        "".join(json.dumps({"type": "ADDED", "object": p}) + "\n" for p in pods).encode(),
        "".join(json.dumps(p, indent=2) + "\n" for p in pods).encode(),  # kubectl get -w -o json
    ):
        objs, stats = read(data)
        yielded = {o["metadata"]["name"] for kind, o in objs if kind == "pod"}
        assert started <= yielded, data[:40]  # every pod that ran something
        assert all(kind == "pod" for kind, _ in objs)
        # a Pod list is an input of its own (an inventory), not an unrecognized one
        assert stats.unrecognized == 0 and stats.recognized >= len(yielded)
        assert decode_pod(next(o for k, o in objs if o["metadata"]["name"] == "queue-00000"))


def test_the_published_pod_list_reaches_the_pipeline():
    objs, _ = read((PODS / "kuard-docker.json").read_bytes())
    assert [(kind, o["metadata"]["name"]) for kind, o in objs] == [("pod", "queue-l4dv8")]
