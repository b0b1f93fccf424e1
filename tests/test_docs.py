"""What a newcomer reads and installs: the README, docs/, examples/ and manifests/.

The README stays short and maps every page of docs/; every relative link and #anchor resolves the
way GitHub resolves them; every YAML file we ship loads; every kustomization and component builds
with kubectl; and the alerts, the RBAC and the audit example say what the docs say they say.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

from paths import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_LIMIT = (
    10_000  # bytes (issue 18: a README is what it is, why, how to try it, where to read on)
)
CHECKED = [README, *sorted(DOCS.glob("*.md")), *sorted((ROOT / "examples").rglob("*.md"))]
SHIPPED_YAML = sorted(
    p for d in ("manifests", "crds", "examples") for p in (ROOT / d).rglob("*.y*ml")
)
SCANNER, SUSPICIOUS = "kubernetes-scanner-image-pulling", "kubernetes-suspicious-image-pulling"

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # https:, mailto:, ...


# -- GitHub's rules -------------------------------------------------------------------------------
def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lower-cased, with everything but letters,
    digits, marks, connector punctuation, hyphens and spaces removed, and each space a hyphen.

    >>> github_slug("The unit: one Finding per workload")
    'the-unit-one-finding-per-workload'
    >>> github_slug("With `create` (and `patch`) of events")
    'with-create-and-patch-of-events'
    >>> github_slug("pullwatch scan: the same detection, offline")
    'pullwatch-scan-the-same-detection-offline'
    """
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    kept = (
        ch
        for ch in text.lower()
        if ch.isalnum() or ch in " -_" or unicodedata.category(ch) in ("Mn", "Mc", "Me", "Pc")
    )
    return "".join(kept).replace(" ", "-")


@pytest.mark.parametrize(
    "heading, slug",
    [
        ("The unit: one Finding per workload", "the-unit-one-finding-per-workload"),
        ("With `create` (and `patch`) of events", "with-create-and-patch-of-events"),
        ("Scanning a fleet's archive", "scanning-a-fleets-archive"),
        ("`pullwatch_active` and [links](x.md)", "pullwatch_active-and-links"),
        ("A × B – C", "a--b--c"),  # symbols go, each space stays a hyphen
        ("Überblick", "überblick"),
    ],
)
def test_github_anchor_rules(heading, slug):
    assert github_slug(heading) == slug


def prose(markdown: str) -> str:
    """The text links and headings are read from: fenced code blocks and code spans removed (a
    link in code is not a link, a `#` line in a shell block is not a heading)."""
    return CODE_SPAN.sub("", FENCE.sub("", markdown))


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file: its headings' slugs (a repeated one gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text())):
        slug = github_slug(match.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path: Path) -> list[str]:
    text = prose(path.read_text())
    return [m.group(1) for m in INLINE_LINK.finditer(text)] + [
        m.group(1) for m in REFERENCE_LINK.finditer(text)
    ]


def broken_links(path: Path) -> list[str]:
    """Each relative link of ``path`` that does not resolve, and why."""
    problems = []
    for target in links(path):
        if EXTERNAL.match(target):
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif not dest.resolve().is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif fragment:
            if dest.suffix != ".md":
                problems.append(f"{target}: an anchor in a file that is not Markdown")
            elif fragment not in anchors(dest):
                problems.append(f"{target}: no heading with that anchor in {dest.name}")
    return problems


# -- the pages ------------------------------------------------------------------------------------
def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes: move detail into docs/"


def test_readme_keeps_the_two_commands():
    text = README.read_text()
    assert "bash hack/demo.sh" in text and "bash hack/test.sh" in text


@pytest.mark.parametrize("page", CHECKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    assert not broken_links(page), broken_links(page)


def test_every_docs_page_is_in_the_readme_map():
    text = README.read_text()
    section = text[text.index("## Documentation") :].split("\n## ", 1)[0]
    mapped = {(README.parent / t.partition("#")[0]).resolve() for t in links_in(section)}
    pages = {p.resolve() for p in DOCS.glob("*.md")}
    assert pages and not pages - mapped, sorted(p.name for p in pages - mapped)


def links_in(markdown: str) -> list[str]:
    return [m.group(1) for m in INLINE_LINK.finditer(prose(markdown))]


def test_the_link_checker_finds_what_is_broken(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "other.md").write_text("# Other page\n\n## Bounds, overflow and retention\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## The same name\n\n## The same name\n\n"
        "[ok](other.md) [ok](other.md#bounds-overflow-and-retention) [ok](#the-same-name-1)\n"
        "[ok](https://example.com/x) `[not a link](missing.md)`\n\n"
        "```sh\n[not a link either](missing.md)\n```\n"
        "[gone](missing.md) [bad anchor](other.md#bounds) [self](#nowhere) [out](../x.md)\n"
        "[ref]: other.md#other-pages\n"
    )
    (tmp_path.parent / "x.md").write_text("")
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#bounds: no heading with that anchor in other.md",
        "#nowhere: no heading with that anchor in page.md",
        "../x.md: outside the repository",
        "other.md#other-pages: no heading with that anchor in other.md",
    ]


