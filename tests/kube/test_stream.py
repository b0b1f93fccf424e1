"""kube/stream.py against the fake API: list then watch, 410, silence, oversize lines, the
pre-filter, and liveness as progress (health with an injected clock)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import orjson
from fakeapi import HANG, Clock, line, serving, until

from pullwatch.kube.health import Health
from pullwatch.kube.stream import ListWatch

PATH = "/api/v1/events"


def event(name: str, rv: int, message: str = 'Pulling image "x"', **extra: Any) -> dict[str, Any]:
    return {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": "a",
            "uid": f"u-{name}",
            "resourceVersion": str(rv),
        },
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "a", "resourceVersion": "9999"},
        "reason": "Pulling",
        "message": message,
        **extra,
    }


def listing(rv: int, *items: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "EventList", "metadata": {"resourceVersion": str(rv)}, "items": list(items)}


def watch_versions(fake) -> list[str]:
    """The resourceVersion each watch request asked for, in order."""
    return [
        re.search(r"resourceVersion=(\d*)", p).group(1)
        for m, p in fake.requests
        if m == "GET" and "watch=1" in p
    ]


async def no_wait(_: float) -> None:
    await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def running(stream: ListWatch):
    task = asyncio.create_task(stream.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def make(api, seen, **kwargs) -> ListWatch:
    kwargs.setdefault("sleep", no_wait)
    return ListWatch(
        api,
        PATH,
        lambda kind, obj: seen.append((kind, obj["metadata"]["name"])),
        name="s",
        **kwargs,
    )


async def test_lists_then_watches_from_the_lists_version_and_relists_on_410():
    async with serving() as (fake, api):
        fake.lists.extend([listing(10, event("a", 5)), listing(30, event("a", 5), event("c", 25))])
        fake.script_watch(
            line("ADDED", event("b", 11)),
            line("ERROR", {"kind": "Status", "code": 410, "reason": "Expired"}),
        )
        seen: list[tuple[str, str]] = []
        stream = make(api, seen)
        async with running(stream):
            await until(lambda: ("ADDED", "c") in seen)
        assert seen == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "a"), ("ADDED", "c")]
        assert stream.relists == 2 and watch_versions(fake)[:2] == ["10", "30"]


async def test_a_watch_refused_with_410_lists_again():
    async with serving() as (fake, api):
        fake.lists.extend([listing(10), listing(20, event("z", 19))])
        fake.script_watch(410)
        seen: list[tuple[str, str]] = []
        stream = make(api, seen)
        async with running(stream):
            await until(lambda: ("ADDED", "z") in seen)
        assert stream.relists == 2


async def test_a_silent_watch_is_dropped_and_resumed_from_where_it_got_to():
    async with serving() as (fake, api):
        fake.lists.append(listing(10))
        fake.script_watch(line("ADDED", event("b", 12)), HANG)
        fake.script_watch(line("ADDED", event("c", 13)))
        seen: list[tuple[str, str]] = []
        stream = make(api, seen, read_timeout=0.3)
        async with running(stream):
            await until(lambda: ("ADDED", "c") in seen)
        assert stream.silences == 1
        assert watch_versions(fake)[:2] == ["10", "12"]


async def test_an_oversize_line_is_skipped_counted_and_the_stream_moves_past_it():
    big = line("ADDED", event("big", 12, message='Pulling image "x"' + "A" * 20_000))
    async with serving() as (fake, api):
        fake.lists.append(listing(10))
        # the oversize line arrives in many chunks, the next line in the same chunk as its end
        chunks = [big[i : i + 1000] for i in range(0, len(big), 1000)]
        chunks[-1] += line("ADDED", event("after", 13))
        fake.script_watch(*chunks, 0.05)
        seen: list[tuple[str, str]] = []
        stream = make(api, seen, max_line=4096)
        async with running(stream):
            await until(lambda: len(watch_versions(fake)) >= 2)
        assert seen == [("ADDED", "after")]
        assert stream.oversize == 1 and stream.rv == "13"
        assert watch_versions(fake)[1] == "13"


async def test_an_oversize_line_at_the_end_of_a_watch_still_advances_the_version():
    big = line("ADDED", event("big", 12, message="A" * 9000))
    async with serving() as (fake, api):
        fake.lists.append(listing(10))
        fake.script_watch(big)
        seen: list[tuple[str, str]] = []
        stream = make(api, seen, max_line=4096)
        async with running(stream):
            await until(lambda: len(watch_versions(fake)) >= 2)
        assert seen == [] and watch_versions(fake)[1] == "12"


async def test_the_pre_filter_skips_unparsed_lines_but_the_version_follows_them():
    async with serving() as (fake, api):
        fake.lists.append(listing(10))
        noise = event("n", 14, message="Started container web")
        noise["involvedObject"]["resourceVersion"] = "99999"  # written by the Event's author
        fake.script_watch(line("ADDED", event("p", 12)) + line("ADDED", noise))
        seen: list[tuple[str, str]] = []
        stream = make(api, seen, candidate=b'image \\"')
        async with running(stream):
            await until(lambda: len(watch_versions(fake)) >= 2)
        assert seen == [("ADDED", "p")]
        assert watch_versions(fake)[1] == "14"


async def test_a_watch_cut_mid_line_is_not_handed_over_and_is_resumed():
    async with serving() as (fake, api):
        fake.lists.append(listing(10))
        whole = line("ADDED", event("b", 12))
        fake.script_watch(line("ADDED", event("a", 11)) + whole[:30])
        fake.script_watch(whole)
        seen: list[tuple[str, str]] = []
        stream = make(api, seen)
        async with running(stream):
            await until(lambda: ("ADDED", "b") in seen)
        assert seen == [("ADDED", "a"), ("ADDED", "b")]
        assert watch_versions(fake)[:2] == ["10", "11"]


async def _beats_while_failing(stream: ListWatch, fake, health: Health, clock: Clock) -> list[str]:
    """Move the clock past the allowed silence, let the stream fail three more times: what
    the health says then."""
    async with running(stream):
        await until(lambda: len(fake.requests) >= 3)
        clock.t += 100
        before = len(fake.requests)
        await until(lambda: len(fake.requests) >= before + 3)
        return health.stuck()


async def test_failing_on_the_same_data_again_and_again_fails_liveness():
    clock = Clock()
    health = Health(clock=clock)
    health.watch("s", allowed=60)

    def handle(kind: str, obj: dict[str, Any]) -> None:
        if obj["metadata"]["name"] == "poison":
            raise ValueError("cannot handle it")

    async with serving() as (fake, api):
        fake.lists.append(listing(10))
        for _ in range(50):
            fake.script_watch(line("ADDED", event("poison", 11)))
        stream = ListWatch(api, PATH, handle, name="s", health=health, sleep=no_wait)
        stuck = await _beats_while_failing(stream, fake, health, clock)
        assert stuck and stuck[0].startswith("s (no progress")
        assert set(watch_versions(fake)) == {"10"}  # never past the line it fails on


async def test_waiting_on_an_api_server_that_refuses_is_not_stuck_and_progress_beats():
    clock = Clock()
    health = Health(clock=clock)
    health.watch("s", allowed=60)
    async with serving() as (fake, api):
        fake.fail("GET", "/api/v1/events", 503, times=1000)
        stream = ListWatch(api, PATH, lambda *_: None, name="s", health=health, sleep=no_wait)
        assert await _beats_while_failing(stream, fake, health, clock) == []


async def test_a_healthy_quiet_stream_beats_on_every_clean_end_of_a_watch():
    clock = Clock()
    health = Health(clock=clock)
    health.watch("s", allowed=60)
    async with serving() as (fake, api):
        fake.lists.append(listing(10))
        for _ in range(50):
            fake.script_watch(0.001)  # the server ends each watch, nothing in it
        stream = ListWatch(api, PATH, lambda *_: None, name="s", health=health, sleep=no_wait)
        assert await _beats_while_failing(stream, fake, health, clock) == []


async def test_bookmarks_move_the_version():
    bookmark = orjson.dumps(
        {"type": "BOOKMARK", "object": {"kind": "Event", "metadata": {"resourceVersion": "77"}}}
    )
    async with serving() as (fake, api):
        fake.lists.append(listing(10))
        fake.script_watch(bookmark + b"\n")
        stream = make(api, [], candidate=b'image \\"')
        async with running(stream):
            await until(lambda: len(watch_versions(fake)) >= 2)
        assert watch_versions(fake)[1] == "77"
