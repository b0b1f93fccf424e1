"""kube/custody.py against the fake API: adoption, tamper restore (spec, labels, counts, a corrupt
ledger - at start-up and while running), a deleted Finding written again at once, retention."""

from __future__ import annotations

import copy
import logging
from typing import Any

from fakeapi import serving
from findings import SCANNER_IMAGE, Setup

from pullwatch.core.findings import LABEL_KEEP, LABEL_SEVERITY
from pullwatch.core.state import FindingState
from pullwatch.kube.custody import Custody


def custody_of(s: Setup, api: Any, **kwargs: Any) -> Custody:
    kwargs.setdefault("retention_seconds", 30 * 86400)
    return Custody(api, s.detector, s.writer, clock=s.clock, **kwargs)


def edited_by(obj: dict[str, Any], manager: str, part: str) -> dict[str, Any]:
    """``obj`` as the API server shows it after ``manager`` changed ``part`` (managedFields)."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["managedFields"] = [
        {"manager": "pullwatch", "time": "2026-01-01T00:00:00Z", "fieldsV1": {"f:status": {}}},
        {"manager": manager, "time": "2026-01-01T00:00:01Z", "fieldsV1": {f"f:{part}": {}}},
    ]
    return obj


async def written(s: Setup, fake: Any, api: Any, image: str = SCANNER_IMAGE, count: int = 3):
    """A Finding written by a first operator, and a second one (its own detector, writer and
    custody) that has adopted it: (second setup, its custody, the Finding's name)."""
    first = Setup(api)
    name = first.pull("ns1", "hunter", image, count=count)
    await first.write()
    second = Setup(api)
    custody = custody_of(second, api)
    custody.on_event("ADDED", fake.get(first.path(name)), at_start=True)
    return second, custody, name


async def test_adoption_takes_the_count_and_an_untouched_finding_needs_no_write():
    async with serving() as (fake, api):
        s, custody, name = await written(Setup(api), fake, api)
        assert s.detector.states[name].count == 3
        assert await s.write(after=5) == [] and custody.restored == 0
        stored = fake.get(s.path(name))
        custody.on_event("MODIFIED", stored)  # the echo of its own version: nothing to do
        assert not s.writer.dirty


async def test_an_edited_spec_and_severity_label_are_put_back_and_peoples_labels_kept(caplog):
    async with serving() as (fake, api):
        s, custody, name = await written(Setup(api), fake, api)
        original = fake.get(s.path(name))
        tampered = copy.deepcopy(original)
        tampered["spec"]["severity"] = "informational"
        tampered["metadata"]["labels"][LABEL_SEVERITY] = "informational"
        tampered["metadata"]["labels"]["triage"] = "done"
        stored = fake.put(s.path(name), edited_by(tampered, "kubectl-edit", "spec"))
        with caplog.at_level(logging.WARNING):
            custody.on_event("MODIFIED", stored)
        assert "its spec was changed by kubectl-edit" in caplog.text
        await s.write()
        now = fake.get(s.path(name))
        assert now["spec"] == original["spec"]
        assert (
            now["metadata"]["labels"][LABEL_SEVERITY]
            == original["metadata"]["labels"][LABEL_SEVERITY]
        )
        assert now["metadata"]["labels"]["triage"] == "done"


async def test_a_rewritten_label_alone_is_put_back(caplog):
    async with serving() as (fake, api):
        s, custody, name = await written(Setup(api), fake, api)
        tampered = fake.get(s.path(name))
        severity = tampered["metadata"]["labels"][LABEL_SEVERITY]
        tampered["metadata"]["labels"][LABEL_SEVERITY] = "informational"
        with caplog.at_level(logging.WARNING):
            custody.on_event(
                "MODIFIED", fake.put(s.path(name), edited_by(tampered, "kubectl-label", "metadata"))
            )
        assert "labels (pullwatch.dev/severity=informational" in caplog.text
        assert "kubectl-label" in caplog.text
        await s.write()
        assert fake.get(s.path(name))["metadata"]["labels"][LABEL_SEVERITY] == severity


async def test_a_lowered_count_is_put_back():
    async with serving() as (fake, api):
        s, custody, name = await written(Setup(api), fake, api)
        tampered = fake.get(s.path(name))
        tampered["status"]["count"] = 0
        custody.on_event(
            "MODIFIED", fake.put(s.path(name), edited_by(tampered, "kubectl-patch", "status"))
        )
        await s.write(after=2.1)
        assert fake.get(s.path(name))["status"]["count"] == 3


async def test_a_corrupt_ledger_while_running_is_tamper_never_an_exception(caplog):
    async with serving() as (fake, api):
        s, custody, name = await written(Setup(api), fake, api)
        tampered = fake.get(s.path(name))
        tampered["status"]["ledger"] = {"v": 1, "series": ["not a series"], "closed": "x"}
        stored = fake.put(s.path(name), edited_by(tampered, "mallory", "status"))
        with caplog.at_level(logging.WARNING):
            custody.on_event("MODIFIED", stored)  # must not raise: it would stop the watch
        assert "made unreadable" in caplog.text and "mallory" in caplog.text
        await s.write(after=2.1)
        restored = FindingState.from_body(fake.get(s.path(name)))  # readable again
        assert restored.count == 3


async def test_a_corrupt_ledger_at_start_up_is_adopted_as_tamper_and_counted_again(caplog):
    async with serving() as (fake, api):
        first = Setup(api)
        name = first.pull("ns1", "hunter", SCANNER_IMAGE, count=3)
        await first.write()
        tampered = fake.get(first.path(name))
        tampered["status"]["ledger"] = "garbage"
        stored = fake.put(first.path(name), edited_by(tampered, "mallory", "status"))
        s = Setup(api)
        custody = custody_of(s, api)
        with caplog.at_level(logging.WARNING):
            custody.on_event("ADDED", stored, at_start=True)
        assert "made unreadable" in caplog.text and "while pullwatch was not running" in caplog.text
        assert name in s.detector.states  # not left alone as foreign: it is ours, tampered with
        s.seq = first.seq
        s.pull("ns1", "hunter", SCANNER_IMAGE, count=3, repeat=True)  # its Event, relisted
        await s.write(after=2.1)
        assert FindingState.from_body(fake.get(s.path(name))).count == 3


async def test_an_object_pullwatch_did_not_write_is_left_alone():
    async with serving() as (fake, api):
        s = Setup(api)
        custody = custody_of(s, api)
        for junk in (
            {"metadata": {"name": "hand-made", "namespace": "ns1"}, "spec": {}},
            {"metadata": {"name": 5}},
            {"metadata": "x"},
            {},
        ):
            custody.on_event("ADDED", junk, at_start=True)
            custody.on_event("MODIFIED", junk)
            custody.on_event("DELETED", junk)
        assert s.detector.states == {} and fake.requests == []


async def test_a_deleted_finding_is_written_again_at_once_with_peoples_labels(caplog):
    async with serving() as (fake, api):
        s, custody, name = await written(Setup(api), fake, api)
        told = []
        custody.on_deleted.append(lambda ns, n, obj: told.append((ns, n)))
        obj = fake.get(s.path(name))
        obj["metadata"]["labels"]["triage"] = "assigned"
        del fake.objects[s.path(name)]
        with caplog.at_level(logging.WARNING):
            custody.on_event("DELETED", obj)
        assert "was deleted, not by pullwatch" in caplog.text and told == [("ns1", name)]
        assert await s.write(after=0.3) == [name]  # a new Finding's delay, not the next pull
        back = fake.get(s.path(name))
        assert back["status"]["count"] == 3 and back["metadata"]["labels"]["triage"] == "assigned"
        assert custody.recreated == 1


async def test_retention_deletes_stale_findings_unless_kept_and_its_own_delete_is_not_undone():
    async with serving() as (fake, api):
        s = Setup(api)
        custody = custody_of(s, api, retention_seconds=3600)
        stale = s.pull("ns1", "old-1", "evil/old:1")
        kept = s.pull("ns1", "kept-1", "evil/kept:1")
        await s.write()
        stale_path = s.path(stale)
        labelled = fake.get(s.path(kept))
        labelled["metadata"]["labels"][LABEL_KEEP] = "true"
        custody.on_event("MODIFIED", fake.put(s.path(kept), labelled))
        last = s.detector.states[stale].last_seen  # the kubelet's stamps (tests/kubelet.py)
        assert last is not None
        assert await custody.sweep(now=2_000_000_000) == 1
        assert fake.get(stale_path) is None and fake.get(s.path(kept)) is not None
        delete = next(b for m, p, b in fake.bodies if m == "DELETE")
        assert delete["preconditions"]["resourceVersion"]
        custody.on_event("DELETED", {"metadata": {"name": stale, "namespace": "ns1"}})
        assert stale not in s.writer.dirty and custody.recreated == 0
