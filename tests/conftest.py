import os
import sys
from pathlib import Path

from hypothesis import settings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # tests/kubelet.py and tests/paths.py are importable helpers

# The same examples on every run (CI and a developer's machine alike): a property test that fails
# fails every time. Explore more with HYPOTHESIS_PROFILE=explore.
settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
settings.register_profile("explore", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_sessionstart(session):
    """The tests exercise pullwatch as installed (console script and all); an install older than
    the source would test yesterday's code and pass. Stop before that can happen."""
    import importlib.util

    import pytest

    spec = importlib.util.find_spec("pullwatch")
    installed = Path(spec.origin).parent if spec and spec.origin else None
    source = HERE.parent / "operator" / "pullwatch"
    if installed is None or installed.resolve() == source.resolve():
        return

    def tree(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.py")}

    if tree(installed) != tree(source):
        pytest.exit(
            f"the installed pullwatch ({installed}) is not operator/pullwatch: run the tests with "
            "`bash hack/test.sh` (it reinstalls), or `source hack/bootstrap.sh` first",
            returncode=4,
        )
