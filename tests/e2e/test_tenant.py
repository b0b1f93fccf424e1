"""A tenant cannot steer pullwatch (issue 15), on the real API server: each attack is made as a
tenant ServiceAccount with only ``create,patch events`` in its own namespace (the Role is made
here), or the little more the attack needs (delete findings, create suppressions), said where.

``PULLWATCH_SOURCE=<tree>/operator`` runs these against another source tree (to see them fail
without their fixes)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from harness import SCANNER, Operator, wait_for
from tenant import HUNTER, Tenant, operator_from_source

from localcluster import memory_mb

operator_from_source()


@pytest.fixture(scope="module")
def op(cluster, tmp_path_factory):
    operator = Operator(cluster, tmp_path_factory.mktemp("tenant-operator"), "--standalone")
    try:
        yield operator.start()
    finally:
        operator.kill() if operator.stop(timeout=30) is None else None


def suppression_conditions(cluster, ns: str) -> dict[str, dict]:
    """Each Suppression of ``ns`` that has a status: its first condition."""
    items = json.loads(cluster.kubectl("get", "suppressions", "-n", ns, "-o", "json").stdout)
    return {
        s["metadata"]["name"]: s["status"]["conditions"][0]
        for s in items["items"]
        if (s.get("status") or {}).get("conditions")
    }


def scanner_findings(cluster, ns: str) -> dict[str, dict]:
    return {n: f for n, f in cluster.findings(ns).items() if f["spec"]["rule"] == SCANNER}


def test_the_tenant_has_only_what_the_attacks_say(cluster):
    tenant = Tenant(cluster, "rights")
    assert tenant.can("create", "events", tenant.ns) and tenant.can("patch", "events", tenant.ns)
    other = cluster.namespace("other")
    for verb, resource, ns in (
        ("create", "events", other),
        ("delete", "events", tenant.ns),
        ("create", "findings", tenant.ns),
        ("create", "pods", tenant.ns),
    ):
        assert not tenant.can(verb, resource, ns), (verb, resource, ns)


def test_a_forged_event_naming_another_namespace_makes_no_finding_there(cluster, op):
    tenant = Tenant(cluster, "attacker")
    prod = cluster.namespace("prod")
    tenant.pull("payments-api-7d9f8b6c5d-x7k2p", claim=prod)  # accepted: eventTime is set
    found = wait_for(
        lambda: scanner_findings(cluster, tenant.ns), 60, what="the pull, in the author's namespace"
    )
    (finding,) = found.values()
    reported = finding["spec"]["reportedBy"]
    assert reported["verified"] is False and reported["claimedNamespace"] == prod
    tenant.pull("app-1", image="evil/miner:1")  # a later pull of its own: the stream went on
    wait_for(lambda: len(cluster.findings(tenant.ns)) >= 3, 60, what="the tenant's own pull")
    assert cluster.findings(prod) == {}  # nothing, whatever the Event claimed


def test_a_scanner_is_found_while_a_megabyte_event_is_repatched(cluster, op):
    tenant = Tenant(cluster, "blinder")
    big = tenant.event(
        {
            "involvedObject": {"kind": "Pod", "name": "noise", "namespace": tenant.ns},
            "reason": "Pulling",
            "message": 'Pulling image "x"' + "A" * 1_000_000,
            "source": {"component": "kubelet", "host": "node-1"},
            "count": 1,
        }
    )
    stop = threading.Event()
    patches = []

    def repatch() -> None:  # every 3 s, as the issue measured: 1 MB, then 0.9 MB of '<'
        i = 0
        while not stop.is_set():
            i += 1
            # '<' is written \u003c by the API server's JSON: a line of 5.4 MB, over the bound
            fill = "<" * 900_000 if i % 2 else "A" * 1_000_000
            status, _ = tenant.request(
                "PATCH",
                f"/api/v1/namespaces/{tenant.ns}/events/{big['metadata']['name']}",
                {"message": f'Pulling image "x{i}"' + fill, "count": i + 1},
                content_type="application/merge-patch+json",
            )
            patches.append(status)
            stop.wait(3)

    patcher = threading.Thread(target=repatch, daemon=True)
    patcher.start()
    try:
        wait_for(lambda: len(patches) >= 2, 30, what="the big Event patched twice")
        victim = Tenant(cluster, "victim")
        sent = time.monotonic()
        victim.pull(f"hunter-{uuid.uuid4().hex[:5]}")
        wait_for(lambda: scanner_findings(cluster, victim.ns), 90, what="the scanner Finding")
        took = time.monotonic() - sent
        wait_for(lambda: len(patches) >= 4, 30, what="two more patches")
        assert op.probe()[0] == 200
    finally:
        stop.set()
        patcher.join(10)
    assert set(patches) == {200}
    oversize = op.metric("pullwatch_stream_oversize_total", stream="events")
    assert oversize >= 1, "the escaped 5.4 MB line was skipped and counted"
    print(f"\nscanner Finding {took:.1f}s after its pull, big Event re-patched every 3 s")


def test_three_hundred_made_up_namespaces_leave_the_operator_bounded(cluster, op):
    """Each made-up namespace had its own caps, overflow and Findings in memory, whose writes
    failed (no such namespace) and were retried for ever; now they all count in the author's
    namespace, within its one cap."""
    operator = op  # its caps: 250 Findings per rule and namespace
    tenant = Tenant(cluster, "crowder")
    rss = memory_mb(operator.proc.pid)
    for i in range(300):
        tenant.pull(f"app{i}-7d9f8b6c5d-x7k2p", image="evil/miner:1", claim=f"made-up-{i}")

    def written() -> int:
        return sum(
            (f.get("status") or {}).get("count", 0) for f in cluster.findings(tenant.ns).values()
        )

    wait_for(lambda: written() == 300, 120, what="all 300 pulls written, in the author's namespace")
    held = len(cluster.findings(tenant.ns))
    assert held <= 251, held  # the author's namespace's cap and its overflow Finding
    everywhere = json.loads(cluster.kubectl("get", "findings", "-A", "-o", "json").stdout)
    assert not [f for f in everywhere["items"] if f["metadata"]["namespace"].startswith("made-up")]
    # The API server's own audit log says which writes were tried where (the operator's write
    # counters cannot: Findings in a namespace that earlier tests left Terminating are refused
    # with 403 and retried, as a namespace denied by policy would be).
    tried = set()
    for line in cluster.local.audit_log.read_text(errors="replace").splitlines():
        if "made-up-" in line and "findings" in line:
            ref = json.loads(line).get("objectRef") or {}
            if ref.get("resource") == "findings" and ref.get("namespace", "").startswith("made-up"):
                tried.add(ref["namespace"])
    assert not tried, f"writes tried into namespaces that do not exist: {sorted(tried)[:5]}"
    grew = memory_mb(operator.proc.pid) - rss
    print(f"\n300 made-up namespaces: {held} Findings, in one namespace; RSS {grew:+.1f} MB")


def test_a_deleted_scanner_finding_is_back_at_once(cluster, op):
    tenant = Tenant(cluster, "evidence")
    tenant.pull(f"hunter-{uuid.uuid4().hex[:5]}")
    (name,) = wait_for(lambda: scanner_findings(cluster, tenant.ns), 60, what="the Finding")
    # a namespace admin's right: delete findings in the namespace (not the tenant's)
    deleted = time.monotonic()
    cluster.kubectl("delete", "finding", name, "-n", tenant.ns)

    def back_with_its_count() -> dict | None:
        # created, then its status written (a subresource: a second write), so wait for both
        back = scanner_findings(cluster, tenant.ns).get(name)
        return back if back and (back.get("status") or {}).get("count") else None

    back = wait_for(back_with_its_count, 30, what="the Finding back, with its count")
    took = time.monotonic() - deleted
    assert back["status"]["count"] == 1
    assert "was deleted, not by pullwatch" in op.logs()
    print(f"\na deleted scanner Finding was back {took:.1f}s after the delete")


def test_a_tenant_suppression_does_not_silence_the_scanner_rule(cluster, op):
    rules = [
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": ["pullwatch.dev"], "resources": ["suppressions"], "verbs": ["create"]},
    ]
    tenant = Tenant(cluster, "silencer", rules=rules)  # a namespace admin's rights, no more
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30 * 86400))
    for name, spec_rules in (("all", ["*"]), ("scanner", [SCANNER])):
        status, rsp = tenant.request(
            "POST",
            f"/apis/pullwatch.dev/v1alpha1/namespaces/{tenant.ns}/suppressions",
            {
                "apiVersion": "pullwatch.dev/v1alpha1",
                "kind": "Suppression",
                "metadata": {"name": name},
                "spec": {"rules": spec_rules, "reason": "we run scans", "expires": expires},
            },
        )
        assert status == 201, rsp

    def conditions() -> dict[str, dict]:
        return suppression_conditions(cluster, tenant.ns)

    states = wait_for(lambda: len(conditions()) == 2 and conditions(), 60, what="their statuses")
    assert "every rule but" in states["all"]["message"]
    assert states["scanner"]["status"] == "False"
    tenant.pull(f"hunter-{uuid.uuid4().hex[:5]}")
    (finding,) = wait_for(
        lambda: [f for f in scanner_findings(cluster, tenant.ns).values() if f.get("status")],
        60,
        what="the scanner Finding and its status",
    )
    assert "suppression" not in finding["status"]
    assert HUNTER in finding["spec"]["image"]


def test_sixty_megabyte_events_do_not_blow_up_the_operators_next_list(cluster, tmp_path):
    """A page of 500 Events was read and parsed whole: 60 Events of 1 MB made the start-up list's
    first page 60 MB (and a few hundred MB held while reading and parsing it). Pages are now held
    in 8 MiB at most, asked again smaller when over it."""
    tenant = Tenant(cluster, "heavy")
    victim = Tenant(cluster, "victim")
    probe = f"probe{uuid.uuid4().hex[:6]}"  # a scanner to these operators only, not to others

    def started() -> Operator:  # all namespaces: one Event stream, watching once its list is read
        return Operator(cluster, tmp_path, "--standalone", "--scanner", probe).start()

    first = started()  # what a start-up costs without the big Events
    try:
        wait_for(first.settled, 60, what="the first operator settled")
        baseline = first.peak_rss_mb()
    finally:
        first.stop(timeout=30)
    body = {
        "involvedObject": {"kind": "Pod", "name": "noise", "namespace": tenant.ns},
        "reason": "Pulling",
        "source": {"component": "kubelet", "host": "node-1"},
        "count": 1,
    }
    try:
        tenant.events(
            [{**body, "message": f'Pulling image "x{i}"' + "A" * 1_000_000} for i in range(60)]
        )
        second = started()  # its first list: 60 MB of the tenant's Events
        try:
            victim.pull(f"hunter-{uuid.uuid4().hex[:5]}", image=f"registry.test/tools/{probe}:1")
            wait_for(lambda: scanner_findings(cluster, victim.ns), 60, what="the scanner Finding")
            examined = sum(
                v
                for (name, _), v in second.metrics().items()
                if name == "pullwatch_events_examined_total"
            )
            assert examined >= 60  # it listed every big Event (each is a candidate)
            grew = second.peak_rss_mb() - baseline
            assert second.probe()[0] == 200
        finally:
            second.stop(timeout=30)
    finally:  # later tests' operators list every namespace: not 60 MB more each
        cluster.kubectl("delete", "events", "--all", "-n", tenant.ns)
    print(f"\n60 Events of 1 MB listed at start-up: peak RSS {grew:+.1f} MB over {baseline:.0f} MB")
    assert grew < 60, f"peak RSS grew {grew:.0f} MB listing 60 MB of Events"


def maximal_suppression(name: str, images: int = 32, length: int = 256) -> dict:
    """A Suppression at the CRD's bounds: every list full, every string as long as allowed."""
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30 * 86400))

    def image(j: int) -> str:
        head = f"registry-{name}.example.com/team/app{j}-"
        return head + "a" * (length - len(head) - 2) + ":*"

    return {
        "apiVersion": "pullwatch.dev/v1alpha1",
        "kind": "Suppression",
        "metadata": {"name": name},
        "spec": {
            "rules": ["*"],
            "images": [image(j) for j in range(images)],
            "workloads": [f"w{j}-" + "a" * 249 for j in range(16)],
            "reason": "r" * 1000,
            "expires": expires,
        },
    }


