"""Reading event dumps and audit logs: format detection, streaming, and the cheap pre-filter.

Formats, detected from content (never from the file name), gzip accepted, ``-`` is stdin:

* JSON lines: watch events ``{"type": …, "object": <Event>}`` (``kubectl get events -w -o json``,
  log forwarders), bare Event lines, audit.k8s.io/v1 entries, a List on one line;
* one JSON document: ``kubectl get events -A -o json`` (a v1 List), a single Event, an array;
* YAML: the same as ``-o yaml``, several documents allowed.

Speed: a kubelet image event has reason "Pulling" or "Pulled", so its JSON (or its audit
record's) contains the bytes ``"Pull``; a line without them is counted but never parsed (and so a
malformed line without them is not reported either: it could not have been a pull). Lines are found from the matches outward, so
the per-line Python work is done only for candidates (see ``bench/scan_throughput.py``).
Memory is flat for JSON lines: a fixed-size window of the input is held at a time.
"""

from __future__ import annotations

import gzip
import io
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterator

import orjson
import yaml

from ..core.pulls import CANDIDATE

CHUNK = 4 << 20
MAX_LINE = 16 << 20  # a longer "line" is not a record we can trust; skip it, keep going
_GZIP_MAGIC = b"\x1f\x8b"
_WATCH_TYPES = {"ADDED", "MODIFIED", "DELETED"}


class InputError(Exception):
    """A whole input cannot be read (missing file, unreadable, corrupt compression)."""


@dataclass
class ReadStats:
    records: int = 0     # lines (JSON lines input) or documents/items read
    examined: int = 0    # parsed because they could hold a pull
    skipped: Counter = field(default_factory=Counter)  # reason -> count


def open_input(path: str) -> BinaryIO:
    try:
        raw: BinaryIO = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type]
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    return buffered


def iter_objects(stream: BinaryIO, stats: ReadStats, name: str = "<input>") -> Iterator[tuple[str, Any]]:
    """Yield ``(kind, object)`` with kind ``event`` or ``audit``; everything else is counted."""
    head = _read(stream, name, CHUNK)
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if not start:
        return
    if start == b"{":
        first_line = head.lstrip().split(b"\n", 1)[0]
        try:
            is_lines = isinstance(orjson.loads(first_line), dict)
        except orjson.JSONDecodeError:
            is_lines = False
        if is_lines:
            yield from _json_lines(head, stream, stats, name)
            return
    body = head + _read(stream, name)
    if start in (b"{", b"["):
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            # Not one document: most likely JSON lines whose first line is damaged. Read it
            # line by line, so the damage is a counted skip and later records still count.
            yield from _scan_block(body, stats)
            return
        yield from _classify_document(doc, stats)
        return
    yield from _yaml_documents(body, stats, name)


def _read(stream: BinaryIO, name: str, size: int = -1) -> bytes:
    try:
        return stream.read(size)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{name}: cannot read: {exc}") from None


def json_lines(stream: BinaryIO, stats: ReadStats, name: str = "<input>") -> Iterator[tuple[str, Any]]:
    """Records of an input already known to be JSON lines (e.g. one range of a big file)."""
    yield from _json_lines(_read(stream, name, CHUNK), stream, stats, name)


def _json_lines(head: bytes, stream: BinaryIO, stats: ReadStats, name: str) -> Iterator[tuple[str, Any]]:
    """Scan chunk by chunk *in place*: slicing whole chunks costs a copy of every byte, which
    on this hardware is as slow as the search itself. Only the line that straddles two chunks
    is copied."""
    chunk = head
    leftover = b""      # the start of a line whose end is in a later chunk
    discarding = False  # inside a line longer than MAX_LINE: drop bytes up to its end
    while chunk:
        first_nl = chunk.find(b"\n")
        if first_nl == -1:
            if not discarding:
                leftover += chunk
                if len(leftover) > MAX_LINE:
                    stats.records += 1
                    stats.skipped["line longer than 16 MiB"] += 1
                    leftover, discarding = b"", True
        else:
            if discarding:
                discarding = False
            else:
                line = leftover + chunk[: first_nl + 1] if leftover else chunk[: first_nl + 1]
                stats.records += 1
                yield from _scan_range(line, 0, len(line), stats)
            last_nl = chunk.rfind(b"\n")
            stats.records += chunk.count(b"\n", first_nl + 1)
            yield from _scan_range(chunk, first_nl + 1, last_nl + 1, stats)
            leftover = chunk[last_nl + 1:]
        try:
            chunk = stream.read(CHUNK)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            stats.skipped[f"input truncated or corrupt ({type(exc).__name__})"] += 1
            chunk = b""
    if leftover and not discarding and leftover.strip():
        stats.records += 1  # a last line without its newline
        yield from _scan_range(leftover, 0, len(leftover), stats)


