"""An empty List is an empty input, however it was written (issue 15: real files published by
other projects): Go encodes an empty List's nil slice as ``"items": null``, and so does YAML
converted from it; ``items: []`` is what kubectl prints. Exit 0, no "is this the right input?"."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

PULLWATCH = str(Path(sys.executable).parent / "pullwatch")
ENVELOPE = {"apiVersion": "v1", "kind": "EventList", "metadata": {"resourceVersion": "4711"}}

SHAPES = {
    "json-pretty-null": json.dumps({**ENVELOPE, "items": None}, indent=4) + "\n",
    "json-compact-null": json.dumps({**ENVELOPE, "items": None}, separators=(",", ":")),
    "json-one-line-null": json.dumps({**ENVELOPE, "kind": "List", "items": None}) + "\n",
    "json-items-first-null": '{"items":null,"kind":"List","apiVersion":"v1"}',
    "json-pretty-empty": json.dumps({**ENVELOPE, "items": []}, indent=2) + "\n",
    "yaml-null": "apiVersion: v1\nitems: null\nkind: List\nmetadata:\n  resourceVersion: ''\n",
    "yaml-bare-key": "apiVersion: v1\nitems:\nkind: List\nmetadata:\n  resourceVersion: ''\n",
    "yaml-items-first": "items: null\nkind: EventList\napiVersion: v1\n",
    "yaml-empty": "apiVersion: v1\nitems: []\nkind: List\nmetadata:\n  resourceVersion: ''\n",
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_an_empty_list_is_an_empty_input(tmp_path, shape):
    path = tmp_path / "events"
    path.write_text(SHAPES[shape])
    r = subprocess.run([PULLWATCH, "scan", str(path), "-o", "json"], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert b"right input" not in r.stderr and b"damaged" not in r.stderr
    assert json.loads(r.stdout)["items"] == []


def test_a_list_whose_items_is_not_a_list_of_records_is_still_not_an_event(tmp_path):
    """Only null means empty: a List of something else is still reported as the wrong input."""
    path = tmp_path / "pods.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "PodList", "items": 5}, indent=2))
    r = subprocess.run([PULLWATCH, "scan", str(path)], capture_output=True)
    assert r.returncode == 3 and b"right input" in r.stderr
