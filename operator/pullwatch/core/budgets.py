"""How much of the tenants' configuration pullwatch compiles and holds: a budget per namespace
and one for the cluster.

Whoever may create Suppressions in a namespace (its ``edit`` and ``admin`` users, through the
shipped aggregated role) decides how many objects pullwatch compiles and keeps in memory. The
CRD bounds one object; nothing in Kubernetes bounds how many there are unless the cluster has a
ResourceQuota on ``count/suppressions.pullwatch.dev``. So the operator bounds what it compiles:

* An object costs one unit, plus one per pattern or glob it asks to have compiled.
* Per namespace, the objects are taken oldest first (``metadata.creationTimestamp``, which the
  API server sets and nobody can backdate, then name) until ``NAMESPACE_BUDGET`` is spent; from
  the first that does not fit on, every newer one is refused. A refused object is not compiled,
  covers nothing, and says so in its status. Taking the oldest first means that a newcomer can
  never push out what was in force before it: a flood refuses only itself.
* Then the same across the cluster, with ``CLUSTER_BUDGET``, over every namespace but the
  operator's own. The operator's namespace (cluster administrators) has its namespace budget
  but does not spend the cluster's, so tenants cannot keep an administrator's Suppression out.

Refusal only grows as objects are added (an older object seen later can push newer ones out,
never bring a refused one back): an object refused while a list is still being read stays
refused once the list is complete, so its spec need not be held meanwhile.

    >>> claims = [Claim(f"u{i}", "team", float(i), f"s{i}", 200) for i in range(3)]
    >>> refused = admit(claims, "pullwatch-system")
    >>> sorted(refused), refused["u2"][:52]
    (['u2'], 'over the budget of namespace team (512 compiled patt')
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Measured (bench/suppression_memory.py): an image pattern of 256 characters costs about 10 kB
# resident compiled (its RE2 set), a workload or namespace glob under 1 kB; an object at the
# CRD's bounds (32 images, 16 workloads: 49 units) about 0.34 MB. So a unit is at most ~10 kB.
# 512 units: 10 Suppressions at the bounds (~3.5 MB), or a hundred of the kind people write (one
# to five patterns). A namespace that needs more has outgrown exceptions: its images belong in an
# AllowedImages.
NAMESPACE_BUDGET = 512
# 4096 units: at most ~40 MB (~28 MB measured, 83 objects at the bounds), within the container's
# 256 Mi beside 5,000 Findings; some 800 Suppressions of the everyday size - far above what real
# clusters hold (tens).
CLUSTER_BUDGET = 4096


@dataclass(frozen=True)
class Claim:
    """One object's claim on the budget: its key (uid), where it is, when it was created (epoch
    seconds; ``inf`` when unknown, so an object without a creation time is never the oldest),
    its name, and its cost."""

    key: str
    namespace: str
    created: float
    name: str
    cost: int


def admit(
    claims: Iterable[Claim],
    exempt_namespace: str,
    namespace_budget: int = NAMESPACE_BUDGET,
    cluster_budget: int = CLUSTER_BUDGET,
) -> dict[str, str]:
    """The claims refused (key -> why, in words for the object's status)."""
    refused: dict[str, str] = {}
    by_namespace: dict[str, list[Claim]] = {}
    for c in claims:
        by_namespace.setdefault(c.namespace, []).append(c)
    admitted: list[Claim] = []
    for namespace, group in by_namespace.items():
        why = (
            f"over the budget of namespace {namespace} ({namespace_budget} compiled patterns, "
            "spent by older Suppressions there): not compiled, covers nothing; delete unused "
            "Suppressions or merge them"
        )
        fitted = _fill(sorted(group, key=_age), namespace_budget, why, refused)
        if namespace != exempt_namespace:
            admitted.extend(fitted)
    why = (
        f"over the cluster-wide budget ({cluster_budget} compiled patterns across namespaces, "
        "spent by older Suppressions): not compiled, covers nothing; ask a cluster administrator"
    )
    _fill(
        sorted(admitted, key=lambda c: (c.created, c.namespace, c.name)),
        cluster_budget,
        why,
        refused,
    )
    return refused


def _fill(ordered: list[Claim], budget: int, why: str, refused: dict[str, str]) -> list[Claim]:
    """Admit ``ordered`` (oldest first) while the budget lasts; from the first that does not
    fit, every newer one is refused with ``why`` (so a flood refuses only itself)."""
    fitted, spent, full = [], 0, False
    for c in ordered:
        full = full or spent + c.cost > budget
        if full:
            refused[c.key] = why
        else:
            spent += c.cost
            fitted.append(c)
    return fitted


def _age(c: Claim) -> tuple[float, str]:
    return c.created, c.name
