"""One schema: every body pullwatch builds is valid against its CRD's schema, made strict.

The Finding is written down twice - in the code that builds it and in the CRD - and the API
server would prune a field the CRD forgets without a word. Here the real builders' bodies are
validated against the shipped CRDs turned into strict JSON Schema (tests/schemas.py): Findings
from every golden file and from states with every optional part filled, the statuses of the
configuration kinds, the OpenReports Reports, and every example. A field added in code and not in
its CRD fails this file.
"""

from __future__ import annotations

import copy
import datetime
import doctest
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

import schemas
from kubelet import audit_entries, image_event
from pullwatch.core.allowlist import Allowlist, policy_from_object
from pullwatch.core.audit import AuditDeduper, decode_audit_entry
from pullwatch.core.detector import Caps, Detector
from pullwatch.core.observations import MAIN, ActorChange, Authored, Intent, Running
from pullwatch.core.pulls import Actor, decode_event
from pullwatch.core.reports import report_for
from pullwatch.core.rules import DEFAULT_SCANNER_IMAGES, scanner_list_from_object
from pullwatch.core.suppressions import Suppressions, suppression_from_object
from pullwatch.core.workload import Workload
from pullwatch.kube.kinds import allowed_images, scanner_images, suppressions

ROOT = schemas.ROOT
GOLDEN = ROOT / "tests" / "data" / "golden"
EXAMPLES = ROOT / "examples"
GROUP = "pullwatch.dev/v1alpha1"
OPERATOR_NAMESPACE = "pullwatch-system"
# Documents pullwatch writes that are not objects of a CRD (they never reach an API server).
NOT_CUSTOM_RESOURCES = {"List", "ScanContext"}
VALIDATORS = schemas.load_validators()


def check(body: dict[str, Any]) -> None:
    key = (body.get("apiVersion"), body.get("kind"))
    assert key in VALIDATORS, f"no CRD shipped for {key}"
    found = schemas.problems(VALIDATORS[key], body)
    name = (body.get("metadata") or {}).get("name")
    assert found == [], f"{key[1]} {name} breaks its CRD's schema:\n" + "\n".join(found)


def test_the_strict_conversion_has_worked_examples():
    assert doctest.testmod(schemas, raise_on_error=False).failed == 0


def test_every_crd_is_loaded():
    kinds = {kind for _, kind in VALIDATORS}
    assert {"Finding", "AllowedImages", "ScannerImages", "Suppression", "Report"} <= kinds


# -- Findings ------------------------------------------------------------------------------------
def documents(path: Path) -> list[Any]:
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if path.suffix == ".yaml":
        return list(yaml.safe_load_all(text))
    doc = json.loads(text)
    return doc.get("items", [doc]) if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]


GOLDEN_OUTPUTS = sorted(
    p for p in GOLDEN.iterdir() if p.suffix in (".json", ".jsonl", ".yaml") and p.is_file()
)


@pytest.mark.parametrize("path", GOLDEN_OUTPUTS, ids=lambda p: p.name)
def test_every_golden_finding_is_valid(path):
    docs = [d for d in documents(path) if isinstance(d, dict)]
    kinds = Counter(d.get("kind") for d in docs)
    assert set(kinds) - NOT_CUSTOM_RESOURCES - {"Finding"} == set(), kinds
    for doc in docs:
        if doc.get("kind") not in NOT_CUSTOM_RESOURCES:
            check(doc)


def test_the_golden_files_hold_findings():
    assert (
        sum(
            d.get("kind") == "Finding"
            for p in GOLDEN_OUTPUTS
            for d in documents(p)
            if isinstance(d, dict)
        )
        >= 20
    )


def _allowlist() -> Allowlist:
    return Allowlist(
        [
            policy_from_object(
                {
                    "apiVersion": GROUP,
                    "kind": "AllowedImages",
                    "metadata": {"name": "corp"},
                    "spec": {"images": ["corp/**"]},
                }
            )
        ]
    )


def _suppression(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": GROUP,
        "kind": "Suppression",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "generation": 2,
            "creationTimestamp": "2026-11-01T00:00:00Z",
        },
        "spec": spec,
    }


