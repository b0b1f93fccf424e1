"""Paths the tests share (a module of its own: two conftest.py files cannot be imported by name)."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
DATA = TESTS / "data"


def finding_items(stdout) -> list:
    """The Findings of a `pullwatch scan -o json` output (its List may end with a ScanContext
    document: what a later merge needs and no Finding of this scan holds)."""
    import json

    return [i for i in json.loads(stdout)["items"] if i.get("kind") == "Finding"]