def test_a_flood_of_maximal_suppressions_leaves_the_operator_bounded_and_watching(cluster, op):
    """A namespace admin creates 30 Suppressions at the CRD's bounds: each is bounded by the
    API server (the old maxima are refused there), pullwatch compiles only the namespace's
    budget of them (oldest first, the rest say so), its memory stays flat, and a scanner pulled
    elsewhere is still found."""
    rules = [
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": ["pullwatch.dev"], "resources": ["suppressions"], "verbs": ["create"]},
    ]
    tenant = Tenant(cluster, "hoarder", rules=rules)
    path = f"/apis/pullwatch.dev/v1alpha1/namespaces/{tenant.ns}/suppressions"
    for over in (
        maximal_suppression("old-maxima", images=1000, length=240),  # the CRD's old bounds
        maximal_suppression("one-more", images=33),
        maximal_suppression("too-long", length=257),
    ):
        status, rsp = tenant.request("POST", path, over)
        assert status == 422, (status, str(rsp)[:300])
    rss = memory_mb(op.proc.pid)
    for i in range(30):
        status, rsp = tenant.request("POST", path, maximal_suppression(f"s{i:02d}"))
        assert status == 201, (status, str(rsp)[:300])

    def conditions() -> dict[str, dict]:
        return suppression_conditions(cluster, tenant.ns)

    states = wait_for(lambda: len(conditions()) == 30 and conditions(), 120, what="30 statuses")
    active = sorted(n for n, c in states.items() if c["reason"] == "Active")
    refused = [n for n, c in states.items() if "over the budget of namespace" in c["message"]]
    # the oldest (by creation time, then name: both grow with i) fill the budget of 512 units
    assert active == [f"s{i:02d}" for i in range(512 // 49)], states
    assert len(refused) == 30 - len(active)
    grew = memory_mb(op.proc.pid) - rss
    elsewhere = Tenant(cluster, "watched")
    elsewhere.pull(f"hunter-{uuid.uuid4().hex[:5]}")
    wait_for(lambda: scanner_findings(cluster, elsewhere.ns), 60, what="a scanner pull elsewhere")
    print(
        f"\n30 maximal Suppressions: {len(active)} compiled, {len(refused)} over the budget; "
        f"RSS {grew:+.1f} MB"
    )
    assert grew < 60, grew  # at most the namespace's budget compiled (~3.5 MB); generous
