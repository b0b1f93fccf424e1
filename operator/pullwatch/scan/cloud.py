"""Inputs in object storage: ``s3://``, ``gs://`` and ``az://`` URLs, read through fsspec and the
filesystem package each provider's users already rely on (s3fs, gcsfs, adlfs: the optional
extra ``pullwatch[cloud]``).

An object is streamed like a local file (``sources.Source`` sniffs its compression and encoding
from its bytes): ranged GETs of ``PIECE`` bytes, ``AHEAD`` of them in flight while the reader
parses, so network waits overlap the work; on S3 every GET is pinned to the ETag read when the
object was opened (an object overwritten mid-scan is damage, not a mix of two versions), and made
as plain HTTP on a URL s3fs signs (presigned.py: less than half the CPU).

Which objects a URL names is decided here:

* ``s3://bucket/key``: that object (a prefix without the trailing ``/`` is refused with a hint);
* ``s3://bucket/prefix/`` or ``s3://bucket``: every object under it, in key order;
* a glob (``*``, ``?``, ``[…]``) in the key: every object matching it, in key order.

Credentials and endpoints come from each library's usual sources (environment, profiles,
metadata services; ``AWS_ENDPOINT_URL`` for an S3-compatible server) and from fsspec's own
configuration (``FSSPEC_S3_ENDPOINT_URL``, ``~/.config/fsspec/*.json``), which wins over the
defaults set here.
"""

from __future__ import annotations

import concurrent.futures
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from .sources import InputError

# One ranged GET: the reader's own chunk (records.CHUNK), so that pieces are handed on whole,
# never sliced; each GET has a cost of its own (a request, a response: milliseconds of CPU), so
# smaller pieces cost more.
PIECE = 4 << 20
AHEAD = 3  # GETs in flight per reader
MAX_OBJECTS = 100_000  # a prefix or glob naming more is refused (narrow it)
# What the reads of this process found worth telling the user, though nothing was lost (an
# endpoint that refused presigned GETs: its objects cost twice the CPU); each text once.
_NOTICES: dict[str, None] = {}


def notice(text: str) -> None:
    _NOTICES.setdefault(text, None)


def take_notices() -> list[str]:
    """The notices given since the last call, in order, each once."""
    out = list(_NOTICES)
    _NOTICES.clear()
    return out


def refused_endpoints() -> set[str]:
    """The endpoints this process found refusing presigned GETs (none if it made none)."""
    presigned = sys.modules.get(f"{__package__}.presigned")
    return set(presigned._REFUSED_ENDPOINTS) if presigned is not None else set()


def learn_refused(endpoints: set[str]) -> None:
    """What a worker found: the objects read after it (each by a pool forked from this process)
    go to s3fs's own GETs at once, instead of each worker trying each endpoint again."""
    if endpoints:
        from . import presigned

        presigned._REFUSED_ENDPOINTS.update(endpoints)


_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
}
_HINTS = {
    "s3fs": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials",
    "gcsfs": "GOOGLE_APPLICATION_CREDENTIALS or gcloud auth application-default login",
    "adlfs": "AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with a key, SAS "
    "token or an Azure AD login",
}
# Deadlines for every call: botocore's defaults (60 s to connect, legacy retries) leave a scan
# of an unreachable endpoint hanging for minutes, and gcsfs sets none of its own (aiohttp's
# 5 minutes apply). The Azure SDK's (20 s to connect, 60 s to read) are kept. fsspec
# configuration overrides these.
_S3_DEFAULTS = {
    "config_kwargs": {
        "connect_timeout": 10,
        "read_timeout": 60,
        "retries": {"max_attempts": 4, "mode": "standard"},
        "signature_version": "s3v4",  # presigned URLs too (presigned.py): SigV2 is retired
    }
}
_DEFAULTS = {
    "s3": _S3_DEFAULTS,
    "s3a": _S3_DEFAULTS,
    "gs": {"requests_timeout": 60},
    "gcs": {"requests_timeout": 60},
}
_GLOB = frozenset("*?[")