# -- YAML and kustomize ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", SHIPPED_YAML, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_yaml_file_loads(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)
    if path.parts[len(ROOT.parts)] in ("manifests", "crds") and path.name != "kustomization.yaml":
        for d in docs:
            assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), d


def kustomize(path: Path) -> list[dict]:
    r = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, f"kubectl kustomize {path}: {r.stderr}"
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def with_components(tmp_path: Path, *components: str) -> list[dict]:
    """manifests/ with the given components, as an overlay of one's own would have it (kustomize
    accepts only relative paths)."""
    rel = Path(os.path.relpath(ROOT, tmp_path))
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [str(rel / "manifests")],
                "components": [str(rel / "manifests/components" / c) for c in components],
            }
        )
    )
    return kustomize(tmp_path)


def one(docs: list[dict], kind: str, name: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


COMPONENTS = sorted(
    p.parent.name for p in (ROOT / "manifests/components").glob("*/kustomization.yaml")
)


@pytest.mark.parametrize("directory", ["manifests", "crds", "examples/overlays/integrations"])
def test_every_kustomization_builds(directory):
    assert kustomize(ROOT / directory)


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_component_builds_over_the_manifests(tmp_path, component):
    docs = with_components(tmp_path, component)
    assert one(docs, "Deployment", "pullwatch")


def test_the_base_install_its_rbac_and_network_policy():
    docs = kustomize(ROOT / "manifests")
    crd = one(docs, "CustomResourceDefinition", "witnesses.pullwatch.dev")
    assert crd["spec"]["scope"] == "Cluster"
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"].upper() for c in version["additionalPrinterColumns"]]
    assert columns == ["STATE", "LAST OBSERVATION", "MESSAGE"]
    state = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["state"]
    assert state["enum"] == ["Receiving", "Silent", "Blind", "Disabled"]

    rules = {
        (r["apiGroups"][0], res): set(r["verbs"])
        for r in one(docs, "ClusterRole", "pullwatch")["rules"]
        for res in r["resources"]
    }
    assert rules[("", "pods")] == {"get", "list", "watch"}
    assert rules[("pullwatch.dev", "witnesses")] == {"get", "create", "patch"}
    assert rules[("pullwatch.dev", "witnesses/status")] == {"get", "patch"}
    assert not any("*" in verbs for verbs in rules.values()) and ("", "secrets") not in rules

    view = one(docs, "ClusterRole", "pullwatch-findings-view")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert [(r["resources"], set(r["verbs"])) for r in view["rules"]] == [
        (["findings"], {"get", "list", "watch"})
    ]
    admin = one(docs, "ClusterRole", "pullwatch-suppressions-admin")
    labels = admin["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert [r["resources"] for r in admin["rules"]] == [["suppressions"]]  # never their status

    policy = one(docs, "NetworkPolicy", "pullwatch")
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9090}]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"pullwatch.dev/scrape-metrics": "true"}}}
    ]