def _scan_block(block: bytes, stats: ReadStats) -> Iterator[tuple[str, Any]]:
    """A whole in-memory input, line by line (the fallback when it is not one document)."""
    stats.records += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
    yield from _scan_range(block, 0, len(block), stats)


def _scan_range(buf: bytes, start: int, end: int, stats: ReadStats) -> Iterator[tuple[str, Any]]:
    """Parse the lines of ``buf[start:end]`` that contain CANDIDATE; never slice the range."""
    pos = buf.find(CANDIDATE, start, end)
    while pos != -1:
        line_start = buf.rfind(b"\n", start, pos) + 1 or start
        line_end = buf.find(b"\n", pos, end)
        if line_end == -1:
            line_end = end
        stats.examined += 1
        try:
            obj = orjson.loads(buf[line_start:line_end])
        except orjson.JSONDecodeError:
            stats.skipped["not JSON"] += 1
        else:
            yield from _classify(obj, stats)
        pos = buf.find(CANDIDATE, line_end, end)


def _classify_document(doc: Any, stats: ReadStats) -> Iterator[tuple[str, Any]]:
    if isinstance(doc, list):
        items: Any = doc
    elif isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
        items = doc.get("items")
        if not isinstance(items, list):
            stats.records += 1
            stats.skipped["List without items"] += 1
            return
    else:
        items = [doc]
    for item in items:
        stats.records += 1
        stats.examined += 1
        yield from _classify(item, stats)


def _classify(obj: Any, stats: ReadStats) -> Iterator[tuple[str, Any]]:
    if not isinstance(obj, dict):
        stats.skipped["not an object"] += 1
        return
    if "object" in obj and "type" in obj:  # a watch event
        if obj.get("type") not in _WATCH_TYPES:
            stats.skipped[f"watch event of type {str(obj.get('type'))[:20]}"] += 1
            return
        obj = obj["object"]
        if not isinstance(obj, dict):
            stats.skipped["watch event without an object"] += 1
            return
    kind = obj.get("kind")
    api = obj.get("apiVersion")
    if kind == "Event" and isinstance(api, str) and api.startswith("audit.k8s.io/"):
        yield "audit", obj
    elif kind == "Event" or (kind is None and "reason" in obj):
        yield "event", obj
    elif isinstance(kind, str) and kind.endswith("List") and isinstance(obj.get("items"), list):
        # A List on one line (e.g. `kubectl get events -o json | jq -c .`): its items are records.
        stats.records += len(obj["items"]) - 1
        for item in obj["items"]:
            yield from _classify(item, stats)
    else:
        stats.skipped["not an Event"] += 1


def _yaml_documents(body: bytes, stats: ReadStats, name: str) -> Iterator[tuple[str, Any]]:
    loader: Callable[..., Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    docs = yaml.load_all(body, Loader=loader)
    first = True
    while True:
        try:
            doc = next(docs)
        except StopIteration:
            return
        except yaml.YAMLError:
            if first:
                # Not YAML from the start (e.g. JSON lines after a garbage line): line by line.
                yield from _scan_block(body, stats)
            else:
                stats.records += 1
                stats.skipped["invalid YAML (rest of the input not read)"] += 1
            return
        if doc is None:
            continue
        if first and not isinstance(doc, (dict, list)):
            yield from _scan_block(body, stats)
            return
        first = False
        yield from _classify_document(doc, stats)
