"""kube/paging.py against the fake API: a list page over the byte bound is asked again smaller
(the same continue token), every object is still handed over exactly once, an object over the
bound on its own is skipped and counted and the list goes on, and no answer is held in more than
the bound - for the Event and Pod streams, custom resources (their List metadata comes after the
items) and the configuration kinds."""

from __future__ import annotations

import re
from collections import Counter
from urllib.parse import parse_qs, urlsplit

from fakeapi import serving, until
from test_stream import event, make, running

from pullwatch.kube import metrics
from pullwatch.kube.config import Configs
from pullwatch.kube.paging import pages

EVENTS = "/api/v1/namespaces/a/events"
BOUND = 32 * 1024


def lists(fake, path: str) -> list[tuple[int, str]]:
    """(limit, continue) of each list request of ``path``, in order."""
    out = []
    for method, where in fake.requests:
        url = urlsplit(where)
        if method == "GET" and url.path == path and "watch" not in url.query:
            q = parse_qs(url.query)
            out.append((int(q["limit"][0]), q.get("continue", [""])[0]))
    return out


def store(fake, path: str, n: int, size: int, big: dict[int, int] | None = None) -> None:
    for i in range(n):
        body = event(f"e{i:03d}", 0, message='Pulling image "x"' + "A" * (big or {}).get(i, size))
        fake.put(f"{path}/e{i:03d}", body)


async def test_a_page_over_the_bound_is_asked_again_smaller_and_each_object_seen_once():
    async with serving() as (fake, api):
        store(fake, EVENTS, 60, 6_000)  # 60 x 6 KB: a page of them all is 11 times the bound
        seen: list[tuple[str, str]] = []
        stream = make(api, seen, max_page=BOUND)
        stream.path = EVENTS
        async with running(stream):
            await until(lambda: stream.synced.is_set())
        names = Counter(name for kind, name in seen if kind == "ADDED")
        assert names == Counter(f"e{i:03d}" for i in range(60))  # each exactly once
        asked = lists(fake, EVENTS)
        assert asked[0] == (500, "")
        assert [limit for limit, _ in asked[:4]] == [500, 250, 125, 62]  # halved, no token yet
        for (limit, token), (again, then) in zip(asked, asked[1:], strict=False):
            if then == token:  # the same page asked again: only ever with fewer objects
                assert again < limit
        assert api.largest_read <= BOUND
        assert stream.oversize == 0


async def test_the_limit_grows_back_once_the_big_objects_are_past():
    async with serving() as (fake, api):
        # 5 objects of 12 KB among 200 small ones: a page of three of them is over the bound
        store(fake, EVENTS, 200, 100, big={i: 12_000 for i in range(20, 25)})
        got = []
        async for page in pages(api, EVENTS, limit=40, max_page=BOUND, target=BOUND // 2):
            got += [item["metadata"]["name"] for item in page.items]
        assert got == [f"e{i:03d}" for i in range(200)]
        limits = [limit for limit, _ in lists(fake, EVENTS)]
        assert min(limits) < 5 and limits[-1] == 40, limits
        assert api.largest_read <= BOUND


async def test_an_object_over_the_bound_alone_is_skipped_counted_and_the_list_completes():
    async with serving() as (fake, api):
        store(fake, EVENTS, 6, 100, big={2: 3 * BOUND})  # e002 alone is three times the bound
        seen: list[tuple[str, str]] = []
        stream = make(api, seen, max_page=BOUND, metric="events-test")
        stream.path = EVENTS
        before = metrics.OVERSIZE.labels("events-test")._value.get()
        async with running(stream):
            await until(lambda: stream.synced.is_set())
            await until(lambda: fake.count("GET", "watch=1"))  # and it watches from the list
        assert [name for _, name in seen] == ["e000", "e001", "e003", "e004", "e005"]
        assert stream.oversize == 1
        assert metrics.OVERSIZE.labels("events-test")._value.get() == before + 1
        assert (1, "2") in lists(fake, EVENTS)  # it came down to e002 alone...
        assert re.search(r"continue=3", " ".join(p for _, p in fake.requests))  # ...and past it
        assert api.largest_read <= BOUND


async def test_custom_resources_list_metadata_after_the_items_and_are_bounded_the_same():
    path = "/apis/pullwatch.dev/v1alpha1/suppressions"
    async with serving() as (fake, api):
        store(fake, path, 8, 5_000, big={0: 2 * BOUND, 7: 2 * BOUND})  # first and last too big
        got, skipped = [], 0
        async for page in pages(api, path, limit=500, max_page=BOUND):
            got += [item["metadata"]["name"] for item in page.items]
            skipped += page.skipped is not None
            assert page.resource_version == str(fake.rv)
        assert got == [f"e{i:03d}" for i in range(1, 7)] and skipped == 2
        assert lists(fake, path)[-1][0] == 1  # the last page: the big one alone, no token after
        assert api.largest_read <= BOUND


async def test_the_pod_witness_lists_within_the_bound():
    from test_pod_witness_stream import pod

    from pullwatch.kube.witnesses.pods import PodWitness

    async with serving() as (fake, api):
        for i in range(30):
            body = pod(f"p{i:02d}", 0)
            body["metadata"]["annotations"] = {"filler": "x" * 4_000}  # a tenant's pods are big
            fake.put(f"/api/v1/namespaces/a/pods/p{i:02d}", body)
        ran = []
        witness = PodWitness(
            api, lambda run: ran.append(run.pod) or False, namespace="a", read_timeout=5
        )
        witness.stream.max_page = 16 * 1024
        async with running(witness.stream):
            await until(lambda: witness.stream.synced.is_set())
        assert sorted(ran) == [f"p{i:02d}" for i in range(30)]
        assert len(lists(fake, "/api/v1/namespaces/a/pods")) > 2 and api.largest_read <= 16 * 1024


async def test_the_configuration_kinds_list_within_the_bound_and_skip_what_is_over_it():
    from test_config import PATH, kind, obj

    async with serving() as (fake, api):
        for i in range(12):
            body = obj(f"s{i:02d}", f"u{i}", 0, reason="r" * (3 * BOUND if i == 5 else 3_000))
            fake.put(f"{PATH}/s{i:02d}", body)
        installed: list[list[str]] = []
        configs = Configs(api, kind(installed))
        configs.max_page = BOUND
        before = metrics.OVERSIZE.labels("suppressions")._value.get()
        await configs.load()
        names = sorted(b["metadata"]["name"] for b in configs.objects.values())
        assert names == [f"s{i:02d}" for i in range(12) if i != 5]
        assert metrics.OVERSIZE.labels("suppressions")._value.get() == before + 1
        assert api.largest_read <= BOUND
