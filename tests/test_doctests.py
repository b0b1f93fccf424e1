"""The worked examples in the core modules' docstrings are tests too."""

import doctest
import importlib

import pytest

MODULES = ["imageref", "patterns", "allowlist", "rules", "pulls", "findings", "detector", "render"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"pullwatch.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_core_imports_neither_kopf_nor_kubernetes():
    import subprocess
    import sys
    code = ("import sys, pullwatch.cli, pullwatch.scan, pullwatch.detector, pullwatch.render; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('kopf', 'kubernetes')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