HELP = """object storage (pip install 'pullwatch[cloud]'):
  s3://BUCKET/KEY, gs://BUCKET/KEY, az://CONTAINER/BLOB   one object, read like a file
  s3://BUCKET/PREFIX/  (trailing /)   every object under the prefix, in key order
  s3://BUCKET/2026-01-*/audit.log*    every object matching the glob (* ? [...])
  A prefix given without its trailing / is refused, not guessed. Credentials come from each
  library's usual sources (AWS_* variables and profiles; GOOGLE_APPLICATION_CREDENTIALS;
  AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME with a key). S3-compatible
  servers: AWS_ENDPOINT_URL=http://host:port, or fsspec's configuration (FSSPEC_S3_ENDPOINT_URL,
  ~/.config/fsspec/). An object of JSON lines of 64 MiB or more is read by every core, each
  with its own ranged GETs."""


def scheme(path: str) -> str | None:
    """The object-storage scheme of ``path``, or None for a local path.

    >>> scheme("s3://bucket/audit.log"), scheme("GS://b/k"), scheme("./s3:/x"), scheme("-")
    ('s3', 'gs', None, None)
    """
    head, sep, _ = path.partition("://")
    return head.lower() if sep and head.lower() in _PACKAGES else None


def is_url(path: str) -> bool:
    return scheme(path) is not None


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for an object-storage URL; InputError if the
    optional packages are missing."""
    proto = scheme(url)
    assert proto is not None, url
    package = _PACKAGES[proto]
    try:
        import fsspec.config
        from fsspec.core import url_to_fs

        configured = fsspec.config.conf.get(proto, {})
        options = {k: v for k, v in _DEFAULTS.get(proto, {}).items() if k not in configured}
        # url_to_fs, not fsspec.filesystem: it takes what the URL itself says (an Azure
        # account in abfs://container@account.dfs.core.windows.net/...).
        return url_to_fs(url, **options)
    except ImportError:
        raise InputError(
            f"{url}: reading {proto}:// needs {package}: pip install 'pullwatch[cloud]'"
        ) from None
    except Exception as exc:  # a filesystem that cannot even be set up: say why
        raise InputError(describe(url, exc)) from None


def describe(url: str, exc: BaseException) -> str:
    """A one-line message for what went wrong with an object, with what to check."""
    proto = scheme(url) or ""
    package = _PACKAGES.get(proto, "")
    text = " ".join(str(exc).split())[:200]
    name = type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        detail = f" ({text})" if text and text not in url else ""
        return f"{url}: no such object{detail}"
    if isinstance(exc, PermissionError) or "Credential" in name or "Authentication" in name:
        return (
            f"{url}: access refused ({text or name}): check the credentials "
            f"({_HINTS.get(package, 'see the provider documentation')})"
        )
    if isinstance(exc, ImportError):
        return f"{url}: reading {proto}:// needs {package}: pip install 'pullwatch[cloud]'"
    if "Connect" in name or "Timeout" in name or isinstance(exc, ConnectionError):
        return f"{url}: cannot reach the storage service ({name}: {text})"
    if package == "adlfs" and "account_name" in text:
        return f"{url}: no Azure storage account given: set {_HINTS['adlfs']}"
    return f"{url}: {name}: {text}" if text else f"{url}: {name}"


def expand(url: str) -> list[str]:
    """The object URLs ``url`` names (see the module docstring); InputError when none."""
    fs, path = filesystem(url)
    proto = scheme(url)
    key = url.split("://", 1)[1].partition("/")[2]  # as given: fsspec drops a trailing /
    try:
        if _GLOB & set(key):
            found = fs.glob(path, detail=True)
            what = "no object matches"
        elif not key or key.endswith("/"):
            found = fs.find(path, detail=True)
            what = "no objects under"
        else:
            return [url]
    except Exception as exc:
        raise InputError(describe(url, exc)) from None
    objects = sorted(
        name
        for name, info in found.items()
        if info.get("type") == "file" and not name.endswith("/")  # folder markers
    )
    if not objects:
        raise InputError(f"{what} {url}")
    if len(objects) > MAX_OBJECTS:
        raise InputError(f"{url}: more than {MAX_OBJECTS} objects: narrow the prefix or glob")
    # The URL's own bucket (or container@account) part, then each object's key.
    root = url.split("://", 1)[1].partition("/")[0]
    return [f"{proto}://{root}/{name.partition('/')[2]}" for name in objects]


def object_size(url: str) -> int:
    """The size of one object; InputError (with a hint) for anything that is not one."""
    fs, path = filesystem(url)
    try:
        info = fs.info(path)
    except Exception as exc:
        raise InputError(describe(url, exc)) from None
    if info.get("type") != "file":
        raise InputError(
            f"{url}: a prefix, not an object: end it with / to scan every object under it"
        )
    return int(info.get("size") or 0)


def open_object(url: str, start: int = 0, end: int | None = None) -> RangeReader:
    """A reader of ``url``'s bytes ``[start, end)`` (to its end by default)."""
    size = object_size(url)
    fs, path = filesystem(url)
    try:
        f = fs.open(path, "rb", cache_type="none", block_size=PIECE)
    except Exception as exc:
        raise InputError(describe(url, exc)) from None
    fetch = f._fetch_range  # what fsspec's caches call for each block
    if scheme(url) in ("s3", "s3a"):
        from .presigned import signed_fetcher

        etag = (getattr(f, "details", None) or {}).get("ETag")
        fetch = signed_fetcher(fs, path, etag, fetch) or fetch
    return RangeReader(url, f, fetch, start, size if end is None else min(end, size))


