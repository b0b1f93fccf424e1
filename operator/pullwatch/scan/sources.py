"""Opening an input: file or stdin, compression, text encoding. Damage is recorded, never raised.

A :class:`Source` is a byte stream of UTF-8 text however the input was stored:

* compression is recognized by its magic bytes (never by the file name): gzip (several members
  allowed, as ``cat a.gz b.gz`` makes), bzip2 and xz are decompressed; zstd, zip and tar are
  refused with a message saying how to unpack them;
* a UTF-8 byte-order mark (what Windows tools write) is dropped; UTF-16 and UTF-32 (with a BOM,
  as PowerShell 5's ``>`` writes, or without one, recognized from the NUL pattern of the first
  bytes as RFC 4627 does) are transcoded to UTF-8.

Reading never raises for damaged data. A corrupt or truncated compressed stream ends the Source
at the damage: every byte that decompressed before it is delivered (a zlib stream is re-fed in
small steps from a saved state, so the loss is bytes, not a whole read), and ``damage`` says what
happened and where. The readers above treat the end as an ordinary end of input and the scan
reports the damage with its own exit code.

    >>> import io
    >>> s = Source("x", io.BytesIO(b"\\xef\\xbb\\xbf{}\\n"))
    >>> s.read(100), s.damage
    (b'{}\\n', [])
"""

from __future__ import annotations

import bz2
import codecs
import lzma
import sys
import zlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

READ_SIZE = 1 << 20
# A compressed input is fed to its decompressor in steps this small, so that when it turns out
# to be damaged, little decompressed output is held back in the step that failed.
STEP = 64 << 10
REFEED_STEP = 512

_GZIP, _BZ2, _XZ = b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"
_REFUSED = (
    (
        b"\x28\xb5\x2f\xfd",
        "zstd-compressed: decompress it first (zstd -dc FILE | pullwatch scan -)",
    ),
    (b"PK\x03\x04", "a zip archive: unpack it and scan the files inside"),
)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


class InputError(Exception):
    """An input that cannot be opened at all (missing file, permission, a directory)."""


def open_path(path: str) -> Source:
    """The Source for a path (``-``: standard input; ``s3://``, ``gs://``, ``az://``: an object,
    see ``cloud.py``). Raises :class:`InputError` only when the input cannot be opened;
    everything that goes wrong later is recorded as damage."""
    if path == "-":
        return Source("<stdin>", sys.stdin.buffer, close=False)
    from . import cloud  # here: fsspec is optional, and local scans never load it

    if cloud.is_url(path):
        return Source(path, cloud.open_object(path))  # type: ignore[arg-type]
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    return Source(path, raw)


def expand_inputs(paths: Iterable[str], problems: list[str]) -> Iterator[str]:
    """The inputs ``paths`` name: each local path as given; an object-storage prefix or glob
    as the objects it names (``cloud.expand``). What cannot be listed goes to ``problems``."""
    from . import cloud

    for path in paths:
        if not cloud.is_url(path):
            yield path
            continue
        try:
            yield from cloud.expand(path)
        except InputError as exc:
            problems.append(str(exc))