def test_the_audit_webhook_component(tmp_path):
    docs = with_components(tmp_path, "audit-webhook")
    pod = one(docs, "Deployment", "pullwatch")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = dict(a.split("=", 1) for a in container["args"] if a.startswith("--audit-webhook"))
    assert args["--audit-webhook-address"] == "0.0.0.0:8443"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "audit-webhook")
    files = {"cert": "tls.crt", "key": "tls.key", "client-ca": "ca.crt", "token-file": "token"}
    for flag, key in files.items():
        assert args[f"--audit-webhook-{flag}"] == f"{mount['mountPath']}/{key}"
    volume = next(v for v in pod["volumes"] if v["name"] == "audit-webhook")
    assert volume["secret"]["secretName"] == "pullwatch-audit-webhook"
    assert {"name": "audit", "containerPort": 8443} in container["ports"]
    probe = container["readinessProbe"]["httpGet"]
    assert probe == {"path": "/readyz", "port": "audit", "scheme": "HTTPS"}
    service = one(docs, "Service", "pullwatch-audit-webhook")
    assert service["spec"]["ports"] == [{"name": "audit", "port": 8443, "targetPort": "audit"}]
    (rule,) = one(docs, "NetworkPolicy", "pullwatch-audit-webhook")["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8443}] and rule["from"][0]["ipBlock"]


# -- alerts ---------------------------------------------------------------------------------------
def alerts(tmp_path: Path) -> list[dict]:
    docs = with_components(tmp_path, "monitoring")
    rule = one(docs, "PrometheusRule", "pullwatch")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_every_alert_has_a_runbook_and_the_new_signals_are_covered(tmp_path):
    found = alerts(tmp_path)
    assert all(a["annotations"].get("runbook", "").strip() for a in found)
    assert {a["alert"] for a in found} >= {
        "PullwatchScannerImagePulled",
        "PullwatchSuspiciousImagePulled",
        "PullwatchNotProcessingEvents",
        "PullwatchFindingsOverflowing",
        "PullwatchSuppressionChanged",
        "PullwatchSuppressionsOverBudget",
        "PullwatchScannerDefaultsReplaced",
        "PullwatchForgedPull",
        "PullwatchImageRanWithoutPullEvent",
        "PullwatchAuditPolicyDropsEvents",
    }


@pytest.mark.parametrize(
    "name, rule",
    [("PullwatchScannerImagePulled", SCANNER), ("PullwatchSuspiciousImagePulled", SUSPICIOUS)],
)
def test_pull_alerts_page_on_detected_minus_suppressed(tmp_path, name, rule):
    (alert,) = [a for a in alerts(tmp_path) if a["alert"] == name]
    expr = " ".join(alert["expr"].split())
    assert f'increase(pullwatch_pulls_detected_total{{rule="{rule}"}}' in expr
    assert f'- ( increase(pullwatch_pulls_suppressed_total{{rule="{rule}"}}' in expr
    # a suppressed counter with no series yet must not make the difference empty (and silent)
    assert f'or increase(pullwatch_pulls_detected_total{{rule="{rule}"}}' in expr and "* 0" in expr


def test_metrics_in_alerts_and_in_the_code_are_documented(tmp_path):
    from pullwatch.kube import metrics

    documented = set(re.findall(r"`(pullwatch_[a-z_]+)", (DOCS / "operations.md").read_text()))
    in_alerts = {m for a in alerts(tmp_path) for m in re.findall(r"pullwatch_[a-z_]+", a["expr"])}
    in_code = {family.name for family in metrics.REGISTRY.collect()}
    in_code = {n if n in documented else f"{n}_total" for n in in_code}  # counters drop _total
    assert not in_alerts - documented, sorted(in_alerts - documented)
    assert not in_code - documented, sorted(in_code - documented)


# -- the audit example ----------------------------------------------------------------------------
AUDIT = ROOT / "examples" / "audit"


def test_the_audit_policy_logs_events_before_anything_drops_them():
    policy = yaml.safe_load((AUDIT / "policy.yaml").read_text())
    assert policy["apiVersion"] == "audit.k8s.io/v1" and policy["kind"] == "Policy"
    rules = policy["rules"]
    assert rules[-1] == {"level": "None"}

    def level_of(group: str, resource: str, verb: str) -> str:
        for r in rules:
            if verb in r.get("verbs", [verb]) and any(
                g.get("group") == group and resource in g.get("resources", [])
                for g in r.get("resources", [{"group": group, "resources": [resource]}])
            ):
                return r["level"]
        raise AssertionError("no rule matches")

    for group in ("", "events.k8s.io"):
        for verb in ("create", "patch", "update"):
            assert level_of(group, "events", verb) == "Request"
    assert level_of("", "pods", "create") == "Request"
    assert level_of("", "pods/ephemeralcontainers", "patch") == "Request"
    assert level_of("apps", "deployments/scale", "patch") == "Metadata"
    assert level_of("pullwatch.dev", "findings", "delete") == "Metadata"
    assert level_of("", "secrets", "create") == "None"


def test_the_kops_example_carries_the_same_policy():
    spec = yaml.safe_load((AUDIT / "kops-cluster-spec.yaml").read_text())["spec"]
    (asset,) = [
        a for a in spec["fileAssets"] if a["path"] == spec["kubeAPIServer"]["auditPolicyFile"]
    ]
    assert yaml.safe_load(asset["content"]) == yaml.safe_load((AUDIT / "policy.yaml").read_text())


@pytest.mark.parametrize("name", ["webhook-kubeconfig.yaml", "webhook-kubeconfig-client-cert.yaml"])
def test_the_webhook_kubeconfigs_point_at_the_receiver(name):
    config = yaml.safe_load((AUDIT / name).read_text())
    (cluster,) = config["clusters"]
    assert re.fullmatch(r"https://[^/]+:8443/audit", cluster["cluster"]["server"])
    (user,) = config["users"]
    assert {"tokenFile", "token"} & set(user["user"]) or {
        "client-certificate",
        "client-key",
    } <= set(user["user"])
    assert config["current-context"] in [c["name"] for c in config["contexts"]]
