"""AllowedImages validation and the allowlist: namespaces, never widening, loading."""

from paths import DATA
from pullwatch.core.allowlist import Allowlist, objects_from_documents, policy_from_object
from pullwatch.scan.pipeline import load_config


def obj(name="p", **spec):
    return {
        "apiVersion": "pullwatch.dev/v1alpha1",
        "kind": "AllowedImages",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_namespaces_absent_means_every_namespace():
    allow = Allowlist([policy_from_object(obj(images=["nginx:*"]))])
    assert allow.check("anything", "nginx:1").allowed
    assert allow.check("kube-system", "nginx:1").allowed


def test_namespace_globs():
    allow = Allowlist([policy_from_object(obj(namespaces=["team-a-*", "ops"], images=["nginx:*"]))])
    assert allow.check("team-a-web", "nginx:1").allowed
    assert allow.check("ops", "nginx:1").allowed
    assert not allow.check("team-b", "nginx:1").allowed
    assert not allow.check("opsx", "nginx:1").allowed  # a glob matches the whole name


def test_any_matching_policy_allows():
    allow = Allowlist(
        [
            policy_from_object(obj("a", namespaces=["a"], images=["nginx:*"])),
            policy_from_object(obj("b", images=["redis:*"])),
        ]
    )
    v = allow.check("a", "redis:7")
    assert v.allowed and v.policy == "b" and v.pattern == "redis:*"
    assert not allow.check("b", "nginx:1").allowed


def test_no_policies_allows_nothing():
    v = Allowlist().check("default", "nginx")
    assert not v.allowed and "no AllowedImages pattern" in v.reason


def test_invalid_image_is_never_allowed_and_says_why():
    allow = Allowlist([policy_from_object(obj(images=["**"]))])
    v = allow.check("default", "Nginx")
    assert not v.allowed and "not a valid image reference" in v.reason and "lowercase" in v.reason


def test_malformed_namespaces_makes_the_object_contribute_nothing():
    # Ignoring a bad `namespaces` would apply the object everywhere: that would widen.
    for bad in ("team-a-*", [""], [3], {"a": 1}):
        p = policy_from_object(obj(namespaces=bad, images=["nginx:*"]))
        assert not p.usable and p.problems
        assert not Allowlist([p]).check("team-a-x", "nginx:1").allowed


def test_bad_pattern_is_dropped_and_reported_others_still_apply():
    p = policy_from_object(obj(images=["nginx:*", "NOT VALID", "", 7]))
    assert p.usable and [x.raw for x in p.patterns] == ["nginx:*"]
    assert len(p.problems) == 3 and "images[1]" in p.problems[0]
    allow = Allowlist([p])
    assert allow.check("x", "nginx:1").allowed
    assert not allow.check("x", "redis:1").allowed


def test_malformed_objects():
    for bad in (
        None,
        "x",
        [],
        {"kind": "AllowedImages"},
        obj(images="nginx"),
        obj(),
        {**obj(images=["nginx"]), "apiVersion": "v1"},
        {**obj(images=["nginx"]), "kind": "Pod"},
        {**obj(images=["nginx"]), "spec": None},
    ):
        p = policy_from_object(bad)
        assert not p.usable and p.problems


def test_verdicts_are_cached_but_a_new_allowlist_decides_afresh():
    a1 = Allowlist([policy_from_object(obj(images=["nginx:*"]))])
    assert a1.check("d", "nginx:1") is a1.check("d", "nginx:1")
    a2 = Allowlist()
    assert not a2.check("d", "nginx:1").allowed


def test_documents_and_lists_are_flattened():
    docs = [
        None,
        obj("a", images=["x"]),
        {"apiVersion": "v1", "kind": "List", "items": [obj("b", images=["y"])]},
    ]
    assert [o["metadata"]["name"] for o in objects_from_documents(docs)] == ["a", "b"]


def test_load_from_yaml_file_with_documents_and_list():
    policies = load_config([str(DATA / "allowed-images.yaml")]).policies
    assert [p.name for p in policies] == ["team-a", "security-tools", "platform"]
    assert all(p.usable and not p.problems for p in policies)
