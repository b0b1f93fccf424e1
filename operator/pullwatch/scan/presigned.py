"""Ranged GETs of one S3 object as plain HTTP on a presigned URL: what scanning an object costs.

s3fs's own GET goes through aiobotocore on fsspec's single event-loop thread, and a scan of an
object is CPU-bound: measured here (moto on 127.0.0.1, 4 MiB pieces) at ~2.7 CPU seconds of
the scanning process per GB, against ~1.1 for the same GETs through urllib3. So the pieces of
an S3 object are fetched here, on a URL that s3fs signs (its credentials, endpoint, region and
signature version: nothing about authentication is decided here), with

* the ETag read when the object was opened as ``If-Match``: an object overwritten mid-scan
  answers 412, which is damage, never a mix of two versions (as s3fs's own GETs do);
* deadlines (10 s to connect, 60 s per read) and retries with backoff for connection errors
  and 500/502/503/504, as botocore's "standard" mode does;
* a fallback to s3fs's own GET for the rest of the object until a signed GET has worked:
  opening the object through s3fs did, so whatever the signed URL cannot do (a bucket policy
  that wants what a presigned URL does not carry, an encryption key, a server without query
  authentication, a server that ignores Range) is s3fs's to do or to explain.

Not used behind a proxy (``HTTPS_PROXY`` and friends: botocore honours them, urllib3 does not
read them), nor for ``gs://`` or ``az://``, which keep their libraries' own reads.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

SIGNED_FOR = 3600  # seconds a URL is valid; it is signed again (locally, no request) at half


def signed_fetcher(
    fs: Any, path: str, etag: str | None, fallback: Callable[[int, int], bytes]
) -> Callable[[int, int], bytes] | None:
    """A ``fetch(start, stop) -> bytes`` for an S3 object, or None where it cannot be used."""
    try:
        url = fs.sign(path, expiration=SIGNED_FOR)
    except Exception:  # a filesystem that cannot sign (anonymous access, say): its own GETs
        return None
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    if parts.scheme not in ("http", "https") or (
        parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname or "")
    ):
        return None
    return SignedGets(fs, path, etag, fallback, url)


class SignedGets:
    def __init__(
        self,
        fs: Any,
        path: str,
        etag: str | None,
        fallback: Callable[[int, int], bytes],
        url: str,
    ):
        import urllib3

        self._fs, self._path, self._etag, self._fallback = fs, path, etag, fallback
        self._url, self._signed_at = url, time.monotonic()
        self._lock = threading.Lock()
        self._proven = False  # a signed GET has worked: later failures are the object's
        self._refused = False  # the first could not be made: s3fs's GETs from then on
        retry = urllib3.Retry(
            total=3,  # waits 0, 1, 2 s
            backoff_factor=0.5,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=frozenset(("GET",)),
            raise_on_status=False,
        )
        self._http = urllib3.PoolManager(
            maxsize=4, timeout=urllib3.Timeout(connect=10, read=60), retries=retry
        )
        self._errors = urllib3.exceptions.HTTPError
        # urllib3 logs each retry with the URL it retries (WARNING: printed by default)
        retries_log = logging.getLogger("urllib3.connectionpool")
        if not any(isinstance(f, _Unsigned) for f in retries_log.filters):
            retries_log.addFilter(_Unsigned())

    def _current_url(self) -> str:
        with self._lock:
            if time.monotonic() - self._signed_at > SIGNED_FOR / 2:
                self._url, self._signed_at = (
                    self._fs.sign(self._path, expiration=SIGNED_FOR),
                    (time.monotonic()),
                )
            return self._url

    def __call__(self, start: int, stop: int) -> bytes:
        if self._refused:
            return self._fallback(start, stop)
        headers = {"Range": f"bytes={start}-{stop - 1}"}
        if self._etag:
            headers["If-Match"] = self._etag
        try:
            response = self._http.request(
                "GET", self._current_url(), headers=headers, preload_content=False
            )
            try:
                status = response.status
                whole = status == 200 and start == 0 and response.length_remaining == stop
                if status == 206 or whole:
                    data = response.read()
                elif status == 200:
                    data = None
                    response.close()  # the whole object for a range: never read it all
                else:
                    data = None
                    response.drain_conn()  # an error document: small
            finally:
                response.release_conn()
        except self._errors as exc:
            if not self._proven:
                return self._give_up(start, stop)
            reason = getattr(exc, "reason", None) or exc
            raise OSError(f"GET of bytes {start}-{stop} failed: {_unsigned(reason)}") from None
        if data is not None:
            self._proven = True
            return data
        if not self._proven:
            return self._give_up(start, stop)  # s3fs's own GET says what is wrong, if anything
        if status == 412:
            raise OSError(f"the object changed while it was read (byte {start})")
        raise OSError(f"GET of bytes {start}-{stop} answered HTTP {status}")

    def _give_up(self, start: int, stop: int) -> bytes:
        self._refused = True
        return self._fallback(start, stop)


def _unsigned(error: object) -> str:
    """An error's text without any query string: the signed URL is a credential (valid for
    ``SIGNED_FOR`` seconds) and must not reach a log or a damage message.

    >>> _unsigned("Max retries exceeded with url: /b/k?X-Amz-Signature=abc (Caused by x)")
    'Max retries exceeded with url: /b/k?… (Caused by x)'
    """
    return _QUERY.sub("?…", " ".join(str(error).split()))[:300]


_QUERY = re.compile(r"\?[^\s'\")]*")


class _Unsigned(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _unsigned(record.getMessage()), None
        return True
