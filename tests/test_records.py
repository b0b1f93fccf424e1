"""Input format detection and reading."""

import io
import json

import yaml

from kubelet import image_event
from pullwatch.scan.records import ReadStats, iter_objects

EV = image_event("Pulling", "ns", "p", "nginx")
OTHER = {**EV, "reason": "Started", "message": "Started container p"}


def read(data: bytes):
    stats = ReadStats()
    return list(iter_objects(io.BufferedReader(io.BytesIO(data)), stats)), stats


def test_json_list_pretty_printed():
    objs, stats = read(
        json.dumps({"apiVersion": "v1", "kind": "List", "items": [EV, OTHER]}, indent=2).encode()
    )
    assert [k for k, _ in objs] == ["event", "event"] and stats.records == 2


def test_json_array_and_single_event():
    assert len(read(json.dumps([EV, EV]).encode())[0]) == 2
    assert len(read(json.dumps(EV, indent=1).encode())[0]) == 1


def test_yaml_documents_and_list():
    text = (
        yaml.safe_dump(EV)
        + "---\n"
        + yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [EV]})
    )
    objs, stats = read(("---\n" + text).encode())
    assert len(objs) == 2 and stats.records == 2


def test_json_lines_prefilter_parses_only_candidates():
    lines = [json.dumps({"type": "ADDED", "object": OTHER})] * 50 + [
        json.dumps({"type": "ADDED", "object": EV})
    ]
    objs, stats = read(("\n".join(lines) + "\n").encode())
    assert len(objs) == 1 and stats.records == 51 and stats.examined == 1


def test_last_line_without_newline_and_blank_lines():
    data = (json.dumps(EV) + "\n\n" + json.dumps(EV)).encode()
    objs, stats = read(data)
    assert len(objs) == 2 and stats.records == 3  # lines, the blank one included


def test_lines_across_chunk_boundaries(monkeypatch):
    import pullwatch.scan.records as records

    monkeypatch.setattr(records, "CHUNK", 1000)
    data = "".join(json.dumps({"type": "ADDED", "object": EV}) + "\n" for _ in range(40)).encode()
    objs, stats = read(data)
    assert len(objs) == 40 and stats.records == 40


def test_garbage_first_line_then_json_lines():
    data = b'garbage Pulling image \\"x\\"\n' + json.dumps(EV).encode() + b"\n"
    objs, stats = read(data)
    assert len(objs) == 1 and stats.damaged["not JSON"] == 1
    data = b'{"broken": "Pulling image \\"x\n' + json.dumps(EV).encode() + b"\n"
    objs, stats = read(data)
    assert len(objs) == 1 and stats.damaged["not JSON"] == 1


def test_audit_and_watch_classification():
    audit = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "verb": "create",
        "note": 'Pulling image "x"',
    }
    bookmark = {"type": "BOOKMARK", "object": {"x": 'Pulling image "x"'}}
    data = (json.dumps(audit) + "\n" + json.dumps(bookmark) + "\n").encode()
    objs, stats = read(data)
    assert [k for k, _ in objs] == ["audit"] and stats.skipped["watch event of type BOOKMARK"] == 1


def test_a_watch_event_whose_type_is_not_text_is_skipped_not_a_crash():
    """``type`` is the writer's: a list or an object there cannot be looked up in a set."""
    event = {
        "kind": "Event",
        "apiVersion": "v1",
        "reason": "Pulling",
        "message": 'Pulling image "x"',
    }
    types = ([1], {"a": 1}, None, "ADDED")
    lines = [json.dumps({"type": t, "object": event}) for t in types]
    deep = '{"type": ' + "[" * 1000 + "]" * 1000 + ', "object": ' + json.dumps(event) + "}"
    objs, stats = read(("\n".join([*lines, deep]) + "\n").encode())
    assert [k for k, _ in objs] == ["event"]  # only the ADDED one
    assert sum(n for r, n in stats.skipped.items() if r.startswith("watch event of type")) == 4
    assert stats.skipped["watch event of type list"] == 2  # named, never printed out


def test_one_line_list():
    objs, stats = read(
        (json.dumps({"kind": "EventList", "items": [EV, EV, OTHER]}) + "\n").encode()
    )
    assert len(objs) == 3 and stats.records == 3


def test_list_with_one_item_per_line():
    """Valid JSON a script may write: the List opens on the first line, then an item per line
    (each but the last ends in a comma, so only the last parses alone)."""
    items = ",\n".join(json.dumps(e) for e in (EV, OTHER, EV))
    data = ('{"apiVersion":"v1","kind":"List","items":[\n' + items + "\n]}\n").encode()
    objs, stats = read(data)
    assert len(objs) == 3 and stats.records == 3 and not stats.damaged


def test_empty_input():
    assert read(b"") == ([], ReadStats())
    assert read(b"\n\n  \n")[0] == []


def test_overlong_line_is_skipped(monkeypatch):
    import pullwatch.scan.records as records

    monkeypatch.setattr(records, "MAX_LINE", 5000)
    monkeypatch.setattr(records, "CHUNK", 1000)
    data = (
        json.dumps(EV).encode()
        + b"\n"
        + b"x" * 20000
        + b'"Pull\n'
        + json.dumps(EV).encode()
        + b"\n"
    )
    objs, stats = read(data)
    assert (
        len(objs) == 2
        and stats.records == 3
        and stats.damaged["line longer than 16 MiB (not read)"] == 1
    )
