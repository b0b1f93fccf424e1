"""The worked examples in the core modules' docstrings are tests too; and the layers' import
contract.

Layers (operator/pullwatch/):
  core/  pure detection logic: no I/O framework, no kopf, no kubernetes, no aiohttp, and nothing
         from the other layers;
  scan/  the offline pipeline (`pullwatch scan`): the core plus file reading and output;
  kube/  the operator (`pullwatch run`): the core plus kopf, aiohttp and the API server.
"""

import ast
import doctest
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import pullwatch

PACKAGE = Path(pullwatch.__file__).parent
DOCTESTED = [
    "core.imageref",
    "core.patterns",
    "core.allowlist",
    "core.rules",
    "core.pulls",
    "core.findings",
    "core.detector",
    "core.ledger",
    "core.workload",
    "core.pods",
    "core.audit",
    "core.podwrites",
    "core.actors",
    "core.exports",
    "core.names",
    "core.suppressions",
    "core.judge",
    "core.evidence",
    "core.replay",
    "core.mergestate",
    "core.collect",
    "core.reports",
    "core.liveseries",
    "core.authorship",
    "scan.render",
    "scan.sources",
    "scan.records",
    "scan.jsontext",
    "scan.yamltext",
    "scan.cloud",
    "scan.linecheck",
    "scan.fleet",
    "kube.api",
    "kube.lines",
    "kube.findingapi",
    "kube.quietlog",
    "kube.health",
    "kube.taskdump",
    "kube.waiting",
    "kube.witnessboard",
]
# What each layer may import from outside the standard library (top-level names).
ALLOWED_THIRD_PARTY = {
    "core": {"re2", "docker_image", "orjson"},
    # fsspec and urllib3 (presigned.py): the optional [cloud] extra, imported lazily
    "scan": {"re2", "docker_image", "orjson", "yaml", "fsspec", "urllib3"},
}
FORBIDDEN_LAYERS = {"core": {"scan", "kube", "cli"}, "scan": {"kube", "cli"}}


@pytest.mark.parametrize("name", DOCTESTED)
def test_docstring_examples(name):
    module = importlib.import_module(f"pullwatch.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def _imports(path: Path, layer: str) -> set[tuple[str, str]]:
    """(kind, name) for every import in the module: ('abs', top-level) or ('rel', pullwatch
    layer)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {("abs", a.name.split(".")[0]) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.add(("abs", (node.module or "").split(".")[0]))
            elif node.level >= 2:  # from ..x import y: another layer (or the package root)
                target = (node.module or "").split(".")[0]
                out.add(("rel", target or "<root>"))
    return out


@pytest.mark.parametrize("layer", sorted(ALLOWED_THIRD_PARTY))
def test_layer_import_contract(layer):
    stdlib = set(sys.stdlib_module_names)
    modules = sorted((PACKAGE / layer).glob("*.py"))
    assert modules, layer
    for path in modules:
        for kind, name in _imports(path, layer):
            if kind == "rel":
                assert name not in FORBIDDEN_LAYERS[layer], f"{path.name} imports pullwatch.{name}"
                assert name in ("core", "<root>"), f"{path.name} imports pullwatch.{name}"
            elif name != "pullwatch":
                assert name in stdlib or name in ALLOWED_THIRD_PARTY[layer], (
                    f"{layer}/{path.name} imports {name}"
                )


def test_core_and_scan_load_neither_kopf_nor_kubernetes_at_run_time():
    code = (
        "import sys, pullwatch.cli, pullwatch.scan.pipeline, pullwatch.scan.parallel, "
        "pullwatch.core.detector, pullwatch.scan.render; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('kopf', 'kubernetes', 'aiohttp')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_module_is_in_a_layer_and_small():
    for info in pkgutil.walk_packages([str(PACKAGE)], "pullwatch."):
        path = Path(importlib.util.find_spec(info.name).origin)
        if info.ispkg:
            continue
        layer = path.relative_to(PACKAGE).parts[0]  # kube/witnesses/ is in the kube layer
        assert layer in ("core", "scan", "kube") or path.name in (
            "cli.py",
            "__main__.py",
        ), info.name
        lines = len(path.read_text().splitlines())
        assert lines <= 450, f"{info.name} has {lines} lines: split it by responsibility"
