"""kube/config.py: the configuration kinds' list and watch race each other; what is in force is
always the newest version seen, and nothing deleted comes back."""

from __future__ import annotations

import asyncio
from typing import Any

from fakeapi import serving

from pullwatch.kube.config import Configs, Kind

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
