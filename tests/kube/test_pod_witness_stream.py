"""The Pod witness' list + watch against the fake API: the first list is the start-up
inventory, watch lines of pods where nothing started are never parsed, DELETED forgets, a relist
after 410 keeps only the pods it lists, a configuration change lists and judges every pod again,
and liveness follows progress."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
from typing import Any

from fakeapi import Clock, line, serving, until

from pullwatch.core.observations import Running
from pullwatch.kube.health import Health
from pullwatch.kube.witnesses.pods import PodWitness


def pod(name: str, rv: int, started: str | None = "2026-11-18T11:06:40Z") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Pending"}
    if started is not None:
        status = {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "main",
                    "image": "kube-hunter:1",
                    "imageID": "docker.io/aquasec/kube-hunter@sha256:" + "ab" * 32,
                    "containerID": f"containerd://{name}",
                    "ready": True,
                    "state": {"running": {"startedAt": started}},
                }
            ],
        }
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": "a",
            "uid": f"u-{name}",
            "resourceVersion": str(rv),
        },
        "spec": {"nodeName": "n1", "containers": [{"name": "main", "image": "kube-hunter:1"}]},
        "status": status,
    }


def listing(rv: int, *items: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PodList", "metadata": {"resourceVersion": str(rv)}, "items": list(items)}


class Seen:
    def __init__(self) -> None:
        self.runs: list[Running] = []

    def __call__(self, run: Running) -> bool:
        self.runs.append(run)
        return True

    def pods(self) -> list[tuple[str, bool]]:
        return [(r.pod, r.at_startup) for r in self.runs]


async def no_wait(_: float) -> None:
    await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def running(witness: PodWitness):
    witness.stream.sleep = no_wait
    task = asyncio.create_task(witness.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_lists_the_inventory_then_watches_what_starts_changes_and_goes():
    async with serving() as (fake, api):
        fake.lists.extend([listing(10, pod("early", 5), pod("pending", 6, started=None))])
        damaged_pending = pod("pending", 11, started=None)
        damaged_pending["metadata"]["namespace"] = "Not_A_Namespace"  # skipped if parsed
        later = pod("later", 12)
        ready = copy.deepcopy(later)
        ready["metadata"]["resourceVersion"] = "14"
        ready["status"]["containerStatuses"][0]["ready"] = False  # a probe: nothing new ran
        fake.script_watch(
            line("MODIFIED", damaged_pending),  # no container started: never parsed
            line("ADDED", later),
            line("MODIFIED", ready),
            line("DELETED", pod("early", 15)),
            path="/api/v1/pods",
        )
        seen = Seen()
        witness = PodWitness(api, seen)
        async with running(witness):
            await until(lambda: len(witness.fingerprints) == 1 and witness.stream.rv == "15")
        assert seen.pods() == [("early", True), ("later", False)]
        assert witness.judged == 2 and not witness.skips  # the pending pod's line: unparsed
        watches = [p for m, p in fake.requests if "watch=1" in p]
        assert re.search(r"resourceVersion=10\b", watches[0])  # from the list's version


async def test_a_relist_forgets_pods_deleted_while_the_watch_was_gone():
    async with serving() as (fake, api):
        fake.lists.extend(
            [listing(10, pod("a", 5), pod("b", 6)), listing(30, pod("b", 6), pod("c", 25))]
        )
        fake.script_watch(
            line("ERROR", {"kind": "Status", "code": 410, "reason": "Expired"}),
            path="/api/v1/pods",
        )
        seen = Seen()
        witness = PodWitness(api, seen)
        async with running(witness):
            await until(lambda: witness.stream.relists == 2 and witness.stream.rv == "30")
        assert seen.pods() == [("a", True), ("b", True), ("c", False)]  # b not judged twice
        assert len(witness.fingerprints) == 2  # a is gone


async def test_a_configuration_change_lists_and_judges_every_pod_again():
    async with serving() as (fake, api):
        fake.lists.extend([listing(10, pod("a", 5)), listing(20, pod("a", 5))])
        judging = ["before"]
        seen = Seen()
        # each watch hangs: dropped as silent after 0.3 s, and asked again
        witness = PodWitness(
            api, seen, judging=lambda: judging[0], rejudge_every=0, read_timeout=0.3
        )
        async with running(witness):
            await until(lambda: len(seen.runs) == 1)
            judging[0] = "a digest was added"
            await until(lambda: len(seen.runs) == 2)
        assert seen.pods() == [("a", True), ("a", False)] and witness.stream.relists == 2


async def test_liveness_follows_the_pod_stream():
    clock = Clock()
    health = Health(clock=clock)
    async with serving() as (fake, api):
        fake.lists.append(listing(10, pod("a", 5)))
        fake.script_watch(line("ADDED", pod("b", 11)), path="/api/v1/pods")  # then it hangs
        witness = PodWitness(api, Seen(), health=health)
        health.watch(witness.name, allowed=60)
        async with running(witness):
            await until(lambda: witness.stream.rv == "11")
            clock.t += 59
            assert health.stuck() == []
            clock.t += 2  # a minute without progress
            assert health.stuck() == [f"{witness.name} (no progress for 61s)"]