def filled_detector() -> Detector:
    """A detector whose Findings between them fill every optional part of a Finding: both rules,
    a failed pull's last error, a Suppression's cover, an origin from the audit log (actor,
    groups, addresses), and an overflow Finding with its folded sample."""
    detector = Detector(_allowlist(), caps=Caps(total=100, per_namespace=4))
    detector.suppressions = Suppressions(
        [
            suppression_from_object(
                _suppression(
                    "accepted",
                    "ns",
                    {
                        "reason": "our cache",
                        "workloads": ["cache"],
                        "expires": "2026-12-31T00:00:00Z",  # within a quarter of its creation
                    },
                ),
                OPERATOR_NAMESPACE,
            )
        ]
    )
    hunter = "aquasec/kube-hunter:0.6.8"
    events = [
        image_event("Pulling", "ns", "hunter", hunter, count=3, seq=1),
        image_event("Pulled", "ns", "hunter", hunter, count=2, seq=2),
        image_event("Present", "ns", "hunter-b", hunter, node="worker-2", seq=3),
        image_event("Pulling", "ns", "cache", "evil/cache:1", seq=4),
    ]
    failed = image_event("Pulling", "ns", "broken", "evil/broken:1", seq=5)
    failed["reason"] = "Failed"
    failed["message"] = (
        'Failed to pull image "evil/broken:1": rpc error: code = NotFound desc = '
        "failed to resolve reference: not found"
    )
    events.append(failed)
    for ev in events:
        detector.observe(decode_event(ev), minute=29_000_000)
    deduper = AuditDeduper()
    audited = image_event("Pulling", "audited", "miner", "evil/miner:1", seq=6)
    for entry in audit_entries(audited, "a-1", ip="10.0.3.7"):
        pull = decode_audit_entry(entry, deduper)
        if pull is not None:
            detector.observe(pull, minute=29_000_000)
    for i in range(8):  # past the per-namespace cap: an overflow Finding
        detector.observe(
            decode_event(image_event("Pulling", "crowded", f"w{i}", f"evil/w{i}:1", seq=10 + i)),
            minute=29_000_000,
        )
    _witnesses(detector)
    return detector


def _witnesses(detector: Detector) -> None:
    """What the Pod and audit witnesses add: containers seen running (one with no pull Event,
    one found at start-up), a pod created with an image, the people who changed a workload, a
    forged pull (by namespace), one verified by its author, a clock (lastObserved, clamping)."""
    clock = 1_795_003_200.0
    alice = Actor("alice", ("devs",), ("10.1.2.3",), "kubectl/v1.32")
    detector.observe(
        ActorChange("ns", "hunter", "Pod", alice, "create pods", "2026-11-18T09:00:00Z")
    )
    detector.observe(
        Running(
            "ns",
            "hunter",
            "u1",
            "hunter",
            MAIN,
            "aquasec/kube-hunter:0.6.8",
            "sha256:" + "ab" * 32,
            "worker-1",
            "2026-11-18T10:00:00Z",
            Workload("Pod", "hunter", "read"),
        ),
        clock=clock,
    )
    detector.observe(
        Running(
            "ran",
            "sneaky",
            "u2",
            "c",
            MAIN,
            "evil/sneaky:1",
            None,
            "worker-1",
            "2026-11-18T00:00:00Z",
            Workload("Pod", "sneaky", "read"),
            at_startup=True,
        ),
        clock=clock,
    )
    detector.observe(
        Running(
            "ran",
            "quiet",
            "u3",
            "c",
            MAIN,
            "evil/quiet:1",
            None,
            "worker-1",
            "2026-11-18T11:59:00Z",
            Workload("Pod", "quiet", "read"),
        ),
        clock=clock,
    )
    detector.settle(clock + 3600)  # 'quiet' ran with no pull Event
    detector.observe(
        Intent(
            "intent",
            "debug",
            "dbg",
            MAIN,
            "bishopfox/peirates:1",
            Workload("Pod", "debug", "read"),
            alice,
            "2026-11-18T10:00:00Z",
            "a-9",
        )
    )
    forged = image_event("Pulling", "attacker", "payments-api-7d9f8b6c5d-x7k2p", "evil/f:1")
    forged["involvedObject"]["namespace"] = "prod"
    detector.observe(decode_event(forged), clock=clock)
    verified = image_event("Pulling", "verified", "web", "evil/v:1", node="worker-1", seq=30)
    detector.observe(decode_event(verified), clock=clock, minute=29_916_720)
    kubelet = Actor("system:node:worker-1", ("system:nodes",), ("10.0.0.1",), "kubelet")
    detector.observe(Authored("verified", verified["metadata"]["name"], kubelet, "create", None))
    tenant = Actor("system:serviceaccount:verified:bot", (), ("10.0.9.9",), "curl")
    lie = image_event("Pulling", "verified", "web", "evil/v:1", node="worker-1", seq=31)
    detector.observe(Authored("verified", lie["metadata"]["name"], tenant, "create", None))
    detector.observe(decode_event(lie), clock=clock)
    for i in range(210):  # more live series than a stored ledger holds: it folds the oldest
        many = image_event("Pulling", "busy", f"web-7d9f8b6c5d-{_suffix(i)}", "evil/b:1", seq=i)
        detector.observe(decode_event(many), clock=clock, minute=29_916_000 + i)


