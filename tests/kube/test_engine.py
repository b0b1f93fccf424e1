"""The engine against the fake API: what it received is counted and written at a stop (pulls
still waiting for a workload read too), and a task that crashes takes the whole engine down,
drained, before the supervisor starts another."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fakeapi import line, serving, until

from kubelet import image_event
from pullwatch.kube import app
from pullwatch.kube.engine import Engine, Options
from pullwatch.kube.health import Health
from pullwatch.kube.quietlog import Quiet
from pullwatch.kube.upkeep import Upkeep

FINDINGS = "/apis/pullwatch.dev/v1alpha1/namespaces/ns1/findings/"


def options(**kwargs: Any) -> Options:
    kwargs.setdefault("flush_interval", 0.05)
    kwargs.setdefault("status_interval", 0.1)
    kwargs.setdefault("census_interval", 3600)
    kwargs.setdefault("maintenance_interval", 3600)
    return Options(**kwargs)


def pulls(n: int, rv: int = 500) -> bytes:
    out = b""
    for i in range(n):
        ev = image_event("Pulling", "ns1", f"app{i}-7d9f8b6c5d-x7k2p", f"evil/m{i}:1", seq=i)
        ev["metadata"]["resourceVersion"] = str(rv + i)
        out += line("ADDED", ev)
    return out


def written_pulls(fake) -> int:
    return sum(
        (o.get("status") or {}).get("count", 0)
        for p, o in fake.objects.items()
        if p.startswith(FINDINGS)
    )


async def test_a_stop_counts_the_pulls_still_waiting_for_their_workload_and_writes_them():
    async with serving() as (fake, api):
        fake.delay("GET", "/pods/", 30.0)  # every workload read hangs
        fake.script_watch(pulls(10), path="/api/v1/events")
        engine = Engine(api, options(), Health(), Quiet(__import__("logging").getLogger("t")))
        task = asyncio.create_task(engine.run())
        await until(lambda: fake.count("GET", "/pods/") >= 3)  # reads under way, the rest queued
        assert written_pulls(fake) == 0
        left = await engine.stop(grace=10)
        await asyncio.gather(task, return_exceptions=True)
        assert left == 0
        assert written_pulls(fake) == 10
        findings = [o for p, o in fake.objects.items() if p.startswith(FINDINGS)]
        assert all(o["spec"]["workload"]["source"] == "inferred" for o in findings)


async def test_a_crashed_task_stops_the_engine_drained_before_a_new_one_starts(monkeypatch):
    monkeypatch.setattr(app, "PEERING_CHECK", 0.05)
    monkeypatch.setattr(app, "CRASH_PAUSE", 0.05)
    crashed = []

    def census(self) -> None:
        if not crashed and rt.engine is not None and rt.engine.pulls >= 3:
            crashed.append(rt.engine)
            raise RuntimeError("census broke")

    monkeypatch.setattr(Upkeep, "census", census)
    async with serving() as (fake, api):
        fake.script_watch(pulls(3), path="/api/v1/events")
        rt = app.Runtime(options(census_interval=0.05), True, "p", 1)
        rt.api = api
        supervisor = asyncio.create_task(rt.supervise())
        try:
            await until(lambda: crashed and rt.engine is not None and rt.engine is not crashed[0])
            old = crashed[0]
            assert all(t.done() for t in old._tasks)  # no old writer or stream left running
            assert not old.writer.dirty and written_pulls(fake) == 3  # drained first
            await until(lambda: rt.engine.started.is_set())
        finally:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
            await rt.stop_engine(grace=5)


async def test_a_pull_seen_by_the_event_watch_and_the_audit_webhook_counts_once():
    from kubelet import audit_entries
    from pullwatch.kube.auditserver import AuditQueue

    async with serving() as (fake, api):
        ev = image_event("Pulling", "ns1", "web-7d9f8b6c5d-x7k2p", "evil/miner:1", node="node-1")
        ev["metadata"]["resourceVersion"] = "600"
        fake.script_watch(line("ADDED", ev), path="/api/v1/events")
        queue = AuditQueue(1 << 20)
        engine = Engine(
            api, options(), Health(), Quiet(__import__("logging").getLogger("t")), queue
        )
        task = asyncio.create_task(engine.run())
        try:
            await until(lambda: written_pulls(fake) == 1)
            (entry,) = audit_entries(ev, "a-1", stages=("ResponseComplete",), node="node-1")
            queue.offer(
                orjson.dumps(
                    {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [entry]}
                )
            )

            def verified() -> bool:
                return any(
                    (o.get("status") or {}).get("reporters", {}).get("verified") == 1
                    for p, o in fake.objects.items()
                    if p.startswith(FINDINGS)
                )

            await until(verified)

            def spec_says_verified() -> bool:  # learned after it was made: written to its spec
                return any(
                    (o["spec"].get("reportedBy") or {}).get("verified") is True
                    for p, o in fake.objects.items()
                    if p.startswith(FINDINGS)
                )

            await until(spec_says_verified)
            await until(lambda: not engine.writer.dirty)
            assert written_pulls(fake) == 1 and engine.pulls == 1
            assert engine.custody.restored == 0  # pullwatch's own change is not tampering
        finally:
            await engine.stop(grace=5)
            await asyncio.gather(task, return_exceptions=True)


async def test_a_suppressions_expiry_is_judged_at_the_operators_clock_not_the_events_own_time():
    """A tenant who patches a pull Event's time back to before a Suppression expired must not get
    its cover: the Event's time is the author's claim."""
    import time

    from kubelet import EPOCH
    from pullwatch.core.pulls import decode_event
    from pullwatch.core.suppressions import Suppressions, suppression_from_object
    from pullwatch.kube.api import Api

    now = time.time()

    def rfc3339(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    expired = suppression_from_object(
        {
            "apiVersion": "pullwatch.dev/v1alpha1",
            "kind": "Suppression",
            "metadata": {
                "name": "old",
                "namespace": "ns1",
                "creationTimestamp": rfc3339(now - 10 * 86400),
            },
            "spec": {"reason": "r", "expires": rfc3339(now - 86400)},
        },
        "pullwatch-system",
    )
    assert expired.usable and expired.expired(now) and not expired.expired(now - 2 * 86400)
    engine = Engine(Api(None), options(), Health(), Quiet(__import__("logging").getLogger("t")))
    engine.detector.suppressions = Suppressions([expired])
    backdated = image_event(
        "Pulling", "ns1", "app-7d9f8b6c5d-x7k2p", "evil/miner:1", t=int(now - 2 * 86400 - EPOCH)
    )
    assert engine.observe(decode_event(backdated))
    (state,) = engine.detector.states.values()
    assert state.suppression is None


async def test_a_task_that_ignores_its_cancel_neither_hangs_the_stop_nor_starves_the_drain(
    monkeypatch, caplog
):
    """Python 3.11's wait_for once made the writer ignore its cancel: SIGTERM then hung for good.
    Whatever task does that now, the stop goes on, the drain writes everything, and the process
    is ended (no second engine beside what is left of the first)."""
    release = asyncio.Event()

    async def deaf_census_loop(self) -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass

    monkeypatch.setattr(Upkeep, "census_loop", deaf_census_loop)
    left_with: list[int] = []
    monkeypatch.setattr(app, "leave_stuck", left_with.append)  # not os._exit in the test run
    async with serving() as (fake, api):
        fake.script_watch(pulls(5), path="/api/v1/events")
        # nothing written before the stop: the drain, after the deaf task's wait, writes it all
        rt = app.Runtime(options(flush_interval=3600, status_interval=3600), True, "p", 1)
        rt.api = api
        supervisor = asyncio.create_task(rt.supervise())
        await until(lambda: rt.engine is not None and rt.engine.pulls >= 5)
        assert written_pulls(fake) == 0
        supervisor.cancel()
        await asyncio.gather(supervisor, return_exceptions=True)
        engine, task = rt.engine, rt.task
        with caplog.at_level("ERROR"):
            async with asyncio.timeout(120):  # a regression fails here, instead of hanging
                left = await rt.stop_engine(grace=2)
        assert left == 0 and written_pulls(fake) == 5  # the drain had its time
        assert [t.get_name() for t in engine.stuck] == ["census"]
        assert left_with == [0], "the process was not ended"
        assert caplog.text.count("did not stop when cancelled") == 1, caplog.text
        assert "the stop goes on: census" in caplog.text
        release.set()
        await asyncio.gather(task, return_exceptions=True)
