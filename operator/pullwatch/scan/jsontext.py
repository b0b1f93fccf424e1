"""Records of JSON text that is not one-value-per-line: streamed, with bounded memory, resynced
after damage.

This covers what ``kubectl`` and friends really print:

* concatenated values, one after another, indented over many lines or not
  (``kubectl get events -w -o json`` prints one indented object per Event; with
  ``--output-watch-events`` each is wrapped in ``{"type": …, "object": …}``);
* one document: a List (``kubectl get events -o json``; ``kubectl get --raw …/events``, which is
  a single line of any length) or an array; its ``items`` are streamed one by one, so a 1 GB List
  never sits in memory.

No library does this with recovery (a streaming parser such as ijson stops at the first error),
so the boundaries are found here by a small tokenizer that skips whole strings and tracks
brackets; each record found is then parsed by orjson, and only if it could be a pull (the bytes
``image \\"``), exactly as for JSON lines. Strings cannot span lines in JSON, so a string left open
at the end of a line is damage, found on that line.

After damage the reader resynchronizes at the next place a record can start and carries on; the
damaged part is counted (``ReadStats.damaged``). In an indented input, an opening brace at the
indentation of the current record's own first line starts a new record even inside an unclosed
one: a record cut short is then lost alone, not together with its neighbours. A compact
(single-line) document damaged inside a string may lose more: the damage is still reported.

    >>> from .records import ReadStats
    >>> import io
    >>> stats = ReadStats()
    >>> text = b'{\\n  "reason": "Pulling"\\n}\\n{\\n  "reason": "Pulled"\\n}\\n'
    >>> [obj["reason"] for obj in json_values(io.BytesIO(text), stats)]
    ['Pulling', 'Pulled']
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson

from ..core import audit, exports
from ..core.pods import CANDIDATE as POD_CANDIDATE
from ..core.pulls import CANDIDATE

CHUNK = 4 << 20
MAX_RECORD = 16 << 20  # a longer record is not trusted: skipped (counted), the rest read on
SAMPLE = 8  # the first records are parsed whatever they hold, to tell what the input is
# Top-level keys whose arrays are streamed item by item: a List's items, an Azure Event Hubs
# message's records, `aws logs filter-log-events`' events (a year of them is one document).
_LIST_KEYS = (b'"items"', b'"records"', b'"events"')

# A whole string (no raw newline inside, escapes allowed), a bracket, or a quote that opens a
# string not closed on its line. Possessive: no backtracking on long strings.
_TOKEN = re.compile(rb'"(?:[^"\\\n]|\\[^\n])*+"|[\[\]{}]|"')
_OPEN, _CLOSE = {ord("{"): ord("}"), ord("["): ord("]")}, {ord("}"), ord("]")}
_WS = b" \t\r\n"


class _Need(Exception):
    """The buffer ends inside a token: read more, then scan again from ``at``."""

    def __init__(self, at: int):
        self.at = at


def json_values(stream: BinaryIO, stats, head: bytes = b"") -> Iterator[dict[str, Any]]:
    """Yield every record's object (candidates, and the first few whatever they are); count the
    rest in ``stats``. ``head``: bytes already read from ``stream``."""
    yield from _Reader(stream, stats, head).run()


class _Reader:
    def __init__(self, stream: BinaryIO, stats, head: bytes):
        self.stream, self.stats = stream, stats
        self.buf, self.eof = head, False
        self.stack: list[int] = []  # open brackets
        self.mode = ""  # "object": the top-level object is a record; "array"/"list":
        #                              its elements (a List's items) are the records
        self.rec_start = -1  # where the current record starts in buf; -1: none
        self.rec_depth = 0  # bracket depth just outside the current record
        self.rec_indent: bytes | None = None  # indentation of the record's first line
        self.oversize = False  # current record too long: its bytes are dropped, its end sought
        self.key = b""  # last key seen at depth 1 of a top-level object
        self.envelope: dict[str, Any] = {}
        self.gap_start = 0  # where the text between top-level values starts
        self.gap_dirty = False  # that text held something that is not JSON
        self.skip_to = 0  # tokens before this were resynchronized past
        self.resyncing = False  # after damage: leftovers of the damaged structure are noise
        self.seen = 0  # records found in this input
        self.kinds: set[str] = set()  # what the sample showed (exports.record_kind, _wanted)

    # -- driving --------------------------------------------------------------------------
    def run(self) -> Iterator[dict[str, Any]]:
        pos = 0
        while True:
            try:
                yield from self._scan(pos)
                pos = len(self.buf)
            except _Need as need:
                pos = need.at
            if self.eof:
                break
            pos = self._refill(pos)
        self._finish()

    def _refill(self, pos: int) -> int:
        data = self.stream.read(CHUNK)
        self.eof = not data
        keep = pos
        if not self.stack:
            self._note_gap(pos)
        if self.rec_start >= 0:
            if pos - self.rec_start > MAX_RECORD:
                self._damage("record longer than 16 MiB (not read)")
                self.rec_start, self.oversize = -1, True
            else:
                keep = self.rec_start
        self.buf = self.buf[keep:] + data
        for name in ("rec_start", "gap_start", "skip_to"):
            value = getattr(self, name)
            if value >= 0:
                setattr(self, name, max(0, value - keep))
        return pos - keep

    def _finish(self) -> None:
        if self.stack:
            if self.rec_start >= 0 or self.oversize or not self.resyncing:
                self._damage("input ends inside a JSON value (truncated)")
            return
        self._note_gap(len(self.buf))
        if self.gap_dirty:
            self._damage("text that is not JSON")

    # -- the tokenizer --------------------------------------------------------------------
    def _scan(self, pos: int) -> Iterator[dict[str, Any]]:
        buf = self.buf
        search = _TOKEN.search
        while True:
            m = search(buf, max(pos, self.skip_to))
            if m is None:
                return
            start, end = m.span()
            pos = end
            c = buf[start]
            if not self.stack:
                if c in _OPEN:
                    self._top_value(start, c)
                    if c == 0x7B:
                        skipped = yield from self._fast_record(start, top=True)
                        if skipped:
                            pos = skipped
                            continue
                    self.stack.append(c)
                elif (
                    c == 0x22 and end - start == 1 and buf.find(b"\n", start) == -1 and not self.eof
                ):
                    raise _Need(start)  # could be a string that continues in the next chunk
                continue  # strings or stray closers between values: part of the gap
            if c == 0x22:
                if end - start == 1:
                    self._open_string(start)
                elif len(self.stack) == 1 and self.mode == "object":
                    self._maybe_key(buf, start, end)
                continue
            if c in _OPEN:
                if self.rec_start >= 0 and c == 0x7B and self._same_indent(start):
                    # A record cut short: the next one starts at the record's own indentation.
                    self._damage("JSON record cut short (the next one starts inside it)")
                    del self.stack[self.rec_depth :]
                    self._begin(start, self.rec_depth)
                elif self.rec_start < 0 and not self.oversize and self._opens_record():
                    if c == 0x7B:
                        skipped = yield from self._fast_record(start, top=False)
                        if skipped:
                            pos = skipped
                            continue
                    self._begin(start, len(self.stack))
                elif (
                    self.mode == "object"
                    and len(self.stack) == 1
                    and c == 0x5B
                    and self.key in _LIST_KEYS
                ):
                    self.mode, self.rec_start, self.oversize = "list", -1, False  # a List's items
                self.stack.append(c)
                continue
            if _OPEN[self.stack[-1]] != c:
                self._damage("JSON brackets do not match")
                self._resync(start + 1)
                continue
            self.stack.pop()
            if len(self.stack) == self.rec_depth and (self.rec_start >= 0 or self.oversize):
                if self.rec_start >= 0:
                    record, self.rec_start = buf[self.rec_start : end], -1
                    yield from self._record(record)
                self.oversize = False
            if not self.stack:
                self.mode, self.key, self.envelope = "", b"", {}
                self.gap_start = end

    def _fast_record(self, start: int, top: bool) -> Iterator[dict[str, Any]]:
        """The fast path for indented input (what kubectl, jq and friends print): a record whose
        first line holds only its ``{`` ends at the first line holding only ``}`` at the same
        indentation, found with ``bytes.find`` instead of token by token. Taken only when nothing
        contradicts it: no new record opening at that indentation before it, braces that balance,
        (at top level) no ``"items"`` key that would make it a List to stream, and - for a record
        that is parsed - orjson accepting it. Returns the offset after the record, or 0 when the
        tokenizer must take this record (it then handles any damage exactly)."""
        buf = self.buf
        line = buf.rfind(b"\n", 0, start) + 1
        indent = buf[line:start]
        if indent.strip(b" \t") or buf[start + 1 : start + 2] != b"\n":
            return 0
        close = buf.find(b"\n" + indent + b"}", start)
        if close == -1:
            if not self.eof and len(buf) - start <= MAX_RECORD:
                raise _Need(line if top else start)  # its end is in a later chunk: read on
            return 0
        after = close + 2 + len(indent)
        if (
            buf[after : after + 1] not in (b"\n", b",", b"\r", b"")
            or buf.find(b"\n" + indent + b"{", start, close) != -1
            or buf.count(b"{", start, after) != buf.count(b"}", start, after)
        ):
            return 0
        record = buf[start:after]
        if top and b'"items"' in record:
            return 0  # perhaps a List: the tokenizer streams its items
        self.stats.records += 1
        self.seen += 1
        if not self._wanted(record) and self.seen > SAMPLE and not self.resyncing:
            self._after_fast(after, top)
            return after
        try:
            obj = orjson.loads(record)
        except orjson.JSONDecodeError:
            self.stats.records -= 1
            self.seen -= 1
            return 0
        self.stats.examined += 1
        self._after_fast(after, top)
        yield from self._emit(obj)
        return after

    def _after_fast(self, after: int, top: bool) -> None:
        if top:
            self.mode, self.rec_start = "", -1
            self.gap_start = after

    def _top_value(self, start: int, c: int) -> None:
        self._note_gap(start)
        if self.gap_dirty:
            self._damage("text that is not JSON")
            self.gap_dirty = False
        self.mode = "object" if c == 0x7B else "array"
        if c == 0x7B:
            self._begin(start, 0)

    def _note_gap(self, upto: int) -> None:
        gap = self.buf[self.gap_start : upto]
        if gap.strip(_WS + b",") and not self.resyncing:
            self.gap_dirty = True
        self.gap_start = upto

    def _opens_record(self) -> bool:
        depth = len(self.stack)
        return (self.mode == "array" and depth == 1) or (self.mode == "list" and depth == 2)

    def _begin(self, start: int, depth: int) -> None:
        self.rec_start, self.rec_depth = start, depth
        line = self.buf.rfind(b"\n", 0, start) + 1
        indent = self.buf[line:start]
        self.rec_indent = indent if not indent.strip(b" \t") else None

    def _same_indent(self, start: int) -> bool:
        if self.rec_indent is None or len(self.stack) <= self.rec_depth:
            return False
        line = self.buf.rfind(b"\n", 0, start) + 1
        return line > self.rec_start and self.buf[line:start] == self.rec_indent

    def _open_string(self, start: int) -> None:
        newline = self.buf.find(b"\n", start)
        if newline == -1 and not self.eof:
            raise _Need(start)
        self._damage("JSON string not closed on its line")
        self._resync(newline + 1 if newline != -1 else len(self.buf))

    def _maybe_key(self, buf: bytes, start: int, end: int) -> None:
        after = end
        while after < len(buf) and buf[after] in _WS:
            after += 1
        if after >= len(buf) and not self.eof:
            raise _Need(start)
        if after < len(buf) and buf[after] == 0x3A:  # followed by ':' - a key
            self.key = buf[start:end]
            return
        if self.key in (b'"apiVersion"', b'"kind"'):
            try:
                self.envelope[self.key[1:-1].decode()] = orjson.loads(buf[start:end])
            except orjson.JSONDecodeError:
                pass
        self.key = b""

    def _resync(self, at: int) -> None:
        self.stack.clear()
        self.mode, self.rec_start, self.oversize, self.key = "", -1, False, b""
        self.resyncing, self.skip_to, self.gap_start = True, at, at

    def _damage(self, reason: str) -> None:
        self.stats.damaged[reason] += 1
        self.stats.records += 1

    # -- records --------------------------------------------------------------------------
    def _record(self, data: bytes) -> Iterator[dict[str, Any]]:
        stats = self.stats
        stats.records += 1
        self.seen += 1
        if not self._wanted(data) and self.seen > SAMPLE and not self.resyncing:
            return
        stats.examined += 1
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            stats.damaged["damaged JSON record"] += 1
            return
        yield from self._emit(obj)

    def _wanted(self, data: bytes) -> bool:
        """Could this record be of use? An image Event; once the sample showed audit entries
        (or a cloud's export of them) or Pods, also what ``audit.wanted`` or a started
        container's bytes admit."""
        if CANDIDATE in data:
            return True
        if not self.kinds:
            return False
        if self.kinds & exports.AUDIT_KINDS and audit.wanted(data):
            return True
        return "pod" in self.kinds and POD_CANDIDATE in data

    def _emit(self, obj: Any) -> Iterator[dict[str, Any]]:
        stats = self.stats
        if self.seen <= SAMPLE:
            kind = exports.record_kind(obj)
            if kind:
                self.kinds.add(kind)
        if not isinstance(obj, dict):
            stats.unrecognized += 1
            stats.skipped["not an object"] += 1
            return
        if (
            self.mode == "list"
            and isinstance(self.envelope.get("apiVersion"), str)
            and "apiVersion" not in obj
        ):
            # Raw API Lists (kubectl get --raw) carry the apiVersion once, on the List.
            obj["apiVersion"] = self.envelope["apiVersion"]
        if self.resyncing:
            if not _recognizable(obj):
                return  # a fragment of the damaged structure
            self.resyncing = False
        yield obj


def _recognizable(obj: dict[str, Any]) -> bool:
    return (
        "reason" in obj
        or "object" in obj
        or "auditID" in obj
        or obj.get("kind") == "Pod"
        or exports.export_kind(obj) is not None
    )
