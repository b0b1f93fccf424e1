"""Reading event dumps and audit logs: format detection, streaming, and the cheap pre-filter.

Formats, detected from content (never from the file name), gzip accepted, ``-`` is stdin:

* JSON lines: watch events ``{"type": …, "object": <Event>}`` (``kubectl get events -w -o json``,
  log forwarders), bare Event lines, audit.k8s.io/v1 entries, a List on one line;
* one JSON document: ``kubectl get events -A -o json`` (a v1 List), a single Event, an array;
* YAML: the same as ``-o yaml``, several documents allowed.

Speed: a line that does not contain "pull" (any case) cannot be a kubelet image event or its
audit record, so it is counted but never parsed. Lines are found from the matches outward, so
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

CHUNK = 4 << 20
MAX_LINE = 16 << 20  # a longer "line" is not a record we can trust; skip it, keep going
_GZIP_MAGIC = b"\x1f\x8b"
_WATCH_TYPES = {"ADDED", "MODIFIED", "DELETED"}


class InputError(Exception):
    """A whole input cannot be read (missing file, unreadable, corrupt compression)."""


@dataclass
class ReadStats:
    records: int = 0     # lines or documents/items read
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
    try:
        head = stream.read(CHUNK)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{name}: cannot read: {exc}") from None
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
    body = head + _read_rest(stream, name)
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


def _read_rest(stream: BinaryIO, name: str) -> bytes:
    try:
        return stream.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{name}: cannot read: {exc}") from None


def _json_lines(head: bytes, stream: BinaryIO, stats: ReadStats, name: str) -> Iterator[tuple[str, Any]]:
    pending = head
    discarding = False  # inside a line longer than MAX_LINE: drop bytes up to its end
    while True:
        try:
            chunk = stream.read(CHUNK)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            stats.skipped[f"input truncated or corrupt ({type(exc).__name__})"] += 1
            chunk = b""
        if chunk:
            pending += chunk
            if discarding:
                end = pending.find(b"\n")
                if end == -1:
                    pending = b""
                    continue
                pending, discarding = pending[end + 1:], False
            cut = pending.rfind(b"\n") + 1
            if cut == 0:
                if len(pending) > MAX_LINE:
                    stats.records += 1
                    stats.skipped["line longer than 16 MiB"] += 1
                    pending, discarding = b"", True
                continue
            block, pending = pending[:cut], pending[cut:]
        else:
            block, pending = (b"", b"") if discarding else (pending, b"")
        if block:
            yield from _scan_block(block, stats)
        if not chunk:
            return


def _scan_block(block: bytes, stats: ReadStats) -> Iterator[tuple[str, Any]]:
    stats.records += block.count(b"\n") + (0 if block.endswith(b"\n") else 1) - _blank_lines(block)
    lowered = block.lower()
    pos = lowered.find(b"pull")
    while pos != -1:
        line_start = block.rfind(b"\n", 0, pos) + 1
        line_end = block.find(b"\n", pos)
        if line_end == -1:
            line_end = len(block)
        stats.examined += 1
        try:
            obj = orjson.loads(block[line_start:line_end])
        except orjson.JSONDecodeError:
            stats.skipped["not JSON"] += 1
        else:
            yield from _classify(obj, stats)
        pos = lowered.find(b"pull", line_end)


def _blank_lines(block: bytes) -> int:
    n = block.count(b"\n\n") + (1 if block.startswith(b"\n") else 0)
    return n + (block.count(b"\n\r\n") if b"\r" in block else 0)


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