def _suffix(i: int) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(alphabet[(i // len(alphabet) ** k) % len(alphabet)] for k in range(5))


def filled_bodies() -> list[dict[str, Any]]:
    detector = filled_detector()
    bodies = [state.body() for state in detector.states.values()]
    for state in detector.states.values():
        state.cool()  # packed and unpacked again: the same body
    assert [state.body() for state in detector.states.values()] == bodies
    return bodies


def test_findings_with_every_optional_part_are_valid():
    for body in filled_bodies():
        check(body)


def _paths(value: Any, prefix: str = "") -> set[str]:
    if not isinstance(value, dict):
        return set()
    out = set()
    for key, sub in value.items():
        out.add(prefix + key)
        out |= _paths(sub, prefix + key + ".")
    return out


def _declared(schema: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key, sub in (schema.get("properties") or {}).items():
        out.add(prefix + key)
        out |= _declared(sub, prefix + key + ".")
    return out


def test_the_bodies_built_here_fill_every_field_the_finding_crd_declares():
    """Keeps this file honest: a field the CRD declares and no body here fills is either dead in
    the schema or a part of a Finding this file does not build yet (add it to filled_detector)."""
    crd = VALIDATORS[(GROUP, "Finding")].schema
    declared = {
        p
        for part in ("spec", "status")
        for p in _declared(crd["properties"][part], part + ".")
        if ".items." not in p
    }
    built = set().union(*(_paths(b) for b in filled_bodies()))
    assert declared - built == set()


@pytest.mark.parametrize(
    "where, field",
    [
        ("spec", "newField"),
        ("status", "newField"),
        ("status.outcomes", "newField"),
        ("status.origin", "newField"),
        ("status.pods.0", "newField"),
    ],
)
def test_a_field_a_finding_has_and_its_crd_lacks_is_refused(where, field):
    body = copy.deepcopy(filled_bodies()[0])
    check(body)
    node: Any = body
    for part in where.split("."):
        node = node[int(part)] if part.isdigit() else node[part]
    node[field] = "x"
    key = (body["apiVersion"], body["kind"])
    assert any(field in p for p in schemas.problems(VALIDATORS[key], body))


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b["status"].update(count=-1),  # minimum
        lambda b: b["spec"].update(severity="catastrophic"),  # enum
        lambda b: b["status"].update(lastSeen="yesterday"),  # format: date-time
        lambda b: b["status"].update(count=None),  # not nullable
        lambda b: b["status"]["ledger"].update(series=["x"] * 201),  # maxItems
        lambda b: b["status"]["ledger"].update(pods="x" * 601),  # maxLength
    ],
    ids=["minimum", "enum", "date-time", "null", "maxItems", "maxLength"],
)
def test_the_structural_limits_are_checked(change):
    body = copy.deepcopy(filled_bodies()[0])
    change(body)
    assert schemas.problems(VALIDATORS[(GROUP, "Finding")], body) != []


# -- configuration kinds' statuses --------------------------------------------------------------
def _with_status(body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """The object once the operator's status patch is in (config.py adds the transition time)."""
    status = copy.deepcopy(status)
    for cond in status.get("conditions") or []:
        cond["lastTransitionTime"] = "2026-11-18T10:00:00Z"
    return {**body, "status": status}


def _object(kind: str, name: str, spec: dict[str, Any], namespace: str | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "generation": 3, "uid": f"uid-{name}"}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": GROUP, "kind": kind, "metadata": meta, "spec": spec}


@pytest.mark.parametrize(
    "images", [["nginx:1.25.*", "corp/**"], ["NOT VALID", "good/image:*"], ["NOT VALID"]]
)
def test_allowedimages_statuses_are_valid(images):
    body = _object("AllowedImages", "a", {"images": images, "namespaces": ["team-*"]})
    check(body)
    kind = allowed_images(Detector(Allowlist()))
    check(_with_status(body, kind.status(kind.compile(body), body)))


@pytest.mark.parametrize(
    "spec",
    [{"names": ["trufflehog"]}, {"names": ["trufflehog", "Not/Valid"], "replaceDefaults": True}],
)
def test_scannerimages_statuses_are_valid(spec):
    body = _object("ScannerImages", "s", spec)
    check(body)
    kind = scanner_images(Detector(Allowlist()), frozenset(), DEFAULT_SCANNER_IMAGES)
    check(_with_status(body, kind.status(scanner_list_from_object(body), body)))


@pytest.mark.parametrize(
    "namespace, spec",
    [
        (
            "team",
            {
                "reason": "build cache",
                "workloads": ["cache"],
                "images": ["evil/*:*"],
                "expires": "2026-12-31T00:00:00Z",
            },
        ),
        ("team", {"reason": "until the fix", "expires": "2020-01-01T00:00:00Z"}),
        ("team", {"reason": "overreach", "namespaces": ["*"], "expires": "2026-12-31T00:00:00Z"}),
        ("team", {"reason": "no scanner here", "rules": ["*"], "expires": "2026-12-31T00:00:00Z"}),
        (
            OPERATOR_NAMESPACE,
            {
                "reason": "CI",
                "rules": ["suspicious"],
                "namespaces": ["ci-*"],
                "expires": "2026-12-31T00:00:00Z",
            },
        ),
    ],
)
def test_suppression_statuses_are_valid(namespace, spec):
    body = _object("Suppression", "x", spec, namespace)
    check(body)
    detector = filled_detector()
    kind = suppressions(detector, OPERATOR_NAMESPACE, lambda: None, Counter({"team/x": 3}))
    check(_with_status(body, kind.status(kind.compile(body), body)))


# -- OpenReports -------------------------------------------------------------------------------
def test_openreports_reports_are_valid():
    detector = filled_detector()
    namespaces = {state.namespace for state in detector.states.values()}
    reports = [report_for(ns, detector.states.values()) for ns in sorted(namespaces)]
    assert all(r is not None for r in reports)
    results = [result for r in reports for result in r["results"]]
    assert {r["result"] for r in results} == {"fail", "skip"}
    for report in reports:
        check(report)


# -- examples ----------------------------------------------------------------------------------
def test_every_example_is_valid():
    checked = 0
    for path in sorted(EXAMPLES.rglob("*.yaml")) + sorted(EXAMPLES.rglob("*.yml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and (doc.get("apiVersion"), doc.get("kind")) in VALIDATORS:
                check(doc)
                checked += 1
    assert checked >= 2


def test_a_date_time_must_be_rfc_3339():
    validator = VALIDATORS[(GROUP, "Suppression")]
    body = _object("Suppression", "x", {"reason": "r"}, "team")
    now = datetime.datetime(2026, 11, 18, 10, 0, tzinfo=datetime.UTC)
    for good in (now.strftime("%Y-%m-%dT%H:%M:%SZ"), now.isoformat(), "2026-11-18T10:00:00.5Z"):
        assert schemas.problems(validator, {**body, "spec": {"reason": "r", "expires": good}}) == []
    for bad in ("2026-11-18", "2026-11-18 10:00:00", "2026-13-18T10:00:00Z", "tomorrow"):
        assert schemas.problems(validator, {**body, "spec": {"reason": "r", "expires": bad}})
