"""kube/writer.py against the fake API, on an injected clock: coalescing, order, backoff (per
Finding and in an outage), conflicts, a deleted Finding, names refused, and the drain."""

from __future__ import annotations

import asyncio

from fakeapi import serving
from findings import SCANNER_IMAGE, Setup

from pullwatch.core.state import FindingState


async def test_a_new_finding_is_written_after_the_flush_interval_and_repeats_are_coalesced():
    async with serving() as (fake, api):
        s = Setup(api)
        name = s.pull("ns1", "app-1")
        assert await s.write(after=0.1) == []  # not due yet
        assert await s.write(after=0.2) == [name]
        assert fake.count("POST") == 1 and fake.count("PUT") == 1
        for count in (2, 3, 4):  # the kubelet's repeats of the series
            s.pull("ns1", "app-1", count=count, repeat=True)
        assert await s.write(after=1.0) == []  # an existing Finding: at most every 2 s
        assert await s.write(after=1.1) == [name]
        assert fake.count("PUT") == 2  # three changes, one write
        assert fake.get(s.path(name))["status"]["count"] == 4


async def test_the_most_severe_new_finding_is_written_first():
    async with serving() as (_, api):
        s = Setup(api, concurrency=1)
        medium = [s.pull("ns1", f"app-{i}", f"evil/x{i}:1") for i in range(5)]
        scanner = s.pull("ns1", "hunter", SCANNER_IMAGE)
        assert await s.write() == [scanner]
        assert set(medium) == {n for _ in medium for n in await s.write()}


async def test_a_failed_write_backs_off_per_finding_and_is_retried_after_it():
    async with serving() as (fake, api):
        s = Setup(api)
        name = s.pull("ns1", "app-1")
        fake.fail("POST", "/findings$", 500, times=2)
        assert await s.write() == [name]  # fails: waits 2 s (x0.8-1.2) before the next try
        assert await s.write(after=1.5) == []
        assert await s.write(after=1.0) == [name]  # 2.5 s later; fails again: 4 s now
        assert await s.write(after=3.1) == []
        assert await s.write(after=1.8) == [name]  # 4.9 s later: written
        assert fake.get(s.path(name))["status"]["count"] == 1
        assert s.writer.dirty == {}


async def test_while_every_write_fails_the_wait_is_short_and_recovery_retries_everything():
    async with serving() as (fake, api):
        s = Setup(api)
        names = [s.pull("ns1", f"app-{i}", f"evil/x{i}:1") for i in range(3)]
        fake.fail("POST", "/findings$", 503, times=3 * 8)
        for _ in range(8):  # eight failures each: 2**8 s alone, but an outage caps it at 10 s
            await s.write(after=12.1)
        assert s.writer.outage
        assert sorted(await s.write(after=12.1)) == sorted(names)
        assert not s.writer.dirty


async def test_one_refused_finding_does_not_hurry_its_retries_when_others_succeed():
    async with serving() as (fake, api):
        s = Setup(api)
        refused = s.pull("quota", "app-1")
        fake.fail("POST", "/namespaces/quota/", 403, times=100)
        await s.write()
        await s.write(after=2.5)
        await s.write(after=4.9)  # three failures: 8 s now
        s.pull("ns2", "app-2")
        assert refused not in await s.write()  # the other one's success does not retry it
        assert refused in s.writer.dirty


async def test_a_conflict_is_reread_and_merged_and_a_deleted_finding_created_again():
    async with serving() as (fake, api):
        s = Setup(api)
        name = s.pull("ns1", "app-1", count=2)
        await s.write()
        stored = fake.get(s.path(name))
        fake.put(s.path(name), stored)  # someone else wrote it: the writer's version is stale
        s.pull("ns1", "app-1", count=5, repeat=True)
        await s.write(after=2.1)
        assert fake.count("GET") == 1 and fake.get(s.path(name))["status"]["count"] == 5
        del fake.objects[s.path(name)]  # deleted by someone
        s.pull("ns1", "app-1", count=6, repeat=True)
        await s.write(after=2.1)
        assert fake.count("POST") == 2 and fake.get(s.path(name))["status"]["count"] == 6


async def test_a_finding_whose_namespace_is_not_a_valid_name_is_never_put_in_a_path():
    async with serving() as (fake, api):
        s = Setup(api)
        good = s.detector.states[s.pull("ns1", "app-1", mark=False)]
        # decode_event refuses such an Event; the writer does not count on that
        ev = good.evidence()
        bad = FindingState(good.identity._replace(namespace="Bad..NS"), ev.origin, ev.ledger)
        s.detector.forget(good.name)
        s.detector.add(bad)
        s.writer.mark(bad.name)
        assert await s.write() == []
        assert fake.requests == [] and s.writer.dirty == {}


async def test_a_change_during_its_write_keeps_it_dirty_and_the_drain_writes_everything():
    async with serving() as (fake, api):
        s = Setup(api)
        fake.delay("PUT", "/status$", 0.2)
        names = [s.pull("ns1", f"app-{i}", f"evil/x{i}:1") for i in range(12)]
        first = s.seq - 11
        fake.fail("POST", "/findings$", 500, times=3)  # three of them back off
        s.clock.t += 0.3
        s.writer.pump()
        await asyncio.sleep(0.1)  # the first four are in flight
        s.seq, last = first, s.seq
        s.pull("ns1", "app-0", "evil/x0:1", count=3, repeat=True)
        s.seq = last
        left = await s.writer.drain(asyncio.get_running_loop().time() + 20)
        assert left == 0 and not s.writer.dirty
        counts = {n: fake.get(s.path(n))["status"]["count"] for n in names}
        assert counts[names[0]] == 3 and all(counts[n] == 1 for n in names[1:])


async def test_a_drain_that_takes_a_while_says_how_many_findings_are_left(monkeypatch, caplog):
    from pullwatch.kube import writer

    monkeypatch.setattr(writer, "DRAIN_REPORT", 0.05)
    async with serving() as (fake, api):
        s = Setup(api)
        fake.delay("PUT", "/status$", 0.2)  # every write takes longer than a report interval
        for i in range(6):
            s.pull("ns1", f"app-{i}", f"evil/x{i}:1")
        with caplog.at_level("INFO", logger="pullwatch.writer"):
            left = await s.writer.drain(asyncio.get_running_loop().time() + 20)
        assert left == 0
        said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stopping:")]
        left_said = [int(m.split()[1]) for m in said]
        assert said and all("Findings still to write" in m for m in said), said
        assert left_said[0] <= 6 and left_said == sorted(left_said, reverse=True), said


async def test_a_cancel_in_the_step_a_write_wakes_the_writer_still_stops_it():
    """Python 3.11's wait_for lost that cancel: the writer ran on, and SIGTERM hung for good."""
    async with serving() as (_, api):
        s = Setup(api)
        task = asyncio.create_task(s.writer.run())
        for _ in range(3):
            await asyncio.sleep(0)  # it waits for a wake-up
        s.writer._wake.set()  # what every completed write does
        task.cancel()
        for _ in range(10):
            await asyncio.sleep(0)
        assert task.cancelled(), "the writer's loop went on after its cancel"
