"""kube/workloads.py against the fake API: owners are read, names that are not names are never
put in a URL, and a flush answers every waiting lookup with the inferred workload."""

from __future__ import annotations

import asyncio
import contextlib

from fakeapi import serving, until

from pullwatch.kube.workloads import WorkloadResolver


def pod(namespace: str, name: str, owner: tuple[str, str] | None) -> dict:
    meta: dict = {"name": name, "namespace": namespace, "labels": {"pod-template-hash": "7d9f8"}}
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": owner[0],
                "name": owner[1],
                "uid": "u",
                "controller": True,
            }
        ]
    return {"kind": "Pod", "metadata": meta}


async def test_owners_are_followed_to_the_deployment():
    async with serving() as (fake, api):
        fake.put(
            "/api/v1/namespaces/ns1/pods/web-7d9f8-x",
            pod("ns1", "web-7d9f8-x", ("ReplicaSet", "web-7d9f8")),
        )
        fake.put(
            "/apis/apps/v1/namespaces/ns1/replicasets/web-7d9f8",
            {
                "metadata": {
                    "name": "web-7d9f8",
                    "ownerReferences": [
                        {"kind": "Deployment", "name": "web", "uid": "d", "controller": True}
                    ],
                }
            },
        )
        resolver = WorkloadResolver(api)
        workload = await resolver.resolve("ns1", "web-7d9f8-x")
        assert (workload.kind, workload.name, workload.source) == ("Deployment", "web", "read")


async def test_names_that_are_not_names_never_reach_a_url():
    async with serving() as (fake, api):
        fake.put(
            "/api/v1/namespaces/ns1/pods/evil-1",
            pod("ns1", "evil-1", ("ReplicaSet", "../../secrets/x")),
        )
        resolver = WorkloadResolver(api)
        await resolver.resolve("ns1", "../../api/v1/secrets")
        await resolver.resolve("../kube-system", "web-1")
        await resolver.resolve("ns1", "evil-1")  # its owner's name is a path
        assert [p for _, p in fake.requests] == ["/api/v1/namespaces/ns1/pods/evil-1"]


async def test_a_flush_answers_every_waiting_lookup_with_the_inferred_workload():
    async with serving() as (fake, api):
        fake.delay("GET", "/pods/", 30)
        resolver = WorkloadResolver(api, concurrency=3)  # one of them for urgent lookups
        answers: dict[str, str] = {}
        for i in range(6):
            pod_name = f"job{i}-x7k2p"
            resolver.request(
                "ns1", pod_name, 1, lambda w, p=pod_name: answers.setdefault(p, w.source)
            )
        task = asyncio.create_task(resolver.run())
        await until(lambda: fake.count("GET", "/pods/") == 2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert resolver.flush() == 6
        assert len(answers) == 6 and set(answers.values()) == {"inferred"}


async def test_one_namespace_flooding_the_urgent_queue_does_not_hold_another_back():
    """A tenant's forged scanner pulls (urgent, one read each) fill only its own share of the
    queue; past it they are inferred from their names, and a pull elsewhere waits behind that
    share at most."""
    async with serving() as (fake, api):
        fake.delay("GET", "/pods/", 30)  # no read finishes while the queue is looked at
        resolver = WorkloadResolver(api, concurrency=2, namespace_limit=5)
        answers: dict[tuple[str, str], str] = {}
        for i in range(40):
            pod_name = f"hunter{i}-x7k2p"
            resolver.request(
                "attacker",
                pod_name,
                0,
                lambda w, p=pod_name: answers.setdefault(("a", p), w.source),
            )
        resolver.request(
            "prod", "web-x7k2p", 0, lambda w: answers.setdefault(("p", "web"), w.source)
        )
        assert sum(1 for (ns, _), s in answers.items() if ns == "a" and s == "inferred") == 35
        queued = [key for _, _, key in resolver._queue]
        assert queued.count(("prod", "web-x7k2p")) == 1 and len(queued) == 6
        assert resolver.flush() == 6
