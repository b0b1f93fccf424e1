"""kube/config.py: the configuration kinds' list and watch race each other; what is in force is
always the newest version seen, and nothing deleted comes back."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from fakeapi import line, serving, until

from pullwatch.core.allowlist import Allowlist
from pullwatch.core.budgets import NAMESPACE_BUDGET
from pullwatch.core.detector import Detector
from pullwatch.kube import metrics
from pullwatch.kube.config import _META, Configs, Kind
from pullwatch.kube.kinds import suppressions
from pullwatch.kube.stream import ListWatch

PATH = "/apis/pullwatch.dev/v1alpha1/suppressions"


def obj(name: str, uid: str, rv: int, generation: int = 1, reason: str = "r") -> dict[str, Any]:
    return {
        "apiVersion": "pullwatch.dev/v1alpha1",
        "kind": "Suppression",
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": uid,
            "resourceVersion": str(rv),
            "generation": generation,
        },
        "spec": {"reason": reason},
    }


def kind(installed: list[list[str]]) -> Kind:
    return Kind(
        "Suppression",
        "suppressions",
        True,
        lambda body: body["spec"]["reason"],
        lambda in_force: installed.append(list(in_force)),
        lambda compiled, body: {"conditions": [{"type": "Ready", "status": "True"}]},
    )


async def test_a_deleted_object_is_not_brought_back_by_a_stale_list_page():
    async with serving() as (fake, api):
        installed: list[list[str]] = []
        configs = Configs(api, kind(installed))
        configs.apply("DELETED", obj("s1", "u1", 12))  # the watch saw the delete first
        fake.lists.append({"metadata": {"resourceVersion": "10"}, "items": [obj("s1", "u1", 10)]})
        await configs.load()
        assert configs.objects == {} and installed[-1] == []
        configs.apply("MODIFIED", obj("s1", "u1", 13))  # nothing after a DELETED revives a uid
        await configs.rebuild()
        assert installed[-1] == []


async def test_an_older_version_never_replaces_a_newer_one():
    async with serving() as (fake, api):
        installed: list[list[str]] = []
        configs = Configs(api, kind(installed))
        configs.apply("MODIFIED", obj("s1", "u1", 20, generation=2, reason="new"))
        fake.lists.append(
            {"metadata": {"resourceVersion": "15"}, "items": [obj("s1", "u1", 15, reason="old")]}
        )
        await configs.load()
        assert installed[-1] == ["new"]


async def test_a_recreated_object_of_the_same_name_is_a_new_uid_and_counts():
    async with serving() as (_, api):
        installed: list[list[str]] = []
        configs = Configs(api, kind(installed))
        configs.apply("ADDED", obj("s1", "u1", 10, reason="first"))
        configs.apply("DELETED", obj("s1", "u1", 11))
        configs.apply("ADDED", obj("s1", "u2", 12, reason="second"))
        await configs.rebuild()
        assert installed[-1] == ["second"]


async def test_objects_with_names_the_api_server_would_refuse_are_ignored():
    async with serving() as (_, api):
        installed: list[list[str]] = []
        configs = Configs(api, kind(installed))
        bad = obj("../../x", "u1", 10)
        configs.apply("ADDED", bad)
        configs.apply("ADDED", {**obj("ok", "u2", 11), "metadata": {"uid": "u2", "name": "ok"}})
        await configs.rebuild()
        assert installed[-1] == []


async def test_a_list_that_fails_is_retried_and_nothing_is_in_force_before_it_worked():
    async with serving() as (fake, api):
        installed: list[list[str]] = []
        configs = Configs(api, kind(installed))
        fake.lists.extend(
            [500, {"metadata": {"resourceVersion": "5"}, "items": [obj("a", "u", 5)]}]
        )
        await asyncio.wait_for(configs.load(), 10)
        assert installed == [["r"]]


async def test_what_a_failed_list_read_is_dropped_when_the_list_that_worked_no_longer_has_it():
    """A list fails after its first page (u1 applied); by the retry u1 was deleted: the list
    that works does not hold it, so it is not in force."""
    async with serving() as (fake, api):
        installed: list[list[str]] = []
        configs = Configs(api, kind(installed))
        first = {"metadata": {"resourceVersion": "5", "continue": "page2"}}
        fake.lists.extend(
            [
                {**first, "items": [obj("a", "u1", 5, reason="gone")]},
                500,
                {"metadata": {"resourceVersion": "6"}, "items": [obj("b", "u2", 6, reason="kept")]},
            ]
        )
        assert await asyncio.wait_for(configs.load(), 10) == "6"
        assert installed[-1] == ["kept"] and set(configs.objects) == {"u2"}


async def test_the_watch_outlives_a_404_and_a_relist_forgets_what_was_deleted_meanwhile():
    """An API server that restarts answers 404 for a custom resource until it has loaded the
    CRDs again: the watch resumes (it is not the end of the operator); its resourceVersion has
    expired by then, and the list after the 410 no longer holds what was deleted meanwhile."""

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    async with serving() as (fake, api):
        installed: list[list[str]] = []
        configs = Configs(api, kind(installed))
        fake.lists.append(
            {
                "metadata": {"resourceVersion": "10"},
                "items": [obj("s1", "u1", 8, reason="one"), obj("s2", "u2", 9, reason="two")],
            }
        )
        rv = await configs.load()
        assert rv == "10" and installed[-1] == ["one", "two"]
        fake.script_watch(404)
        fake.script_watch(line("ERROR", {"kind": "Status", "code": 410, "reason": "Expired"}))
        fake.lists.append(
            {
                "metadata": {"resourceVersion": "30"},
                "items": [obj("s2", "u2", 9, reason="two"), obj("s3", "u3", 25, reason="three")],
            }
        )
        watch = ListWatch(
            api,
            PATH,
            configs.apply,
            name="Suppression watch",
            sleep=no_wait,
            listed=configs.drop_unlisted,
        )
        watch.rv = rv
        task = asyncio.create_task(watch.run())
        try:
            await until(lambda: watch.relists == 1 and watch.rv == "30")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await configs.rebuild()
        assert installed[-1] == ["two", "three"]  # in force in uid order: u2, u3
        assert set(configs.objects) == {"u2", "u3"} and "u1" in configs.deleted


# -- Suppressions: a budget, no whole bodies kept, every new or changed version told -------------
def supp(i: int, generation: int = 1, status: dict | None = None, ns: str = "team") -> dict:
    """A Suppression at the CRD's bounds (32 images, 16 workloads), created i seconds in."""
    body = {
        "apiVersion": "pullwatch.dev/v1alpha1",
        "kind": "Suppression",
        "metadata": {
            "name": f"s{i:02d}",
            "namespace": ns,
            "uid": f"{ns}-u{i}",
            "generation": generation,
            "creationTimestamp": f"2026-05-01T00:{i // 60:02d}:{i % 60:02d}Z",
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"x": "y" * 4000}}}],
        },
        "spec": {
            "rules": ["*"],
            "images": [f"registry{i}.example.com/team/app{j}-{'a' * 200}:*" for j in range(32)],
            "workloads": [f"w{j}-*" for j in range(16)],
            "reason": "r",
            "expires": "2026-06-01T00:00:00Z",
        },
    }
    if status is not None:
        body["status"] = status
    return body


