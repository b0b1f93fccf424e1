"""Property tests: the parsers and decoders raise nothing but their own errors, on anything."""

import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from kubelet import image_event
from pullwatch.core.allowlist import Allowlist, policy_from_object
from pullwatch.core.audit import AuditDeduper, decode_audit_entry
from pullwatch.core.detector import Detector
from pullwatch.core.imageref import InvalidImageReference, parse_image
from pullwatch.core.patterns import InvalidPattern, compile_pattern
from pullwatch.core.pulls import DecodeError, decode_event
from pullwatch.scan.records import ReadStats, iter_objects
from pullwatch.scan.sources import Source as _Source

REF_ALPHABET = st.sampled_from(list('abcXYZ019._-:/@[]*+ \n\x1b"'))
# Reference-like strings: grammar pieces glued together, so the parser's deeper branches are hit.
REF_LIKE = st.lists(
    st.sampled_from(
        [
            "sha256:",
            "docker.io/",
            "localhost",
            "index.docker.io/",
            "a",
            "b1",
            "/",
            ":",
            "@",
            "-",
            "_",
            "__",
            ".",
            "*",
            "**",
            "[::1]",
            ":5000",
            "0" * 64,
            "Z",
            "\n",
        ]
    ),
    max_size=12,
).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)


@given(st.text(REF_ALPHABET, max_size=80) | REF_LIKE | st.text(max_size=80))
def test_parse_image_raises_only_its_own_error(raw):
    try:
        ref = parse_image(raw)
    except InvalidImageReference:
        return
    assert parse_image(ref.normalized).normalized == ref.normalized  # normalization is idempotent


@given(st.text(REF_ALPHABET, max_size=60) | REF_LIKE | json_values)
def test_compile_pattern_raises_only_its_own_error(raw):
    try:
        compile_pattern(raw)
    except InvalidPattern:
        pass


@st.composite
def mutated_events(draw):
    ev = image_event("Pulling", "ns", "p", draw(st.text(REF_ALPHABET, max_size=40) | REF_LIKE))
    for key in draw(
        st.lists(st.sampled_from(sorted(ev) + ["series", "note", "regarding"]), max_size=4)
    ):
        ev[key] = draw(json_values)
    for key in draw(
        st.lists(st.sampled_from(["name", "namespace", "fieldPath", "uid", "kind"]), max_size=3)
    ):
        if isinstance(ev.get("involvedObject"), dict):
            ev["involvedObject"][key] = draw(json_values)
    if draw(st.booleans()):
        ev["apiVersion"] = "events.k8s.io/v1"
    return ev


@settings(max_examples=300)
@given(mutated_events() | json_values)
def test_decoders_and_detector_raise_only_decode_errors(obj):
    detector = Detector(
        Allowlist(
            [
                policy_from_object(
                    {
                        "apiVersion": "pullwatch.dev/v1alpha1",
                        "kind": "AllowedImages",
                        "metadata": {"name": "a"},
                        "spec": {"images": ["**"]},
                    }
                )
            ]
        )
    )
    try:
        pull = decode_event(obj)
    except DecodeError:
        return
    if pull is not None:
        detector.observe(pull)
        json.dumps(list(detector.findings()))
    entry = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "auditID": "x",
        "verb": "create",
        "objectRef": {"resource": "events"},
        "requestObject": obj,
    }
    try:
        decode_audit_entry(entry, AuditDeduper())
    except DecodeError:
        pass


@given(json_values)
def test_audit_decoder_on_arbitrary_entries(entry):
    if isinstance(entry, dict):
        try:
            decode_audit_entry(entry, AuditDeduper())
        except DecodeError:
            pass


@given(
    st.binary(max_size=300)
    | st.lists(json_values, max_size=5).map(
        lambda xs: "\n".join(json.dumps(x) + ' "Pull' * (i % 2) for i, x in enumerate(xs)).encode()
    )
)
def test_reader_never_raises_on_arbitrary_bytes(data):
    stats = ReadStats()
    for _ in iter_objects(_Source("t", io.BytesIO(data)), stats):
        pass


