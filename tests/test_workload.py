"""Workload inference from pod names, built exactly as Kubernetes' controllers build them."""

import random

import pytest

from pullwatch.core.workload import CONTROLLER_KINDS, Workload, controller_of, from_owners, infer

ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def generate_name(base: str, rng: random.Random) -> str:
    """k8s.io/apiserver/pkg/storage/names: the base cut to 58 characters, then 5 random ones."""
    return base[:58] + "".join(rng.choice(ALPHABET) for _ in range(5))


def pod_template_hash(rng: random.Random) -> str:
    """rand.SafeEncodeString(fmt.Sprint(uint32)): each decimal digit through the alphabet."""
    return "".join(ALPHABET[ord(c) % 27] for c in str(rng.getrandbits(32)))


NAMES = [
    "web",
    "api-server",
    "a" * 30,
    "payments-processor-v2-canary",
    "x" * 50,
    "y" * 57,
    "z" * 63,
]


@pytest.mark.parametrize("name", NAMES)
def test_deployment_pods_infer_the_deployment(name):
    rng = random.Random(name)
    for _ in range(200):
        rs = f"{name}-{pod_template_hash(rng)}"
        got = infer(generate_name(rs + "-", rng))
        if len(name) <= 56:
            assert got == Workload("Deployment", name, "inferred")
        else:  # the name itself was cut: the same (cut) name for every pod, whatever the kind says
            assert got.name == name[:58].rstrip("-") or got.name == name[:57]


@pytest.mark.parametrize("name", NAMES[:5])
def test_cronjob_runs_infer_the_cronjob(name):
    rng = random.Random(name)
    name = name[:52]  # the API server refuses CronJob names over 52 characters
    for minutes in range(29_375_040, 29_375_040 + 60 * 24 * 30, 60 * 7):
        job = f"{name}-{minutes}"
        assert infer(generate_name(job + "-", rng)) == Workload("CronJob", name, "inferred"), job


@pytest.mark.parametrize("name", NAMES[:5])
def test_statefulset_and_controller_pods(name):
    rng = random.Random(name)
    for ordinal in (0, 1, 9, 10, 123):
        assert infer(f"{name}-{ordinal}") == Workload("StatefulSet", name, "inferred")
    for _ in range(50):  # a DaemonSet's, a Job's or a bare ReplicaSet's pod: the name, not the kind
        assert infer(generate_name(f"{name}-", rng)) == Workload(CONTROLLER_KINDS, name, "inferred")


@pytest.mark.parametrize(
    "pod",
    [
        "hunter",
        "my-debug-pod",
        "nginx-vowels-abcde",
        "migrate-20261118-abcde",
        "x" * 62 + "a",
        "release-2026-01",
    ],
)
def test_bare_pods_stay_pods(pod):
    assert infer(pod).kind == "Pod" and infer(pod).name == pod


def test_known_confusions_are_what_the_readme_says():
    # A bare pod whose name ends like a generated one is taken for its controller's; the operator,
    # which reads ownerReferences, knows better.
    assert infer("db-pgsql") == Workload(CONTROLLER_KINDS, "db", "inferred")
    assert infer("nginx-1") == Workload("StatefulSet", "nginx", "inferred")
    # 63 characters ending in five of the random alphabet: read as a generated name cut at 58
    assert infer("x" * 63) == Workload(CONTROLLER_KINDS, "x" * 58, "inferred")


def test_owner_chain():
    meta = {
        "ownerReferences": [
            {"kind": "Node", "name": "n", "controller": False},
            {"kind": "ReplicaSet", "name": "web-7d9f8b6c5d", "controller": True},
        ]
    }
    assert controller_of(meta) == ("ReplicaSet", "web-7d9f8b6c5d")
    assert controller_of({"ownerReferences": "garbage"}) is None and controller_of({}) is None
    assert from_owners("web-x", [("ReplicaSet", "web-rs"), ("Deployment", "web")]) == Workload(
        "Deployment", "web", "read"
    )
    assert from_owners("bare", [None]) == Workload("Pod", "bare", "read")