class Source:
    """UTF-8 bytes of one input, decompressed and transcoded; see the module docstring."""

    def __init__(self, name: str, raw: BinaryIO, close: bool = True):
        self.name = name
        self.damage: list[str] = []
        self._raw, self._close = raw, close
        self._pending = b""  # raw bytes read ahead while sniffing
        self._out = (
            bytearray()
        )  # decoded bytes not yet handed out (appended in place: no quadratic copies)
        self._eof = False
        self.raw_offset = 0  # bytes of the stored input consumed so far
        self._decompress = None  # callable(bytes) -> bytes, raising on damage
        self._decoder = None  # incremental text decoder, or None for UTF-8 as is
        self._first = True
        self._head = b""
        self._sniff()

    # -- public ---------------------------------------------------------------------------
    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left for -1); ``b""`` at the end or the damage."""
        if self._plain and not self._pending and len(self._out) < size:
            # Plain UTF-8: read straight through, no copies (the path of every large uncompressed
            # dump); what is left of the sniffed head goes out with the first read, once.
            head = bytes(self._out)
            self._out.clear()
            data = self._raw_read(size - len(head))
            if not data:
                self._eof = True
            return head + data if head else data
        while (size < 0 or len(self._out) < size) and not self._eof:
            self._fill()
        if size < 0 or size >= len(self._out):
            out = bytes(self._out)
            self._out.clear()
        else:
            out = bytes(self._out[:size])
            del self._out[:size]  # bytearray: dropping the front is cheap
        return out

    def close(self) -> None:
        if self._close:
            self._raw.close()

    # -- internals ------------------------------------------------------------------------
    @property
    def _plain(self) -> bool:
        return self._decompress is None and self._decoder is None and not self._first

    def _raw_read(self, size: int) -> bytes:
        if self._pending:
            out, self._pending = self._pending[:size], self._pending[size:]
            return out
        try:
            data = self._raw.read(size)
        except OSError as exc:
            self.damage.append(f"read error after {self.raw_offset} bytes: {exc.strerror or exc}")
            return b""
        self.raw_offset += len(data)
        return data

    def _sniff(self) -> None:
        try:
            head = self._raw.read(8)
        except OSError as exc:
            self.damage.append(f"read error: {exc.strerror or exc}")
            self._eof = True
            return
        self.raw_offset += len(head)
        self._pending = head
        if head.startswith(_GZIP):
            self._decompress = _ZlibStream(zlib.MAX_WBITS | 16, "gzip").feed
        elif head.startswith(_BZ2):
            self._decompress = _MultiStream(bz2.BZ2Decompressor, "bzip2").feed
        elif head.startswith(_XZ):
            self._decompress = _MultiStream(lzma.LZMADecompressor, "xz").feed
        else:
            for magic, why in _REFUSED:
                if head.startswith(magic):
                    self.damage.append(f"not read: {why}")
                    self._eof = True
                    return

    def _fill(self) -> None:
        raw = self._raw_read(STEP if self._decompress else READ_SIZE)
        if not raw:
            self._finish()
            return
        if self._decompress is not None:
            try:
                data = self._decompress(raw)
            except _Damaged as exc:
                self.damage.append(
                    f"{exc} (at byte {self.raw_offset} of the stored input); "
                    "what came before it was read"
                )
                data, self._eof = exc.salvaged, True
        else:
            data = raw
        self._emit(data)

    def _finish(self) -> None:
        if self._decompress is not None:
            try:
                self._emit(self._decompress(b""))
            except _Damaged as exc:
                self._emit(exc.salvaged)
                self.damage.append(f"{exc}; what came before it was read")
        self._emit(b"", final=True)
        self._eof = True

    def _emit(self, data: bytes, final: bool = False) -> None:
        if self._first:
            # The encoding is known from the first four bytes (a BOM is up to four long).
            self._head += data
            if len(self._head) < 4 and not final:
                return
            self._first = False
            data, self._head = self._choose_encoding(self._head), b""
        if self._decoder is not None:
            # errors="replace": a broken UTF-16 sequence becomes U+FFFD inside one record, which
            # then fails to parse and is counted, instead of ending the whole input.
            data = self._decoder.decode(data, final=final).encode("utf-8", "surrogatepass")
        self._out += data

    def _choose_encoding(self, data: bytes) -> bytes:
        for bom, encoding in _BOMS:
            if data.startswith(bom):
                if encoding != "utf-8":
                    self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
                return data[len(bom) :]
        # No BOM: JSON text starts with an ASCII character, so NULs among the first four bytes
        # give UTF-16/32 away (RFC 4627, section 3).
        head = data[:4]
        if len(head) == 4 and b"\x00" in head:
            encoding = {
                (1, 1, 1, 0): "utf-32-be",
                (0, 1, 1, 1): "utf-32-le",
                (1, 0, 1, 0): "utf-16-be",
                (0, 1, 0, 1): "utf-16-le",
            }.get(tuple(int(b == 0) for b in head))
            if encoding:
                self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        return data


class _Damaged(Exception):
    def __init__(self, message: str, salvaged: bytes):
        super().__init__(message)
        self.salvaged = salvaged


class _ZlibStream:
    """gzip, any number of members, with exact salvage: before each step the decompressor's state
    is copied; when the step fails, it is fed again from the copy in small pieces, so everything
    up to the corrupt spot is delivered."""

    def __init__(self, wbits: int, label: str):
        self.wbits, self.label = wbits, label
        self.d = zlib.decompressobj(wbits)
        self.in_member = False  # part of a member has been fed and its end not reached
        self.members = 0

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        if not data:  # end of the stored input
            if self.in_member:
                raise _Damaged(
                    f"{self.label} data is truncated (it ends inside member {self.members + 1})",
                    b"",
                )
            return b""
        while data:
            if self.members and not self.in_member:
                if not data.strip(b"\x00"):
                    break  # zero padding after the last member, as some tools write
                if not data.startswith(_GZIP[: len(data)]):
                    raise _Damaged(
                        f"data that is not {self.label} follows member {self.members}",
                        b"".join(out),
                    )
            saved = self.d.copy()
            try:
                out.append(self.d.decompress(data))
            except zlib.error as exc:
                out.append(_salvage(saved, data))
                raise _Damaged(f"{self.label} data is corrupt ({exc})", b"".join(out)) from None
            self.in_member = not self.d.eof
            if self.d.eof:
                self.members += 1
                data, self.d = self.d.unused_data, zlib.decompressobj(self.wbits)
            else:
                data = b""
        return b"".join(out)


def _salvage(state, data: bytes) -> bytes:
    """What ``state`` decompresses of ``data`` before the first byte it rejects."""
    got = []
    for i in range(0, len(data), REFEED_STEP):
        before = state.copy()
        try:
            got.append(state.decompress(data[i : i + REFEED_STEP]))
            continue
        except zlib.error:
            pass
        for b in range(i, min(i + REFEED_STEP, len(data))):
            try:
                got.append(before.decompress(data[b : b + 1]))
            except zlib.error:
                break
        break
    return b"".join(got)


class _MultiStream:
    """bzip2 / xz, several concatenated streams allowed. These decompressors cannot be copied, so
    a damaged step loses at most what that step (64 KiB of stored input) would have given."""

    def __init__(self, factory, label: str):
        self.factory, self.label = factory, label
        self.d = factory()
        self.in_stream = False

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        if not data:
            if self.in_stream:
                raise _Damaged(f"{self.label} data is truncated", b"")
            return b""
        while data:
            try:
                out.append(self.d.decompress(data))
            except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:
                raise _Damaged(f"{self.label} data is corrupt ({exc})", b"".join(out)) from None
            self.in_stream = not self.d.eof
            data = b""
            if self.d.eof:
                data, self.d = self.d.unused_data, self.factory()
                if not data.strip(b"\x00"):
                    break
        return b"".join(out)