class RangeReader:
    """``read(n)`` over ``[start, end)`` of an fsspec file, fetched ahead in pieces.

    ``fetch(start, stop)``: a stateless ranged GET pinned to the object's version (on S3 the
    ETag as ``If-Match``; presigned.py says how S3's are made), so several can be in flight at
    once. Any failure surfaces as ``OSError`` from ``read``, which ``Source`` records as damage
    with the offset reached."""

    def __init__(self, url: str, f: Any, fetch: Callable[[int, int], bytes], start: int, end: int):
        self.url, self._file, self._fetch_piece = url, f, fetch
        self._next, self._end, self._piece_size = start, end, PIECE
        self._pool = concurrent.futures.ThreadPoolExecutor(AHEAD, thread_name_prefix="fetch")
        self._pending: deque[concurrent.futures.Future] = deque()
        self._piece, self._offset = b"", 0
        self._failed: OSError | None = None
        self._fill()

    def _fill(self) -> None:
        while len(self._pending) < AHEAD and self._next < self._end:
            stop = min(self._next + self._piece_size, self._end)
            self._pending.append(self._pool.submit(self._fetch, self._next, stop))
            self._next = stop

    def _fetch(self, start: int, stop: int) -> bytes:
        data = self._fetch_piece(start, stop)
        if len(data) != stop - start:
            raise OSError(f"the object changed while it was read (byte {start + len(data)})")
        return data

    def read(self, n: int = -1) -> bytes:
        if self._failed:
            raise self._failed
        if self._offset >= len(self._piece):
            if not self._pending:
                return b""
            future = self._pending.popleft()
            try:
                self._piece, self._offset = future.result(), 0
            except Exception as exc:
                self._failed = exc if isinstance(exc, OSError) else OSError(describe(self.url, exc))
                self.close()
                raise self._failed from None
            self._fill()
        piece, offset = self._piece, self._offset
        if offset == 0 and (n < 0 or n >= len(piece)):
            self._offset = len(piece)
            return piece
        out = piece[offset:] if n < 0 else piece[offset : offset + n]
        self._offset += len(out)
        return out

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            self._file.close()
        except Exception:  # closing a read-only remote file has nothing left to lose
            pass