@given(json_values)
def test_policy_from_arbitrary_objects_never_raises(obj):
    policy_from_object(obj)
    if isinstance(obj, dict):
        policy_from_object(
            {"apiVersion": "pullwatch.dev/v1alpha1", "kind": "AllowedImages", "spec": obj}
        )


# -- readers against random damage of every format (issue 8) ------------------------------------

import gzip as _gzip  # noqa: E402
import zlib as _zlib  # noqa: E402

import yaml as _yaml  # noqa: E402

from kubelet import audit_entries, other_event  # noqa: E402
from pullwatch.scan.sources import Source  # noqa: E402

FORMATS = [
    "jsonl",
    "watch-pretty",
    "list-pretty",
    "list-compact",
    "array-pretty",
    "yaml-stream",
    "yaml-list",
    "audit-jsonl",
]


def _events(n: int) -> list[dict]:
    out = []
    for i in range(n):
        out.append(image_event("Pulling", "ns", f"pod-{i:03d}", f"img{i}:1", seq=i))
        if i % 3 == 0:
            out.append(
                other_event("Started", "ns", f"noise-{i}", "Started container x", seq=500 + i)
            )
    return out


def _serialize(fmt: str, events: list[dict]) -> tuple[bytes, list[tuple[int, str]]]:
    """The input text, and (offset just past each pull record and its delimiter, its pod)."""
    parts: list[bytes] = []
    spans: list[tuple[int, str]] = []
    pos = 0

    def add(text: bytes, pod: str | None = None, end_extra: int = 0) -> None:
        nonlocal pos
        parts.append(text)
        pos += len(text)
        if pod is not None and pod.startswith("pod-"):
            spans.append((pos + end_extra, pod))

    pods = [e["involvedObject"]["name"] for e in events]
    if fmt in ("jsonl", "audit-jsonl"):
        for i, e in enumerate(events):
            for entry in (
                audit_entries(e, f"id-{i}", stages=("ResponseComplete",))
                if fmt == "audit-jsonl"
                else [e]
            ):
                add(json.dumps(entry).encode() + b"\n", pods[i])
    elif fmt == "watch-pretty":
        for e, pod in zip(events, pods):
            add(json.dumps({"type": "ADDED", "object": e}, indent=4).encode(), pod)
            add(b"\n")
    elif fmt in ("list-pretty", "list-compact", "array-pretty"):
        indent = None if fmt == "list-compact" else 4
        items = [json.dumps(e, indent=indent).encode() for e in events]
        if indent:
            items = [b"\n".join(b"        " + line for line in item.split(b"\n")) for item in items]
        head = (
            b"[\n"
            if fmt == "array-pretty"
            else (
                b'{\n    "apiVersion": "v1",\n    "items": [\n'
                if indent
                else b'{"apiVersion":"v1","kind":"List","items":['
            )
        )
        add(head)
        for i, (item, pod) in enumerate(zip(items, pods)):
            add(item, pod)
            add((b",\n" if indent else b",") if i < len(items) - 1 else b"\n" if indent else b"")
        add(
            b"]\n"
            if fmt == "array-pretty"
            else b'    ],\n    "kind": "List"\n}\n'
            if indent
            else b"]}"
        )
    elif fmt == "yaml-stream":
        for e, pod in zip(events, pods):
            add(_yaml.safe_dump(e).encode() + b"---\n", pod)  # a document ends with its separator
    elif fmt == "yaml-list":
        add(b"apiVersion: v1\nitems:\n")
        for e, pod in zip(events, pods):
            # an item ends where the next item's marker (or the dedented key) begins
            add(_yaml.safe_dump([e]).encode(), pod, end_extra=1)
        add(b"kind: List\nmetadata:\n  resourceVersion: ''\n")
    return b"".join(parts), spans