def supp_path(body: dict) -> str:
    meta = body["metadata"]
    return (
        f"/apis/pullwatch.dev/v1alpha1/namespaces/{meta['namespace']}/suppressions/{meta['name']}"
    )


def supp_configs(api) -> tuple[Configs, Detector]:
    detector = Detector(Allowlist())
    return Configs(
        api, suppressions(detector, "pullwatch-system", lambda _: None, Counter())
    ), detector


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_suppressions_over_the_namespace_budget_are_not_compiled_nor_kept_whole():
    async with serving() as (fake, api):
        bodies = [supp(i) for i in range(30)]
        stored = [fake.put(supp_path(b), b) for b in bodies]
        fake.lists.append({"metadata": {"resourceVersion": "99"}, "items": stored[::-1]})
        configs, detector = supp_configs(api)
        await configs.load()
        fits = NAMESPACE_BUDGET // 49
        in_force = [s.name for s in detector.suppressions.items if s.usable]
        assert in_force == [f"s{i:02d}" for i in range(fits)]  # the oldest, whatever the order
        assert len(configs.refused) == 30 - fits
        assert sample("pullwatch_suppressions_over_budget", budget="namespace") == 30 - fits
        # nothing whole is kept: no spec (not even of the compiled ones), no managedFields
        assert configs._specs == {}
        assert all(
            "spec" not in k and set(k["metadata"]) <= set(_META) for k in configs.objects.values()
        )
        await configs._write_statuses(0.0)
        newest = fake.get(supp_path(bodies[-1]))["status"]["conditions"][0]
        assert (
            newest["reason"] == "Invalid"
            and "over the budget of namespace team" in newest["message"]
        )
        # the oldest goes: the first refused one fits now, is read again (its spec was dropped)
        configs.apply("DELETED", stored[0])
        await configs.rebuild()
        assert [s.name for s in detector.suppressions.items if s.usable][-1] == f"s{fits:02d}"
        assert fake.count("GET", supp_path(bodies[fits])) == 1
        assert configs._specs == {}


async def test_every_new_or_changed_suppression_is_told_also_one_changed_while_none_ran():
    created = dict(scope="namespace", change="created")
    changed = dict(scope="namespace", change="changed")
    name = "pullwatch_suppression_changes_total"
    async with serving() as (fake, api):
        configs, _ = supp_configs(api)
        first = fake.put(supp_path(supp(1)), supp(1))
        base = sample(name, **created), sample(name, **changed)
        configs.apply("ADDED", first)
        await configs.rebuild()
        await configs._write_statuses(0.0)
        await configs._write_statuses(0.0)  # its status records it now: told once
        assert (sample(name, **created), sample(name, **changed)) == (base[0] + 1, base[1])
        patched = fake.put(
            supp_path(supp(1)),
            {**supp(1, generation=2), "status": fake.get(supp_path(first))["status"]},
        )
        configs.apply("MODIFIED", patched)  # e.g. rules: ["*"] now, or more images
        await configs.rebuild()
        await configs._write_statuses(0.0)
        assert (sample(name, **created), sample(name, **changed)) == (base[0] + 1, base[1] + 1)
        # deleted and created again under the same name before any rebuild: a new uid, told
        configs.apply("DELETED", fake.get(supp_path(first)))
        again = {**supp(1), "metadata": {**supp(1)["metadata"], "uid": "again"}}
        configs.apply("ADDED", fake.put(supp_path(again), again))
        await configs.rebuild()
        await configs._write_statuses(0.0)
        assert sample(name, **created) == base[0] + 2
        # a restart: what the stored statuses record is not told again; what they do not is
        recorded = fake.get(supp_path(first))
        while_down = supp(2, generation=3, status={"observedGeneration": 2})
        unseen = supp(3)
        for b in (while_down, unseen):
            fake.put(supp_path(b), b)
        fake.lists.append(
            {
                "metadata": {"resourceVersion": "9"},
                "items": [recorded, fake.get(supp_path(while_down)), fake.get(supp_path(unseen))],
            }
        )
        restarted, _ = supp_configs(api)
        await restarted.load()
        await restarted._write_statuses(0.0)
        assert (sample(name, **created), sample(name, **changed)) == (base[0] + 3, base[1] + 2)
