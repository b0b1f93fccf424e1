"""Ranged GETs of one S3 object as plain HTTP on a presigned URL: what scanning an object costs.

s3fs's own GET goes through aiobotocore on fsspec's single event-loop thread, and a scan of an
object is CPU-bound: measured here (s3rver on 127.0.0.1, a 256 MiB object in 4 MiB pieces) at
2.7-2.9 CPU seconds of the scanning process per GB, against 1.3 for the same GETs through
urllib3. So the pieces of an S3 object are fetched here, on a URL that s3fs signs (its
credentials, endpoint, region and signature version: nothing about authentication is decided
here), with

* the ETag read when the object was opened as ``If-Match``: an object overwritten mid-scan
  answers 412, which is damage, never a mix of two versions (as s3fs's own GETs do);
* deadlines (10 s to connect, 60 s per read) and, once a signed GET has worked, retries with
  backoff for connection errors and 500/502/503/504, as botocore's "standard" mode does;
* s3fs's own GETs for the rest of the object when the first signed GET fails in any way (no
  retry: opening the object through s3fs worked, so whatever the signed URL cannot do - a
  bucket policy that wants what a presigned URL does not carry, an encryption key, a server
  without query authentication or that ignores Range, a firewall - is s3fs's to do or to
  explain), and for every later object of that endpoint; and when a later GET is refused
  (400, 401, 403: credentials that expired since the URL was signed, which s3fs renews).

Not used (s3fs's own GETs read the object) where botocore's network settings would have to be
copied: a proxy (``HTTPS_PROXY`` and friends, or botocore's ``proxies``), TLS verification
turned off; nor when turned off with ``PULLWATCH_S3_PRESIGNED=0``; nor for ``gs://`` or
``az://``, which keep their libraries' own reads. A CA bundle (``AWS_CA_BUNDLE``, or the
filesystem's ``verify``) is used as botocore uses it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

SIGNED_FOR = 3600  # seconds a URL is valid; it is signed again (locally, no request) at half
OPT_OUT = "PULLWATCH_S3_PRESIGNED"  # "0": s3fs's own GETs for every object
# Endpoints where a signed GET could not be made: later objects go to s3fs at once, instead of
# each paying for the same failure (a silently dropped connection costs the connect deadline)
_REFUSED_ENDPOINTS: set[str] = set()
# urllib3's loggers that write request URLs (a retry warning; DEBUG lines)
_URL_LOGGERS = ("urllib3.connectionpool", "urllib3.poolmanager", "urllib3.util.retry")


def signed_fetcher(
    fs: Any, path: str, etag: str | None, fallback: Callable[[int, int], bytes]
) -> Callable[[int, int], bytes] | None:
    """A ``fetch(start, stop) -> bytes`` for an S3 object, or None where it cannot be used: turned
    off (``PULLWATCH_S3_PRESIGNED=0``), a proxy (the environment's or botocore's), TLS checking
    turned off, an endpoint that already refused, a filesystem that cannot sign."""
    if os.environ.get(OPT_OUT, "1") == "0":
        return None
    client = getattr(fs, "client_kwargs", None) or {}
    config = getattr(fs, "config_kwargs", None) or {}
    verify = client.get("verify", os.environ.get("AWS_CA_BUNDLE") or None)
    if config.get("proxies") or verify is False or client.get("use_ssl") is False:
        return None  # botocore's own network settings: only its GETs follow them
    try:
        url = fs.sign(path, expiration=SIGNED_FOR)
    except Exception:  # anonymous access, say: nothing to sign with
        return None
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    if (
        parts.scheme not in ("http", "https")
        or parts.netloc in _REFUSED_ENDPOINTS
        or (parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname or ""))
    ):
        return None
    return SignedGets(fs, path, etag, fallback, url, verify if isinstance(verify, str) else None)


class SignedGets:
    def __init__(
        self,
        fs: Any,
        path: str,
        etag: str | None,
        fallback: Callable[[int, int], bytes],
        url: str,
        ca_bundle: str | None = None,
    ):
        import urllib3

        self._fs, self._path, self._etag, self._fallback = fs, path, etag, fallback
        self._url, self._signed_at = url, time.monotonic()
        parts = urllib.parse.urlsplit(url)
        self._endpoint = parts.netloc
        # What a notice names: an endpoint URL may carry user:password@ (botocore keeps it)
        self._host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        self._lock = threading.Lock()
        self._proven = False  # a signed GET has worked: later failures are the object's
        self._refused = False  # s3fs's GETs from now on
        self._retry = urllib3.Retry(
            total=3,  # waits 0, 1, 2 s
            backoff_factor=0.5,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=frozenset(("GET",)),
            raise_on_status=False,
            redirect=False,  # a 3xx is an answer (s3fs's then), never a URL to follow
        )
        self._http = urllib3.PoolManager(
            maxsize=4,
            timeout=urllib3.Timeout(connect=10, read=60),
            retries=self._retry,
            ca_certs=ca_bundle,  # botocore's (AWS_CA_BUNDLE, or the filesystem's verify)
        )
        self._errors = urllib3.exceptions.HTTPError
        for name in _URL_LOGGERS:
            log = logging.getLogger(name)
            if not any(isinstance(f, _Unsigned) for f in log.filters):
                log.addFilter(_Unsigned())

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
        # Until a signed GET has worked, no retries: a failure hands the object to s3fs at once
        retries = self._retry if self._proven else False
        try:
            response = self._http.request(
                "GET",
                self._current_url(),
                headers=headers,
                preload_content=False,
                retries=retries,
                redirect=False,
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
            reason = getattr(exc, "reason", None) or exc
            if not self._proven:
                # the error's kind, not its text: the server chooses that (byte counts...),
                # and one notice per endpoint must stay one text, however many objects fail
                return self._give_up(start, stop, f"failed ({type(reason).__name__})")
            raise OSError(f"GET of bytes {start}-{stop} failed: {_unsigned(reason)}") from None
        if data is not None:
            self._proven = True
            return data
        if status == 412 and self._proven:
            raise OSError(f"the object changed while it was read (byte {start})")
        if not self._proven or status in (400, 401, 403):
            # s3fs's own GET says what is wrong, if anything: it also renews credentials that
            # expired since the URL was signed
            answer = "the whole object" if status == 200 else f"HTTP {status}"
            return self._give_up(start, stop, f"answered {answer}")
        raise OSError(f"GET of bytes {start}-{stop} answered HTTP {status}")

    def _give_up(self, start: int, stop: int, why: str) -> bytes:
        from .cloud import notice

        self._refused = True
        if not self._proven:
            _REFUSED_ENDPOINTS.add(self._endpoint)
            # Nothing is lost, but the scan is slower than it could be: say so, once per
            # endpoint (a fleet's objects all refuse alike), and how not to try.
            notice(
                f"{self._host}: a ranged GET on a presigned URL {why}; its objects are read "
                f"through s3fs's own GETs (about twice the CPU per GB; {OPT_OUT}=0 skips the "
                "presigned GETs)"
            )
        else:
            notice(
                f"{self._host}: a ranged GET on a presigned URL {why} after others had "
                "worked; the rest of the object is read through s3fs's own GETs"
            )
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
