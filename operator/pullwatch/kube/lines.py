"""A watch's bytes as lines, whatever their length, and an object's resourceVersion read from bytes.

The API server sends a watch as one JSON object per line. Its lines are as long as the objects:
an Event's ``message`` has no length limit of its own, so one Event of a megabyte (any tenant
with ``create events`` can write one) is a line of a megabyte - longer than any fixed read
buffer (aiohttp's ``readline`` fails past 128 KiB, and the stream that used it retried the same
line for ever). ``Lines`` splits chunks itself and holds at most ``limit`` bytes of one line.

Why ``MAX_LINE`` is 4 MiB: the API server refuses request bodies over 3 MiB (``limit is
3145728``), and etcd refuses to store more than 1.5 MiB per object (measured here: a 2.9 MiB
Event is refused by etcd); what comes back adds only server-set metadata (uid, timestamps,
managedFields: well under a KiB). So every object the API server can store arrives in under
4 MiB, unless its strings are full of characters its JSON encoder escapes (``<`` becomes the six
bytes ``\\u003c``), which no kubelet writes. A line over the bound is skipped - its first
``HEAD`` bytes kept, to read its resourceVersion - and counted; memory stays within ``limit``
plus a chunk per stream.

    >>> lines = Lines(limit=10, head=4)
    >>> lines.feed(b'{"a":1}\\n{"b"')
    [b'{"a":1}']
    >>> lines.feed(b':2}\\n0123456789abcdef\\n')
    [b'{"b":2}', Oversize(head=b'0123', size=16)]
    >>> lines.pending
    0
"""

from __future__ import annotations

import re
from typing import NamedTuple

MAX_LINE = 4 * 1024 * 1024
HEAD = 64 * 1024  # kept of an oversize line: where an object's metadata is


class Oversize(NamedTuple):
    """A line longer than the bound: its first bytes, and how long it was."""

    head: bytes
    size: int


class Lines:
    """Split a byte stream into its lines; a line over ``limit`` bytes becomes an ``Oversize``."""

    def __init__(self, limit: int = MAX_LINE, head: int = HEAD):
        self.limit, self.head = limit, head
        self._buf = bytearray()
        self._skipping = False  # inside an oversize line: dropping its bytes until its end
        self._kept = bytearray()
        self._size = 0

    @property
    def pending(self) -> int:
        """Bytes of a line whose end has not arrived (a stream that ends here was cut)."""
        return self._size if self._skipping else len(self._buf)

    def feed(self, chunk: bytes) -> list[bytes | Oversize]:
        out: list[bytes | Oversize] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if self._skipping:
                self._skip(piece)
            elif self._buf or end < 0:
                self._buf += piece
                if len(self._buf) > self.limit:
                    self._skipping, self._size = True, 0
                    self._skip(self._buf)
                    self._buf = bytearray()
            if end < 0:
                return out
            if self._skipping:
                out.append(Oversize(bytes(self._kept), self._size))
                self._skipping, self._kept, self._size = False, bytearray(), 0
            elif self._buf:
                out.append(bytes(self._buf))
                self._buf = bytearray()
            elif len(piece) > self.limit:
                out.append(Oversize(piece[: self.head], len(piece)))
            elif piece:
                out.append(piece)
            start = end + 1

    def _skip(self, piece: bytes | bytearray) -> None:
        if len(self._kept) < self.head:
            self._kept += piece[: self.head - len(self._kept)]
        self._size += len(piece)


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_SCALAR = re.compile(rb"[^\s\"{}\[\]:,]+")
_SPACE = re.compile(rb"\s*")
WATCHED_VERSION = (b"object", b"metadata", b"resourceVersion")


def resource_version_of(data: bytes, path: tuple[bytes, ...] = WATCHED_VERSION) -> str | None:
    """The string at ``path`` in the JSON ``data`` (which may be cut short), read by structure,
    not by searching: the first ``"resourceVersion"`` in a watched Event may be its own, but in
    a custom resource (keys sorted) a label or annotation named ``resourceVersion`` comes before
    it, and ``involvedObject.resourceVersion`` is whatever the Event's author wrote. Strings are
    skipped whole (a quote inside one is escaped), so nothing inside a value can look like a key.
    ``None`` when the bytes end before it.

    >>> resource_version_of(b'{"type":"ADDED","object":{"metadata":{"annotations":'
    ...     b'{"resourceVersion":"9"},"resourceVersion":"12"},'
    ...     b'"involvedObject":{"resourceVersion":"7"}}}')
    '12'
    >>> resource_version_of(b'{"type":"ADDED","object":{"message":'
    ...     b'"\\\\"resourceVersion\\\\":\\\\"3\\\\"",')
    """
    keys: list[bytes | None] = []  # per open container: its current key (None: a list's)
    objects: list[bool] = []  # per open container: an object (else a list)
    expect_key = False
    pos, n = 0, len(data)
    while True:
        pos = _SPACE.match(data, pos).end()  # type: ignore[union-attr]
        if pos >= n:
            return None
        c = data[pos]
        pos += 1
        if c == 0x7B or c == 0x5B:  # { [
            keys.append(None)
            objects.append(c == 0x7B)
            expect_key = c == 0x7B
        elif c == 0x7D or c == 0x5D:  # } ]
            if not keys:
                return None
            keys.pop()
            objects.pop()
            expect_key = False
        elif c == 0x2C:  # ,
            expect_key = bool(objects) and objects[-1]
        elif c == 0x3A:  # :
            expect_key = False
        elif c == 0x22:  # "
            m = _STRING.match(data, pos - 1)
            if m is None:
                return None  # a string cut short
            pos = m.end()
            if expect_key:
                keys[-1] = m.group()[1:-1]
            elif len(keys) == len(path) and tuple(keys) == path:
                return m.group()[1:-1].decode("utf-8", "replace")
        else:
            m = _SCALAR.match(data, pos - 1)
            if m is None:
                return None
            pos = m.end()
