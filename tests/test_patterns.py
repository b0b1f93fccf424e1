"""Allowlist patterns: normalization, whole-reference matching, the known bypasses, validation."""

import pytest

from pullwatch.core.imageref import parse_image
from pullwatch.core.patterns import InvalidPattern, PatternSet, compile_pattern, normalize_pattern

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("nginx:1.25.*", "docker.io/library/nginx:1.25.*"),
        ("nginx", "docker.io/library/nginx:latest"),
        ("library/nginx:1.25", "docker.io/library/nginx:1.25"),
        ("index.docker.io/mycorp/**", "docker.io/mycorp/**"),
        ("docker.io/mycorp/*", "docker.io/mycorp/*"),
        ("docker.io/*/app", "docker.io/*/app:latest"),
        ("quay.io/prometheus/**", "quay.io/prometheus/**"),
        ("*.example.com/team/*", "*.example.com/team/*"),
        ("localhost:5000/app:*", "localhost:5000/app:*"),
        ("**", "docker.io/**"),  # '**' may be several components: all of Docker Hub
        ("docker.io/**", "docker.io/**"),
        (
            "nginx*",
            "docker.io/library/nginx*",
        ),  # one plain component: Docker Hub's library, like an image
        (f"nginx@{DIGEST}", f"docker.io/library/nginx@{DIGEST}"),
    ],
)
def test_pattern_normalization(raw, normalized):
    assert normalize_pattern(raw) == normalized


MATCHES = [
    # pattern, image, allowed
    ("quay.io/prometheus/**", "quay.io/prometheus/node-exporter:v1.8.1", True),
    ("quay.io/prometheus/**", "quay.io/prometheus/sub/dir/img@" + DIGEST, True),
    ("quay.io/**", "quay.io.attacker.example/prometheus/node-exporter:v1", False),  # known bypass
    ("quay.io/**", "quay.io:443/prometheus/x:v1", False),
    ("docker.io/mycorp/**", "docker.io/mycorpevil/app:v1", False),  # known bypass
    ("docker.io/mycorp/**", "mycorpevil/app:v1", False),
    ("docker.io/mycorp/**", "mycorp/app:v1", True),
    ("docker.io/mycorp/*", "mycorp/app:v1", True),
    ("docker.io/mycorp/*", "mycorp/team/app:v1", False),  # * does not cross /
    ("docker.io/mycorp/**", "mycorp/team/app:v1", True),  # ** does
    ("nginx:1.25.*", "nginx:1.25.3", True),
    ("nginx:1.25.*", "docker.io/library/nginx:1.25.3", True),
    ("nginx:1.25.*", "index.docker.io/library/nginx:1.25.3", True),
    ("nginx:1.25.*", "nginx:1.26.0", False),
    ("nginx:1.25.*", "nginx", False),
    ("nginx:1.25.*", "nginx@" + DIGEST, False),  # a tag pattern never matches a digest-only ref
    ("nginx:1.25.*", "nginx:1.25.3@" + DIGEST, True),  # the tag is there, the digest pins it
    ("nginx:1.25.*", "evil.example/library/nginx:1.25.3", False),
    ("nginx:1.25.*", "nginxevil:1.25.3", False),
    ("nginx", "nginx", True),
    ("nginx", "nginx:latest", True),
    ("nginx", "nginx:1.25", False),
    ("nginx", "nginx@" + DIGEST, False),
    ("nginx@" + DIGEST, "nginx@" + DIGEST, True),
    ("nginx@" + DIGEST, "nginx:1.0@" + DIGEST, False),
    ("*.example.com/team/*", "registry.example.com/team/app:v1", True),
    ("*.example.com/team/*", "evil.com/x.example.com/team/app:v1", False),
    ("**", "nginx:1.0", True),
    ("**", "someone/app:1", True),
    ("**", "quay.io/x/y:1", False),
    ("nginx*", "nginx-evil:1", True),
    ("nginx*", "someone/nginx:1", False),
]


@pytest.mark.parametrize("pattern, image, allowed", MATCHES)
def test_whole_reference_matching(pattern, image, allowed):
    patterns = PatternSet([compile_pattern(pattern)])
    assert (patterns.match(parse_image(image).normalized) is not None) is allowed


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "NGINX",
        "nginx:***",
        "quay.io/x/***",
        "**.example.com/app",
        "nginx@sha256:*",
        "https://quay.io/x",
        "nginx latest",
        "docker.io/",
        "a" * 600,
        "quay.io//x",
        "-nginx",
        None,
        42,
        ["x"],
    ],
)
def test_invalid_patterns_are_refused_with_a_reason(raw):
    with pytest.raises(InvalidPattern) as info:
        compile_pattern(raw)
    assert str(info.value)


def test_pathological_pattern_cannot_backtrack():
    # A backtracking engine takes exponential time here; RE2 is linear in the input.
    hostile = compile_pattern("docker.io/" + "**a" * 12 + "**b")
    image = "docker.io/" + "a" * 200 + "/" + "a" * 200 + ":" + "a" * 100
    assert PatternSet([hostile]).match(image) is None


def test_thousands_of_patterns_match_the_right_one():
    pats = [compile_pattern(f"registry-{i}.example.com/team-{i}/**") for i in range(3000)]
    pats += [compile_pattern(f"docker.io/org{i}/app:1.{i}") for i in range(3000)]
    ps = PatternSet(pats)
    hit = ps.match(parse_image("registry-2999.example.com/team-2999/app:v1").normalized)
    assert hit is not None and hit.raw == "registry-2999.example.com/team-2999/**"
    assert ps.match(parse_image("registry-2999.example.com/team-2998/app:v1").normalized) is None
    assert (
        ps.match(parse_image("org1234/app:1.1234").normalized).raw == "docker.io/org1234/app:1.1234"
    )
    assert ps.match(parse_image("org1234/app:1.1235").normalized) is None
