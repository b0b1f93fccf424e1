"""core/budgets.py and the Suppression bounds: what a tenant who may create Suppressions can
make the operator compile and hold is bounded per namespace and cluster-wide, and a flood of new
objects refuses only itself, never what was in force before it (issue 15)."""

from __future__ import annotations

from pullwatch.core.budgets import CLUSTER_BUDGET, NAMESPACE_BUDGET, Claim, admit
from pullwatch.core.suppressions import (
    MAX_IMAGE_LENGTH,
    MAX_ITEMS,
    refused_suppression,
    suppression_cost,
    suppression_from_object,
)

OPERATOR = "pullwatch-system"


def claim(i: int, namespace: str = "team", cost: int = 49, created: float | None = None) -> Claim:
    return Claim(
        f"{namespace}-{i}", namespace, float(i) if created is None else created, f"s{i}", cost
    )


def test_a_namespace_holds_its_oldest_objects_up_to_its_budget_and_refuses_the_newer():
    claims = [claim(i) for i in range(30)]
    refused = admit(claims, OPERATOR)
    fits = NAMESPACE_BUDGET // 49
    assert sorted(refused, key=lambda k: int(k.split("-")[1])) == [
        f"team-{i}" for i in range(fits, 30)
    ]
    assert "over the budget of namespace team" in refused["team-29"]


def test_a_flood_of_newer_objects_never_pushes_out_what_was_there_before_it():
    old = [claim(i, cost=5) for i in range(3)]
    flood = [claim(100 + i, cost=49) for i in range(1000)]
    refused = admit([*flood, *old], OPERATOR)  # in any order: the list comes sorted by name
    assert not set(refused) & {c.key for c in old}
    # a small newcomer after the first refused one is refused too: nothing squeezes in later
    late = claim(5000, cost=1)
    assert late.key in admit([*old, *flood, late], OPERATOR)


def test_ties_in_creation_time_are_broken_by_name_and_unknown_times_count_as_newest():
    a = Claim("a", "team", 10.0, "a", NAMESPACE_BUDGET)
    b = Claim("b", "team", 10.0, "b", 1)
    unknown = Claim("u", "team", float("inf"), "0-first-by-name", 1)
    assert set(admit([b, unknown, a], OPERATOR)) == {"b", "u"}


def test_other_namespaces_are_not_touched_by_one_namespace_over_its_budget():
    refused = admit([*(claim(i, "noisy") for i in range(100)), claim(0, "quiet")], OPERATOR)
    assert "quiet-0" not in refused and "noisy-99" in refused


def test_the_cluster_budget_refuses_the_newest_across_namespaces_but_not_the_operators():
    per = NAMESPACE_BUDGET // 49
    namespaces = CLUSTER_BUDGET // (per * 49) + 2
    claims = [
        claim(n * 100 + i, f"ns{n}", created=float(n * 100 + i))
        for n in range(namespaces)
        for i in range(per)
    ]
    admin = [claim(i, OPERATOR, created=1e9 + i) for i in range(per)]  # newest of all
    refused = admit([*claims, *admin], OPERATOR)
    assert not set(refused) & {c.key for c in admin}  # tenants cannot keep them out
    assert not set(refused) & {c.key for c in claims if c.namespace == "ns0"}  # the oldest
    last = max(claims, key=lambda c: c.created)
    assert "over the cluster-wide budget" in refused[last.key]
    spent = sum(c.cost for c in claims if c.key not in refused)
    assert CLUSTER_BUDGET - 49 < spent <= CLUSTER_BUDGET


def body(images: int = 1, workloads: int = 1, length: int = 40) -> dict:
    return {
        "apiVersion": "pullwatch.dev/v1alpha1",
        "kind": "Suppression",
        "metadata": {"name": "s", "namespace": "team", "uid": "u1", "generation": 3},
        "spec": {
            "images": [f"registry.example.com/{'a' * (length - 23)}{i:02d}" for i in range(images)],
            "workloads": [f"w{i}-*" for i in range(workloads)],
            "reason": "r",
            "expires": "2026-06-01T00:00:00Z",
        },
    }


def test_a_suppression_over_the_bounds_is_refused_and_says_the_bounds():
    at = suppression_from_object(
        body(MAX_ITEMS["images"], MAX_ITEMS["workloads"], MAX_IMAGE_LENGTH), OPERATOR
    )
    assert at.usable, at.problems
    assert (at.uid, at.generation) == ("u1", 3)
    for over in (
        body(images=MAX_ITEMS["images"] + 1),
        body(workloads=MAX_ITEMS["workloads"] + 1),
        body(length=MAX_IMAGE_LENGTH + 1),
    ):
        s = suppression_from_object(over, OPERATOR)
        assert not s.usable and "at most" in s.problems[0], s.problems


def test_the_cost_is_read_from_the_lengths_and_a_refused_one_covers_nothing():
    assert suppression_cost(body(32, 16)) == 49
    assert suppression_cost({"spec": {"images": "x"}}) == 1 and suppression_cost(None) == 1
    stand_in = refused_suppression("team", "s", "over the budget of namespace team")
    assert stand_in.over_budget and not stand_in.usable
    assert not stand_in.covers("kubernetes-suspicious-image-pulling", "team", "w", "x", 0)
