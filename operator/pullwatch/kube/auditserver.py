"""The audit webhook receiver: what the API server's webhook backend POSTs, into a bounded queue.

HTTPS only (``--audit-webhook-cert``/``-key``). Every POST is authenticated before its body is
read: a client certificate signed by ``--audit-webhook-client-ca`` (verified in the TLS
handshake; ``CERT_OPTIONAL``, so that the kubelet's readiness probe, which has none, can still ask
``/readyz``) or the bearer token of ``--audit-webhook-token-file`` (compared in constant time; the
file is read again when it changes: a rotated Secret takes effect without a restart). Either is
enough. A certificate the CA did not sign fails the handshake itself: no HTTP answer, nothing to
count here (the API server logs it).

``POST /audit`` (any query string: the API server adds ``?timeout=30s``) answers

* 401 without valid credentials, counted ``unauthenticated``;
* 413 over ``--audit-webhook-max-body``: by its Content-Length before anything is read, else as
  soon as the bytes read pass the bound (a chunked body is never buffered beyond it); counted
  ``too_large``, logged once per interval; the connection is closed, not drained;
* 400 for what is not audit JSON (an ``audit.k8s.io`` ``EventList`` or a single ``Event``),
  counted ``bad``. What the API server sends opens with its kind and apiVersion: a body that
  does is queued as it is (the witness decodes it, once; one that then fails to decode is
  counted as a ``malformed`` entry), any other is decoded here to tell;
* 503 on a replica that is not the active one (``standby``): the API server retries, and the
  readiness probe takes this replica out of the Service;
* 200 otherwise, at once: the body goes into a queue bounded in bytes (``--audit-webhook-queue``)
  that the audit witness empties. A full queue drops the POST, answered 200 all the same (a slow
  pullwatch must never hold the API server, which in ``blocking`` mode waits for the answer) and
  counted ``dropped``, logged once per interval; never silent.

JSON is decoded with orjson. Decoding holds the GIL in any thread, so a thread would not spare
the event loop; what keeps it answering is that each body is decoded once, in the witness, one
body at a time with the loop's turn between them (an API server with truncation on sends at most
10 MiB: about 0.1 s of decoding).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from ..core.audit import AUDIT_API_PREFIX
from . import metrics
from .options import AuditWebhook
from .quietlog import Quiet
from .waiting import wait_event

log = logging.getLogger("pullwatch.audit")
THREAD_DECODE = 256 << 10  # bodies at least this large are decoded off the event loop
CHUNK = 256 << 10
TOKEN_RECHECK = 10.0  # seconds between looks at the token file's mtime


class AuditQueue:
    """Request bodies waiting for the audit witness, bounded by their bytes. Bodies, not decoded
    entries: decoded, an entry takes about four times its JSON, and the bound is what the queue
    really holds."""

    def __init__(self, limit: int):
        self.limit = limit
        self.bytes = 0
        self._items: deque[tuple[bytes, float]] = deque()
        self._ready = asyncio.Event()

    def offer(self, body: bytes) -> bool:
        """Queue a body; False (nothing queued) when it does not fit."""
        if self.bytes + len(body) > self.limit:
            return False
        self._items.append((body, time.monotonic()))
        self.bytes += len(body)
        metrics.AUDIT_QUEUE_BYTES.set(self.bytes)
        self._ready.set()
        return True

    def pop(self) -> tuple[bytes, float] | None:
        """The oldest body and when it was received (monotonic), or None."""
        if not self._items:
            self._ready.clear()
            return None
        body, when = self._items.popleft()
        self.bytes -= len(body)
        metrics.AUDIT_QUEUE_BYTES.set(self.bytes)
        return body, when

    async def wait(self, timeout: float) -> None:
        """Until a batch is queued, or ``timeout`` seconds."""
        if self._items:
            return
        self._ready.clear()
        await wait_event(self._ready, timeout)

    def __len__(self) -> int:
        return len(self._items)


def server_context(settings: AuditWebhook) -> ssl.SSLContext:
    """TLS 1.2+, the serving certificate, and client certificates verified against the client
    CA when one is given (optional in the handshake: the token is the other way in)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.cert, settings.key)
    if settings.client_ca:
        ctx.load_verify_locations(cafile=settings.client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# What the API server writes first (Go's encoding/json: TypeMeta's fields, in order):
# {"kind":"EventList","apiVersion":"audit.k8s.io/v1",...
OPENING = re.compile(
    rb'\s*\{\s*"kind"\s*:\s*"(?:EventList|Event)"\s*,\s*"apiVersion"\s*:\s*"audit\.k8s\.io/'
)


def looks_like_audit(body: bytes) -> bool:
    """Does the body open as the API server's audit EventList or Event does? The cheap check a
    POST is answered by; the witness decodes it in full."""
    return OPENING.match(body, 0, 256) is not None


def decode_body(body: bytes) -> list[Any] | None:
    """The entries of a body, or None when it is not audit JSON."""
    try:
        return entries_of(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


def entries_of(doc: Any) -> list[Any] | None:
    """The entries of a webhook body: an EventList's items, or a single Event; None when it is
    neither (not audit JSON)."""
    if not isinstance(doc, dict):
        return None
    api = doc.get("apiVersion")
    if not (isinstance(api, str) and api.startswith(AUDIT_API_PREFIX)):
        return None
    kind = doc.get("kind")
    if kind == "EventList":
        items = doc.get("items")
        if items is None:
            return []
        return items if isinstance(items, list) else None
    return [doc] if kind == "Event" else None


class AuditServer:
    def __init__(
        self,
        settings: AuditWebhook,
        quiet: Quiet | None = None,
        *,
        accepting: Callable[[], bool] = lambda: True,
        ready: Callable[[], bool] = lambda: True,
    ):
        """``accepting()``: whether POSTs are taken (this replica is the active one);
        ``ready()``: what ``/readyz`` says (the audit witness is running)."""
        self.settings, self.accepting, self.ready = settings, accepting, ready
        self.quiet = quiet or Quiet(log)
        self.queue = AuditQueue(settings.queue_bytes)
        self.port: int | None = None  # the port bound (the address may ask for 0)
        self._token: bytes | None = None
        self._token_mtime: float | None = None
        self._token_checked = float("-inf")
        self._runner: web.AppRunner | None = None
        if settings.token_file:
            self._load_token(strict=True)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        ctx = server_context(self.settings)
        app = web.Application(client_max_size=self.settings.max_body)
        app.router.add_post("/audit", self._audit)
        app.router.add_get("/readyz", self._readyz)
        # At a stop, a batch still being received has 2 s (aiohttp's default is 60, twice the
        # pod's grace period): one not answered 200 is sent again by the API server.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        host, _, port = self.settings.address.rpartition(":")
        site = web.TCPSite(self._runner, host or "0.0.0.0", int(port), ssl_context=ctx)
        await site.start()
        bound = self._runner.addresses
        self.port = bound[0][1] if bound else int(port)
        log.info("audit webhook listening on https://%s:%d/audit", host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- authentication ----------------------------------------------------------------------
    def _load_token(self, strict: bool = False) -> None:
        path = self.settings.token_file
        assert path is not None
        try:
            mtime = os.stat(path).st_mtime
            if mtime == self._token_mtime:
                return
            with open(path, "rb") as f:
                token = f.read(4096).strip()
        except OSError as exc:
            if strict:
                raise ValueError(f"cannot read --audit-webhook-token-file: {exc}") from None
            self.quiet.warning("audit token", "cannot read the audit webhook token: %s", exc)
            return
        if not token:
            if strict:
                raise ValueError("--audit-webhook-token-file is empty")
            self.quiet.warning(
                "audit token", "the audit webhook token file is empty; kept the last"
            )
            return
        self._token, self._token_mtime = token, mtime

    def _token_ok(self, header: str | None) -> bool:
        if self.settings.token_file is None or not header:
            return False
        now = time.monotonic()
        if now - self._token_checked > TOKEN_RECHECK:
            self._token_checked = now
            self._load_token()
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or self._token is None:
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "replace"), self._token)

    def authenticated(self, request: web.Request) -> bool:
        if self.settings.client_ca and request.transport is not None:
            peer = request.transport.get_extra_info("peercert")
            if peer:  # only a certificate the handshake verified is there
                return True
        return self._token_ok(request.headers.get("Authorization"))

    # -- handlers ----------------------------------------------------------------------------
    @staticmethod
    def _answer(outcome: str, status: int, text: str) -> web.Response:
        metrics.AUDIT_REQUESTS.labels(outcome).inc()
        return web.Response(status=status, text=text + "\n")

    async def _audit(self, request: web.Request) -> web.StreamResponse:
        if not self.authenticated(request):
            return self._answer("unauthenticated", 401, "unauthenticated")
        if not self.accepting():
            return self._answer("standby", 503, "not the active replica")
        body = await self._read(request)
        if body is None:
            return self._too_large(request)
        # What the API server sends opens with its kind and apiVersion. Anything else is
        # decoded in full here (in a thread when large: it is not the API server) to tell.
        if not looks_like_audit(body):
            if len(body) >= THREAD_DECODE:
                entries = await asyncio.to_thread(decode_body, body)
            else:
                entries = decode_body(body)
            if entries is None:
                return self._answer("bad", 400, "not an audit.k8s.io EventList or Event")
        if not self.queue.offer(body):
            self.quiet.warning(
                "audit dropped",
                "the audit queue is full (%d bytes, --audit-webhook-queue): dropped a POST of "
                '%d bytes (counted in pullwatch_audit_requests_total{outcome="dropped"})',
                self.queue.bytes,
                len(body),
            )
            return self._answer("dropped", 200, "dropped: queue full")
        return self._answer("ok", 200, "ok")

    async def _read(self, request: web.Request) -> bytes | None:
        """The body, or None as soon as it is known to be over the bound."""
        limit = self.settings.max_body
        if request.content_length is not None and request.content_length > limit:
            return None
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.content.iter_chunked(CHUNK):
            total += len(chunk)
            if total > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, request: web.Request) -> web.Response:
        self.quiet.warning(
            "audit too large",
            "refused an audit webhook POST over %d bytes (--audit-webhook-max-body; Content-"
            "Length %s): raise it, or set the API server's --audit-webhook-truncate-enabled",
            self.settings.max_body,
            request.content_length,
        )
        response = self._answer("too_large", 413, "request body too large")
        response.force_close()  # the rest of the body is not read, so the connection ends
        return response

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not the active replica\n")
