"""Reading event dumps and audit logs: what an input is, and its records, streamed.

Formats are told from content, never from the file name (``sources.py`` has already undone
compression and re-encoded the text as UTF-8):

* JSON lines: watch events ``{"type": …, "object": <Event>}`` as log forwarders write them, bare
  Event lines, audit.k8s.io/v1 entries, a List on one line;
* other JSON text (``jsontext.py``): indented values back to back (``kubectl get events -w -o
  json``), one List (``kubectl get events -o json``, ``kubectl get --raw …``), an array;
* YAML (``yamltext.py``): ``-o yaml`` Lists and ``---``-separated documents.

Speed: an image event's JSON contains the bytes ``image \\"`` (its message quotes the image); a
line or record without them is counted but not parsed. When the first records show audit entries
(plain, or in a managed cluster's export: ``core/exports.py``) or Pods, the lines those can be
of use in are parsed too (``core/audit.py``'s bytes: a write of an observed resource; a Pod's
``"containerID"``). Lines are found from the matches outward,
so the per-line Python work is done only for candidates (see ``bench/scan_throughput.py``).
Memory is flat in every format: a window of the input is held at a time, and no record longer
than 16 MiB is kept.

What could not be read is *damage* (``ReadStats.damaged``: a line that is not JSON, a record cut
short, a corrupt compressed stream…), kept apart from records that were read but are of no use
(``ReadStats.skipped``: not an Event, an image event without a message…). A line without those
bytes is not parsed; it is still checked cheaply for being a whole JSON object, so that a pull cut
short - which may have lost them - is reported as damage, not missed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson

from ..core import audit, exports
from ..core.pods import CANDIDATE as POD_CANDIDATE
from ..core.pulls import CANDIDATE
from .jsontext import SAMPLE, json_values
from .linecheck import check_lines as _check_lines
from .linecheck import skeleton as _skeleton
from .yamltext import yaml_values

CHUNK = 4 << 20
MAX_LINE = 16 << 20  # a longer "line" is not a record we can trust: counted as damage, skipped
_WATCH_TYPES = ("ADDED", "MODIFIED", "DELETED")  # a tuple: `in` never hashes what it is given


@dataclass
class ReadStats:
    records: int = 0  # lines (JSON lines), records or documents found
    examined: int = 0  # parsed because they could hold a pull (or to tell what the input is)
    recognized: int = 0  # parsed and found to be Events, watch events or audit entries
    unrecognized: int = 0  # parsed and found to be something else (a Pod, a number…)
    skipped: Counter = field(default_factory=Counter)  # read, of no use: reason -> count
    damaged: Counter = field(default_factory=Counter)  # could not be read: reason -> count

    def add(self, other: ReadStats) -> None:
        self.records += other.records
        self.examined += other.examined
        self.recognized += other.recognized
        self.unrecognized += other.unrecognized
        self.skipped.update(other.skipped)
        self.damaged.update(other.damaged)


def sniff(head: bytes, complete: bool) -> str:
    """``lines``, ``json``, ``yaml``, ``binary`` or ``empty``, from the first bytes of an input.

    >>> sniff(b'{"type": "ADDED", "object": {}}\\n{"type"', False)
    'lines'
    >>> sniff(b'{\\n    "apiVersion": "v1",\\n', False)
    'json'
    >>> sniff(b'garbage\\n{"kind": "Event"}\\n', True)
    'lines'
    >>> sniff(b'apiVersion: v1\\nitems:\\n', True)
    'yaml'
    >>> sniff(b'apiVersion: v1\\nitems:\\n- metadata:\\n    annotations:\\n      last-applied: |\\n'
    ...       b'        {"apiVersion":"v1","kind":"Pod"}\\n', True)  # kubectl apply's annotation
    'yaml'
    >>> sniff(b'{"kind":"List","items":[\\n{"kind":"Event"},\\n{"kind":"Event"}\\n]}\\n', True)
    'json'
    """
    text = head.lstrip(b" \t\r\n")
    if not text:
        return "empty"
    first = text.split(b"\n", 1)[0].strip()
    if first in (b"{", b"[") or (first[:1] in (b"{", b"[") and first[-1:] in (b"{", b"[", b",")):
        # A document that opens on its first line and lays out the rest one item per line (a
        # List written `{"kind":"List","items":[` then an item per line): its lines are not JSON
        # each, however many of them parse alone.
        return "json"
    if _YAML_KEY.match(first):
        return "yaml"  # a mapping: JSON inside it (an annotation's) is a YAML block's text
    lines = text.split(b"\n", 64)
    if not complete:
        lines = lines[:-1]  # the last may be cut by the end of the head
    for line in lines[:64]:
        s = line.strip()
        if s[:1] in (b"{", b"[") and len(s) > 2:
            try:
                value = orjson.loads(s)
            except orjson.JSONDecodeError:
                continue
            if value and isinstance(value, (dict, list)):
                return "lines"
    if text[:1] in (b"{", b"["):
        # No whole line parses: one compact document longer than the head (kubectl get --raw),
        # or JSON lines damaged from the start. The tokenizing reader handles both.
        return "json"
    if _mostly_binary(head[:65536]):
        return "binary"
    return "yaml"


_YAML_KEY = re.compile(rb"[A-Za-z_][\w.-]*:(?:\s|$)")  # `apiVersion: v1`, `items:`
_CONTROL = bytes(range(0, 9)) + bytes(range(14, 32))


def _mostly_binary(sample: bytes) -> bool:
    """More than 5 % control bytes or invalid UTF-8: an image, an archive, not a damaged dump
    (a few damaged bytes in text are damage to one record, not a reason to read nothing)."""
    if not sample:
        return False
    controls = len(sample) - len(sample.translate(None, _CONTROL))
    invalid = sample.decode("utf-8", errors="replace").count("\ufffd")
    return (controls + invalid) * 20 > len(sample)


def iter_objects(stream: BinaryIO, stats: ReadStats) -> Iterator[tuple[str, Any]]:
    """Yield ``(kind, object)`` with kind ``event``, ``audit`` (plain, or unwrapped from a
    cloud's export) or ``pod``; everything else is counted."""
    head = stream.read(CHUNK)
    kind = sniff(head, len(head) < CHUNK)
    if kind == "lines":
        yield from _json_lines(head, stream, stats)
    elif kind == "json":
        for obj in json_values(stream, stats, head):
            yield from _classify(obj, stats)
    elif kind == "yaml":
        for obj in yaml_values(stream, stats, head):
            yield from _classify(obj, stats)
    elif kind == "binary":
        stats.records += 1
        stats.damaged["binary data, not JSON or YAML (not read)"] += 1


def json_lines(stream: BinaryIO, stats: ReadStats) -> Iterator[tuple[str, Any]]:
    """Records of an input already known to be JSON lines (e.g. one range of a big file)."""
    yield from _json_lines(stream.read(CHUNK), stream, stats)


def _json_lines(head: bytes, stream: BinaryIO, stats: ReadStats) -> Iterator[tuple[str, Any]]:
    """Scan chunk by chunk *in place*: slicing whole chunks costs a copy of every byte. Only the
    line that straddles two chunks is copied."""
    scan = _scanner(_sample(head, stats))
    chunk = head
    leftover = b""  # the start of a line whose end is in a later chunk
    discarding = False  # inside a line longer than MAX_LINE: drop bytes up to its end
    while chunk:
        first_nl = chunk.find(b"\n")
        if first_nl == -1:
            if not discarding:
                leftover += chunk
                if len(leftover) > MAX_LINE:
                    stats.records += 1
                    stats.damaged["line longer than 16 MiB (not read)"] += 1
                    leftover, discarding = b"", True
        else:
            if discarding:
                discarding = False
            else:
                line = leftover + chunk[: first_nl + 1] if leftover else chunk[: first_nl + 1]
                stats.records += 1
                _check_lines(line, 0, len(line), _skeleton(line), stats)
                yield from scan(line, 0, len(line), stats)
            last_nl = chunk.rfind(b"\n")
            if last_nl > first_nl:
                # The skeleton keeps every newline: the whole lines of the chunk after its
                # first newline are those of the skeleton between its first and last ones.
                skeleton = _skeleton(chunk)
                body = skeleton[skeleton.find(b"\n") + 1 : skeleton.rfind(b"\n") + 1]
                stats.records += body.count(b"\n")
                _check_lines(chunk, first_nl + 1, last_nl + 1, body, stats)
                yield from scan(chunk, first_nl + 1, last_nl + 1, stats)
            leftover = chunk[last_nl + 1 :]
        chunk = stream.read(CHUNK)
    if leftover and not discarding and leftover.strip():
        stats.records += 1  # a last line without its newline
        line = leftover + b"\n"
        _check_lines(line, 0, len(line), _skeleton(line), stats)
        yield from scan(leftover, 0, len(leftover), stats)


def _sample(head: bytes, stats: ReadStats) -> frozenset[str]:
    """Parse the first few lines whatever they hold, to learn whether this input holds Events,
    audit entries (plain or in a cloud's export) or Pods at all, and so which lines the
    pre-filter must parse (see ``_scanner``). Returns the kinds found (``exports.record_kind``)."""
    parsed = []
    for line in head.split(b"\n", SAMPLE + 1)[:SAMPLE]:
        if line.strip():
            try:
                parsed.append((line, orjson.loads(line)))
            except orjson.JSONDecodeError:
                continue
    kinds = frozenset(k for k in (exports.record_kind(obj) for _, obj in parsed) if k)
    for line, obj in parsed:
        if not _admitted(line, 0, len(line), kinds):  # the others are parsed, and counted, later
            seen = ReadStats()
            for _ in _classify(obj, seen):
                pass
            stats.recognized += seen.recognized
            stats.unrecognized += seen.unrecognized
    return kinds


def _scanner(kinds: frozenset[str]):
    """``_scan_range`` for Events; for audit entries and Pods, ``_scan_wide`` with their bytes:
    lines holding one of ``takes`` are parsed, lines holding a write verb if they also name an
    observed resource (``core/audit.py``)."""
    if not kinds:
        return _scan_range
    takes = [CANDIDATE]
    if "export" in kinds:
        takes += audit.PULL_BYTES[1:]  # an entry inside a JSON string: escaped once more
    if "pod" in kinds:
        takes.append(POD_CANDIDATE)
    writes = list(audit.WRITE_BYTES) if kinds & exports.AUDIT_KINDS else []

    def scan(buf: bytes, start: int, end: int, stats: ReadStats) -> Iterator[tuple[str, Any]]:
        return _scan_wide(buf, start, end, stats, takes, writes)

    return scan


def _admitted(buf: bytes, start: int, end: int, kinds: frozenset[str]) -> bool:
    """Could the line ``buf[start:end]`` hold something of use (see ``_scanner``)?"""
    if buf.find(CANDIDATE, start, end) != -1:
        return True
    if "pod" in kinds and buf.find(POD_CANDIDATE, start, end) != -1:
        return True
    return bool(kinds & exports.AUDIT_KINDS) and audit.wanted(buf, start, end)


def _scan_wide(
    buf: bytes, start: int, end: int, stats: ReadStats, takes: list[bytes], writes: list[bytes]
) -> Iterator[tuple[str, Any]]:
    """``_scan_range`` with several needles, found from the matches outward as it does; never
    slices the range."""
    needles = takes + writes
    at = [buf.find(n, start, end) for n in needles]
    while True:
        pos = min((p for p in at if p != -1), default=-1)
        if pos == -1:
            return
        line_start = buf.rfind(b"\n", start, pos) + 1 or start
        line_end = buf.find(b"\n", pos, end)
        if line_end == -1:
            line_end = end
        if at.index(pos) < len(takes) or (
            audit.names_resource(buf, line_start, line_end)
            or any(buf.find(n, pos, line_end) != -1 for n in takes)
        ):
            stats.examined += 1
            try:
                obj = orjson.loads(buf[line_start:line_end])
            except orjson.JSONDecodeError:
                # Lines without CANDIDATE are counted by _check_lines, as in _scan_range.
                if buf.find(CANDIDATE, line_start, line_end) != -1:
                    stats.damaged["not JSON"] += 1
            else:
                yield from _classify(obj, stats)
        at = [
            p if p == -1 or p >= line_end else buf.find(n, line_end, end)
            for n, p in zip(needles, at)
        ]


def _is_watch_event(obj: dict[str, Any]) -> bool:
    return "object" in obj and "type" in obj


_ESCAPE = CANDIDATE.index(b"\\")  # CANDIDATE holds a backslash: rare in JSON, found by memchr


def _scan_range(buf: bytes, start: int, end: int, stats: ReadStats) -> Iterator[tuple[str, Any]]:
    """Parse the lines of ``buf[start:end]`` that contain CANDIDATE; never slice the range.

    CANDIDATE is found by hopping from backslash to backslash (``bytes.find`` of one byte is a
    memchr, many times faster than a search for the whole pattern); where backslashes are dense
    (JSON quoted inside strings) the whole pattern is searched for instead."""
    find, startswith = buf.find, buf.startswith
    dense = False
    hops = 0
    pos = start
    while True:
        at = -1
        if dense:
            at = find(CANDIDATE, pos, end)
        else:
            p = find(b"\\", pos + _ESCAPE, end)
            while p != -1:
                if startswith(CANDIDATE, p - _ESCAPE, end):
                    at = p - _ESCAPE
                    break
                hops += 1
                if hops > 64 + ((p - start) >> 10):
                    dense = True
                    at = find(CANDIDATE, pos, end)
                    break
                p = find(b"\\", p + 1, end)
        if at == -1:
            return
        line_start = buf.rfind(b"\n", start, at) + 1 or start
        line_end = find(b"\n", at, end)
        if line_end == -1:
            line_end = end
        stats.examined += 1
        try:
            obj = orjson.loads(buf[line_start:line_end])
        except orjson.JSONDecodeError:
            stats.damaged["not JSON"] += 1
        else:
            # The line of a watch stream, a core/v1 Event, as _classify would take it: without
            # a generator per line (this runs for every image Event of a large file).
            inner = obj.get("object") if obj.__class__ is dict else None
            if (
                inner.__class__ is dict
                and obj.get("type") in _WATCH_TYPES
                and inner.get("kind") == "Event"
                and inner.get("apiVersion") == "v1"
            ):
                stats.recognized += 1
                yield "event", inner
            else:
                yield from _classify(obj, stats)
        pos = line_end


_MAX_NESTING_OF_RECORDS = 4  # a List in an array in a List: deeper is no dump anyone writes


def _classify(
    obj: Any, stats: ReadStats, api_version: str | None = None, depth: int = 0
) -> Iterator[tuple[str, Any]]:
    if depth > _MAX_NESTING_OF_RECORDS:
        # orjson parses 1,024 levels of arrays: followed one generator per level, they would
        # end the scan with a RecursionError.
        stats.unrecognized += 1
        stats.skipped["records nested deeper than 4 arrays or Lists"] += 1
        return
    if isinstance(obj, list) and obj:
        # An array on one line (jq -c -s): its elements are records.
        stats.records += len(obj) - 1
        for item in obj:
            yield from _classify(item, stats, None, depth + 1)
        return
    if not isinstance(obj, dict):
        stats.unrecognized += 1
        stats.skipped["not an object"] += 1
        return
    if _is_watch_event(obj):
        kind = obj.get("type")
        if kind not in _WATCH_TYPES:
            stats.recognized += kind in ("BOOKMARK", "ERROR")
            # the writer's text, or the name of what it put there (str() of 1,000 nested lists
            # would recurse too deep)
            shown = kind[:20] if kind.__class__ is str else type(kind).__name__
            stats.skipped[f"watch event of type {shown}"] += 1
            return
        obj = obj["object"]
        if not isinstance(obj, dict):
            stats.skipped["watch event without an object"] += 1
            return
    kind = obj.get("kind")
    api = obj.get("apiVersion")
    if api is None and api_version is not None:
        obj["apiVersion"] = api = api_version  # an item of a List that names it once
    if kind == "Event" and isinstance(api, str) and api.startswith("audit.k8s.io/"):
        stats.recognized += 1
        yield "audit", obj
    elif kind == "Event" or (kind is None and "reason" in obj):
        stats.recognized += 1
        yield "event", obj
    elif (
        isinstance(kind, str) and kind.endswith("List") and "items" in obj and obj["items"] is None
    ):
        # Go writes an empty List's nil slice as null: an empty input, like "items": [].
        stats.records -= 1
    elif isinstance(kind, str) and kind.endswith("List") and isinstance(obj.get("items"), list):
        # A List on one line (e.g. `kubectl get events -o json | jq -c .`): its items are records.
        stats.records += len(obj["items"]) - 1
        for item in obj["items"]:
            yield from _classify(item, stats, api if isinstance(api, str) else None, depth + 1)
    elif kind is None and exports.export_kind(obj) is not None:
        yield from _exported(obj, stats)
    elif kind == "Pod":
        stats.recognized += 1  # what ran (core/pods.py): an inventory of a cluster
        yield "pod", obj
    else:
        stats.unrecognized += 1
        stats.skipped["not an Event"] += 1


def _exported(obj: dict[str, Any], stats: ReadStats) -> Iterator[tuple[str, Any]]:
    """The audit entries of a cloud export's record (core/exports.py), each one a record."""
    found = 0
    for what, value in exports.unwrap(obj, audit.wanted_text):
        found += 1
        if what == "audit":
            stats.recognized += 1
            yield "audit", value
        elif what == "unread":
            stats.recognized += 1  # an audit entry the pre-filter showed to be of no use
        elif what == "skip":
            stats.unrecognized += 1
            stats.skipped[value] += 1
        else:
            stats.damaged[value] += 1
    stats.records += found - 1
