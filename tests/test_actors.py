"""Who is a person, and the bounded, expiring map of workloads to the people who changed them."""

import sys
import time

import pytest

from kubelet import EPOCH
from pullwatch.core.actors import ActorMap, is_person, parse_time
from pullwatch.core.observations import ActorChange
from pullwatch.core.pulls import Actor


@pytest.mark.parametrize(
    ("user", "groups", "person"),
    [
        ("system:node:worker-1", ("system:nodes",), False),
        ("system:apiserver", (), False),
        ("system:kube-controller-manager", (), False),
        ("system:kube-scheduler", (), False),
        ("system:kube-proxy", (), False),
        ("system:cloud-controller-manager", (), False),
        ("system:serviceaccount:kube-system:replicaset-controller", (), False),
        ("system:serviceaccount:kube-system:cronjob-controller", (), False),
        ("system:serviceaccount:kube-system:generic-garbage-collector", (), False),
        ("system:serviceaccount:kube-system:horizontal-pod-autoscaler", (), False),
        ("aksService", ("system:masters",), False),  # AKS's control plane
        ("eks:node-manager", (), False),  # EKS's internal service roles
        ("someone", ("system:nodes",), False),  # a node credential, whatever its name
        # people, or automation acting for them
        ("kubernetes-admin", ("system:masters", "system:authenticated"), True),
        ("masterclient", ("system:masters",), True),  # AKS: az aks get-credentials --admin
        ("system:serviceaccount:ci:deployer", ("system:serviceaccounts",), True),
        ("system:serviceaccount:argocd:argocd-application-controller", (), True),
        ("system:serviceaccount:kube-system:tiller", (), True),  # not a controller's name
        ("system:serviceaccount:tenant:replicaset-controller", (), True),  # not kube-system
        ("system:anonymous", ("system:unauthenticated",), True),
        ("arn:aws:sts::111122223333:assumed-role/Admin/alice", (), True),
        (None, (), True),
    ],
)
def test_who_is_a_person(user, groups, person):
    assert is_person(user, groups) is person


def actor(user, ip="10.0.0.1"):
    return Actor(user, ("dev", "system:authenticated"), (ip,), "kubectl/v1.29.4 (linux/amd64)")


def change(workload, user, action="patch deployments", when="2026-11-18T11:06:40Z", ns="shop"):
    return ActorChange(ns, workload, "Deployment", actor(user), action, when)


def test_first_actor_is_kept_and_recent_ones_are_distinct_newest_first():
    m = ActorMap(clock=lambda: 0.0)
    for user in ("alice", "bob", "carol", "bob", "dave", "erin", "frank", "grace"):
        m.observe(change("web", user))
    got = m.get("shop", "web")
    assert got.first.actor.user == "alice"
    assert [r.actor.user for r in got.recent] == ["grace", "frank", "erin", "dave", "bob"]
    record = got.recent[0].as_dict()
    assert record == {
        "user": "grace",
        "groups": ["dev", "system:authenticated"],
        "sourceIPs": ["10.0.0.1"],
        "userAgent": "kubectl/v1.29.4 (linux/amd64)",
        "action": "patch deployments",
        "time": "2026-11-18T11:06:40Z",
    }


def test_the_same_person_again_moves_to_the_front_with_their_latest_action():
    m = ActorMap(clock=lambda: 0.0)
    m.observe(change("web", "alice", "create deployments"))
    m.observe(change("web", "bob"))
    m.observe(change("web", "alice", "patch deployments/scale", "2026-11-18T12:00:00Z"))
    recent = m.get("shop", "web").recent
    assert [(r.actor.user, r.action) for r in recent] == [
        ("alice", "patch deployments/scale"),
        ("bob", "patch deployments"),
    ]
    assert m.get("shop", "web").first.action == "create deployments"


def test_capacity_evicts_the_workload_changed_longest_ago():
    m = ActorMap(capacity=3, clock=lambda: 0.0)
    for name in ("a", "b", "c"):
        m.observe(change(name, "alice"))
    m.observe(change("a", "bob"))  # a changed again: b is now the oldest
    m.observe(change("d", "alice"))
    assert m.get("shop", "b") is None and m.get("shop", "a").first.actor.user == "alice"
    assert len(m) == 3 and m.evicted == 1


def test_expiry_uses_the_maps_clock_never_the_entrys_time():
    now = [1000.0]
    m = ActorMap(ttl=60, clock=lambda: now[0])
    m.observe(change("web", "alice", when="2099-01-01T00:00:00Z"))  # a far-future claim
    m.observe(change("db", "alice"))
    now[0] = 1030.0
    m.observe(change("db", "bob"))
    now[0] = 1070.0
    assert m.get("shop", "web") is None  # 70 s since its change
    assert m.get("shop", "db").first.actor.user == "alice"
    now[0] = 1100.0
    assert m.expire() == 1 and len(m) == 0
    m.observe(change("db", "carol"))  # after expiry a change starts afresh
    assert m.get("shop", "db").first.actor.user == "carol"


def test_expire_stops_at_the_first_workload_still_alive():
    now = [0.0]
    m = ActorMap(ttl=10, clock=lambda: now[0])
    for i in range(5):
        now[0] = float(i)
        m.observe(change(f"w{i}", "alice"))
    assert m.expire(now=12.5) == 3 and len(m) == 2


def test_times_are_read_or_unknown():
    assert parse_time("2026-11-18T11:06:40Z") == parse_time("2026-11-18T11:06:40.999+00:00")
    for junk in (None, 5, "", "x" * 100, "2026-13-01T00:00:00Z"):
        assert parse_time(junk) is None
    m = ActorMap(clock=lambda: 0.0)
    m.observe(change("web", "alice", when=None))
    assert m.get("shop", "web").first.as_dict()["time"] is None


def test_memory_per_workload_at_100_000():
    """A realistic map: 100,000 workloads in 500 namespaces, changed by 2,000 people (a few CI
    service accounts do most of it), each workload by one to three of them."""
    import tracemalloc

    people = [actor(f"user-{i}@example.com", f"10.1.{i // 250}.{i % 250}") for i in range(2000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    m = ActorMap(clock=lambda: 0.0)
    for i in range(100_000):
        ns, name = f"team-{i % 500}", f"service-{i:06d}-api"
        for k in range(1 + i % 3):
            who = people[(i * 7 + k * 13) % (40 if k == 0 else 2000)]
            t = EPOCH + i * 3 + k  # about one change a second for days: no time is shared
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
            m.record(ns, name, who, "patch deployments", when)
    per_workload = (tracemalloc.get_traced_memory()[0] - before) / len(m)
    tracemalloc.stop()
    assert len(m) == 100_000
    print(f"actor map: {per_workload:.0f} bytes per workload at 100,000", file=sys.stderr)
    assert per_workload < 600