def _pods_read(data: bytes, chunk: int | None = None) -> set[str]:
    """The pods of the pulls read; ``chunk``: read in pieces this small, so that every record
    and token straddles reads (the refill paths otherwise run only on inputs over 4 MiB)."""
    import pullwatch.scan.jsontext as jsontext
    import pullwatch.scan.records as records
    import pullwatch.scan.yamltext as yamltext

    saved = records.CHUNK, jsontext.CHUNK, yamltext.CHUNK
    if chunk:
        records.CHUNK = jsontext.CHUNK = yamltext.CHUNK = chunk
    try:
        return _pods(data)
    finally:
        records.CHUNK, jsontext.CHUNK, yamltext.CHUNK = saved


def _pods(data: bytes) -> set[str]:
    stats = ReadStats()
    pods = set()
    for kind, obj in iter_objects(Source("prop", io.BytesIO(data)), stats):
        if kind == "audit":
            obj = obj.get("requestObject") or {}
        involved = obj.get("involvedObject") if isinstance(obj, dict) else None
        if isinstance(involved, dict) and str(involved.get("name")).startswith("pod-"):
            pods.add(involved["name"])
    return pods


def _salvageable(data: bytes) -> bytes:
    """The most a gzip decompressor can give of (possibly damaged) data, fed byte by byte."""
    d, out = _zlib.decompressobj(_zlib.MAX_WBITS | 16), []
    for i in range(len(data)):
        try:
            out.append(d.decompress(data[i : i + 1]))
        except _zlib.error:
            break
        if d.eof:
            break
    return b"".join(out)


@st.composite
def damaged_inputs(draw):
    fmt = draw(st.sampled_from(FORMATS))
    text, spans = _serialize(fmt, _events(draw(st.integers(1, 12))))
    compressed = draw(st.booleans())
    data = _gzip.compress(text, mtime=0) if compressed else text
    at = draw(st.integers(0, len(data)))
    how = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "newline", "quote"]))
    junk = {
        "truncate": b"",
        "flip": bytes([data[at] ^ draw(st.integers(1, 255))]) if at < len(data) else b"",
        "insert": draw(st.binary(min_size=1, max_size=8)),
        "delete": b"",
        "newline": b"\n",
        "quote": b'"',
    }[how]
    skip = {"truncate": len(data), "flip": 1, "delete": draw(st.integers(1, 64))}.get(how, 0)
    damaged = data[:at] + junk + data[at + skip :]
    if compressed:
        salvaged = _salvageable(damaged)
        intact = next(
            (i for i, (a, b) in enumerate(zip(salvaged, text)) if a != b),
            min(len(salvaged), len(text)),
        )
    else:
        intact = at
    chunk = draw(st.sampled_from([None, None, 7, 64, 333, 4096]))
    return fmt, damaged, {pod for end, pod in spans if end <= intact}, chunk


@settings(max_examples=600, deadline=None)
@given(damaged_inputs())
def test_every_record_before_the_damage_is_read_and_nothing_escapes(case):
    fmt, data, before, chunk = case
    read = _pods_read(data, chunk)  # any exception fails the test
    assert before <= read, (fmt, sorted(before - read))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FORMATS), st.integers(1, 8))
def test_undamaged_inputs_of_every_format_are_read_whole(fmt, n):
    text, spans = _serialize(fmt, _events(n))
    assert _pods_read(text) == {pod for _, pod in spans}
    assert _pods_read(_gzip.compress(text)) == {pod for _, pod in spans}
    assert _pods_read(text, chunk=5) == {pod for _, pod in spans}


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 19), st.sampled_from(list("0123456789:-TZ+ .x\u0663\u00b2"))),
        max_size=3,
    )
)
def test_minute_of_a_stamp_is_that_of_parsing_it(edits):
    """minute_of caches a minute of RFC 3339 stamps under one key: whatever a stamp's writer
    put in it, the minute is the one parsing the whole stamp gives (or None for both)."""
    from pullwatch.core import findings

    stamp = list("2026-11-18T10:23:45Z")
    for at, char in edits:
        stamp[at] = char
    text = "".join(stamp)
    assert findings.minute_of(text) == findings._minute_of.__wrapped__(text)
