"""Normalization and validation against distribution/reference's own test tables."""

import pytest

from pullwatch.core.imageref import MAX_REFERENCE_LENGTH, InvalidImageReference, parse_image

DIGEST = "sha256:" + "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c"


@pytest.mark.parametrize(
    "raw, domain, path, tag, digest, normalized",
    [
        ("nginx", "docker.io", "library/nginx", "latest", None, "docker.io/library/nginx:latest"),
        (
            "nginx:1.25.3",
            "docker.io",
            "library/nginx",
            "1.25.3",
            None,
            "docker.io/library/nginx:1.25.3",
        ),
        (
            "docker.io/nginx",
            "docker.io",
            "library/nginx",
            "latest",
            None,
            "docker.io/library/nginx:latest",
        ),
        (
            "index.docker.io/nginx",
            "docker.io",
            "library/nginx",
            "latest",
            None,
            "docker.io/library/nginx:latest",
        ),
        (
            "index.docker.io/aquasec/kube-hunter",
            "docker.io",
            "aquasec/kube-hunter",
            "latest",
            None,
            "docker.io/aquasec/kube-hunter:latest",
        ),
        (
            "aquasec/kube-hunter:0.6.8",
            "docker.io",
            "aquasec/kube-hunter",
            "0.6.8",
            None,
            "docker.io/aquasec/kube-hunter:0.6.8",
        ),
        (
            "library/foo/bar",
            "docker.io",
            "library/foo/bar",
            "latest",
            None,
            "docker.io/library/foo/bar:latest",
        ),
        (
            "test_com/foo",
            "docker.io",
            "test_com/foo",
            "latest",
            None,
            "docker.io/test_com/foo:latest",
        ),
        ("test.com/foo", "test.com", "foo", "latest", None, "test.com/foo:latest"),
        ("test-com:8080/foo", "test-com:8080", "foo", "latest", None, "test-com:8080/foo:latest"),
        ("localhost/foo", "localhost", "foo", "latest", None, "localhost/foo:latest"),
        ("localhost:5000/foo:v1", "localhost:5000", "foo", "v1", None, "localhost:5000/foo:v1"),
        (
            "127.0.0.1:5000/private/moonbase",
            "127.0.0.1:5000",
            "private/moonbase",
            "latest",
            None,
            "127.0.0.1:5000/private/moonbase:latest",
        ),
        (
            "[fc00::1]:5000/docker/docker",
            "[fc00::1]:5000",
            "docker/docker",
            "latest",
            None,
            "[fc00::1]:5000/docker/docker:latest",
        ),
        (
            "xn--n3h.com:18080/foo",
            "xn--n3h.com:18080",
            "foo",
            "latest",
            None,
            "xn--n3h.com:18080/foo:latest",
        ),
        (
            "Foo/bar",
            "Foo",
            "bar",
            "latest",
            None,
            "Foo/bar:latest",
        ),  # uppercase first component = domain
        (
            "registry.example.net:5000/mirrors/aquasec/kube-hunter:v0.6.7",
            "registry.example.net:5000",
            "mirrors/aquasec/kube-hunter",
            "v0.6.7",
            None,
            "registry.example.net:5000/mirrors/aquasec/kube-hunter:v0.6.7",
        ),
        # digest: no default tag; tag and digest together keep both
        (
            f"redis@{DIGEST}",
            "docker.io",
            "library/redis",
            None,
            DIGEST,
            f"docker.io/library/redis@{DIGEST}",
        ),
        (
            f"busybox:latest@{DIGEST}",
            "docker.io",
            "library/busybox",
            "latest",
            DIGEST,
            f"docker.io/library/busybox:latest@{DIGEST}",
        ),
        (
            "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "docker.io",
            "library/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "latest",
            None,
            None,
        ),
        ("docker---rules/docker", "docker.io", "docker---rules/docker", "latest", None, None),
        ("dock__er/docker", "docker.io", "dock__er/docker", "latest", None, None),
        (
            "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
            "docker.io",
            "library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
            "latest",
            None,
            None,
        ),
    ],
)
def test_normalization(raw, domain, path, tag, digest, normalized):
    ref = parse_image(raw)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert ref.raw == raw
    if normalized:
        assert ref.normalized == normalized


@pytest.mark.parametrize(
    "raw",
    [
        "https://github.com/docker/docker",
        "docker/Docker",
        "-docker",
        "-docker/docker",
        "docker///docker",
        "docker.io/docker/Docker",
        "[fc00::1]",
        "[fc00::1]:5000",
        "fc00::1:5000/debian",
        "[fe80::1%eth0]:5000/debian",
        "[2001:db8:3:4::192.0.2.33]:5000/debian",
        "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
        "docker-/docker",
        "-docker-/docker",
        "____/____",
        "_docker/_docker",
        "dock..er/docker",
        "dock_.er/docker",
        "dock-.er/docker",
        "docker/",
        "",
        "Nginx",
        "nginx:",
        "nginx:-bad",
        ":tag",
        "nginx@sha256:abc",
        "nginx@sha256:" + "g" * 64,
        "nginx@md5:" + "a" * 32,
        "nginx:" + "t" * 129,
        "a" * 256,
        "nginx latest",
        "nginx\n",
        "nginx/",
        "/nginx",
        "ng\x1binx",
        "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_"
        "because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_"
        "than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker",
    ],
)
def test_invalid_references(raw):
    with pytest.raises(InvalidImageReference) as info:
        parse_image(raw)
    assert str(info.value)  # a reason a human can read goes into the Finding


def test_uppercase_reason_is_specific():
    with pytest.raises(InvalidImageReference, match="must be lowercase"):
        parse_image("docker/Docker")


def test_overlong_input_is_refused_before_the_regex_runs():
    with pytest.raises(InvalidImageReference, match="characters long"):
        parse_image("a" * (MAX_REFERENCE_LENGTH + 1))
    with pytest.raises(InvalidImageReference):
        parse_image("a_" * 500 + "__/")  # near the cap: rejected by the grammar, promptly


def test_non_string_is_an_invalid_reference():
    with pytest.raises(InvalidImageReference):
        parse_image(None)  # type: ignore[arg-type]


def test_last_component_ignores_registry_and_mirror_path():
    assert (
        parse_image("registry.example.net:5000/mirrors/aquasec/kube-hunter:v0.6.7").last_component
        == "kube-hunter"
    )
    assert parse_image(f"kube-bench@{DIGEST}").last_component == "kube-bench"
