"""Records of YAML input, streamed document by document and List item by List item.

PyYAML reads a whole stream as one: one bad document ends it, and a List is built whole. Here
the text is split first, by lines, on what a YAML printer writes at column 0:

* documents are separated by ``---`` (and ended by ``...``), as ``kubectl get -w -o yaml`` and
  multi-document files have them;
* in a document whose ``items:`` key opens a block sequence (``kubectl get events -o yaml``),
  each ``- `` item at that sequence's indentation is a record of its own.

Each document or item is then parsed on its own (libyaml through PyYAML), so a bad one is counted
as damage and the reader carries on with the next; memory holds one record at a time, at most
16 MiB. Only records that could hold a pull (the bytes ``image``: every image event's message
names the image after that word) are parsed, and the first few whatever they hold (to tell what
the input is).

Timestamps stay strings, as Kubernetes' own YAML-to-JSON conversion keeps them (PyYAML would
make ``datetime`` objects of unquoted ones, and reject impossible dates with an exception).

    >>> from .records import ReadStats
    >>> import io
    >>> text = b"reason: Pulling\\n---\\nfoo: [unclosed\\n---\\nreason: Pulled\\n"
    >>> stats = ReadStats()
    >>> [d["reason"] for d in yaml_values(io.BytesIO(text), stats)], dict(stats.damaged)
    (['Pulling', 'Pulled'], {'invalid YAML document': 1})
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, BinaryIO

import yaml

CHUNK = 4 << 20
MAX_RECORD = 16 << 20
SAMPLE = 8
CANDIDATE = b"image"

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loading (no Python objects), with timestamps kept as strings."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


def load(text: bytes | str) -> Any:
    """One YAML document; raises ``ValueError`` with a short reason for anything that fails."""
    try:
        return yaml.load(text, Loader=Loader)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as exc:
        raise ValueError(str(exc).split("\n", 1)[0][:200] or type(exc).__name__) from None


def load_all(text: bytes) -> Iterator[Any]:
    """Every document of a stream, for small trusted-size inputs (allowlists); ``ValueError``."""
    try:
        yield from yaml.load_all(text, Loader=Loader)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as exc:
        raise ValueError(str(exc).split("\n", 1)[0][:200] or type(exc).__name__) from None


_SEPARATOR = re.compile(rb"^(?:---|\.\.\.)(?:[ \t]|\r?$)")
_ITEMS_KEY = re.compile(rb"^items:[ \t]*(?:#.*)?\r?$")
_ITEM = re.compile(rb"^( *)-(?:[ \t]|\r?$)")
_API_VERSION = re.compile(rb"^apiVersion:[ \t]*['\"]?([^'\"\s#]+)")


def yaml_values(stream: BinaryIO, stats, head: bytes = b"") -> Iterator[Any]:
    """Yield the object of every parsed document or List item; count the rest in ``stats``."""
    reader = _Reader(stats)
    for line in _lines(stream, head, stats):
        yield from reader.line(line)
    yield from reader.end_document()


def _lines(stream: BinaryIO, head: bytes, stats) -> Iterator[bytes]:
    buf, dropping = head, False
    while True:
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl == -1:
                break
            if dropping:
                dropping = False
            else:
                yield buf[start : nl + 1]
            start = nl + 1
        buf = buf[start:]
        if len(buf) > MAX_RECORD:
            stats.records += 1
            stats.damaged["YAML line longer than 16 MiB (not read)"] += 1
            buf, dropping = b"", True
        data = stream.read(CHUNK)
        if not data:
            if buf and not dropping:
                yield buf + b"\n"
            return
        buf += data


class _Reader:
    def __init__(self, stats):
        self.stats = stats
        self.doc: list[bytes] = []  # the current document's lines outside any List item
        self.doc_size = 0
        self.item: list[bytes] = []  # the current List item's lines
        self.item_size = 0
        self.items_indent: int | None = None  # inside `items:` - the indentation of its '- '
        self.after_items_key = False
        self.api_version: str | None = None
        self.oversize = False
        self.seen = 0

    def line(self, line: bytes) -> Iterator[Any]:
        if _SEPARATOR.match(line):
            yield from self.end_document()
            return
        if self.after_items_key:
            stripped = line.strip()
            if not stripped or stripped.startswith(b"#"):
                self._keep(line)
                return
            self.after_items_key = False
            m = _ITEM.match(line)
            if m:
                self.items_indent = len(m.group(1))
        if self.items_indent is not None:
            m = _ITEM.match(line)
            stripped = line.strip()
            if m and len(m.group(1)) == self.items_indent:
                yield from self.end_item()
                self._add_item(line)
                return
            indent = len(line) - len(line.lstrip(b" "))
            if not stripped or stripped.startswith(b"#") or indent > self.items_indent:
                self._add_item(line)
                return
            yield from self.end_item()  # dedent: the sequence is over
            self.items_indent = None
        if _ITEMS_KEY.match(line):
            self.after_items_key = True
            m = next(filter(None, (_API_VERSION.match(x) for x in self.doc)), None)
            self.api_version = m.group(1).decode(errors="replace") if m else None
        self._keep(line)

    def _keep(self, line: bytes) -> None:
        if self.oversize:
            return
        self.doc.append(line)
        self.doc_size += len(line)
        if self.doc_size > MAX_RECORD:
            self._damage("YAML document longer than 16 MiB (not read)")
            self.doc, self.doc_size, self.oversize = [], 0, True

    def _add_item(self, line: bytes) -> None:
        if self.item_size < 0:
            return  # the current item is too long: dropped
        self.item.append(line)
        self.item_size += len(line)
        if self.item_size > MAX_RECORD:
            self._damage("YAML List item longer than 16 MiB (not read)")
            self.item, self.item_size = [], -1

    def end_item(self) -> Iterator[Any]:
        text, self.item, size = b"".join(self.item), [], self.item_size
        self.item_size = 0
        if size <= 0 or not text.strip():
            return
        value = self._parse(text, "invalid YAML List item")
        if value is _NOTHING:
            return
        if not isinstance(value, list) or len(value) != 1:
            self.stats.damaged["invalid YAML List item"] += 1
            return
        item = value[0]
        if isinstance(item, dict) and "apiVersion" not in item and self.api_version:
            item["apiVersion"] = self.api_version  # a List that names its items' apiVersion once
        yield item

    def end_document(self) -> Iterator[Any]:
        yield from self.end_item()
        text = b"".join(self.doc)
        in_list = (
            self.items_indent is not None or self.after_items_key or self.api_version is not None
        )
        self.doc, self.doc_size, self.items_indent, self.after_items_key = [], 0, None, False
        self.api_version, oversize, self.oversize = None, self.oversize, False
        if oversize or in_list or not _content(text):
            return  # a List's envelope holds no records of its own
        value = self._parse(text, "invalid YAML document")
        if value is not _NOTHING and value is not None:
            yield value

    def _parse(self, text: bytes, damage: str) -> Any:
        self.stats.records += 1
        self.seen += 1
        if CANDIDATE not in text and self.seen > SAMPLE:
            return _NOTHING
        self.stats.examined += 1
        try:
            return load(text)
        except ValueError:
            self.stats.damaged[damage] += 1
            return _NOTHING

    def _damage(self, reason: str) -> None:
        self.stats.records += 1
        self.stats.damaged[reason] += 1


_NOTHING = object()


def _content(text: bytes) -> bool:
    """Does the document hold anything but blank lines, comments and directives?"""
    return any(s and not s.startswith((b"#", b"%")) for s in (x.strip() for x in text.split(b"\n")))
