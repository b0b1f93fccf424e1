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
  counted ``bad``;
* 503 on a replica that is not the active one (``standby``): the API server retries, and the
  readiness probe takes this replica out of the Service;
* 200 otherwise, at once: the entries go into a queue bounded in bytes (``--audit-webhook-queue``)
  that the audit witness empties. A full queue drops the POST, answered 200 all the same (a slow
  pullwatch must never hold the API server, which in ``blocking`` mode waits for the answer) and
  counted ``dropped``, logged once per interval; never silent.

JSON is decoded with orjson, a large body in a thread, so the event loop keeps answering the
probes and the other POSTs.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
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

log = logging.getLogger("pullwatch.audit")
THREAD_DECODE = 256 << 10  # bodies at least this large are decoded off the event loop
CHUNK = 256 << 10
TOKEN_RECHECK = 10.0  # seconds between looks at the token file's mtime


class AuditQueue:
    """Batches of decoded entries waiting for the audit witness, bounded by the bytes of the
    bodies they came in (a decoded entry is a few times its JSON: memory stays proportional)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.bytes = 0
        self._items: deque[tuple[list[Any], int, float]] = deque()
        self._ready = asyncio.Event()

    def offer(self, entries: list[Any], size: int) -> bool:
        """Queue a batch; False (nothing queued) when it does not fit."""
        if self.bytes + size > self.limit:
            return False
        self._items.append((entries, size, time.monotonic()))
        self.bytes += size
        metrics.AUDIT_QUEUE_BYTES.set(self.bytes)
        self._ready.set()
        return True

    def pop(self) -> tuple[list[Any], float] | None:
        """The oldest batch and when it was received (monotonic), or None."""
        if not self._items:
            self._ready.clear()
            return None
        entries, size, when = self._items.popleft()
        self.bytes -= size
        metrics.AUDIT_QUEUE_BYTES.set(self.bytes)
        return entries, when

    async def wait(self, timeout: float) -> None:
        """Until a batch is queued, or ``timeout`` seconds."""
        if self._items:
            return
        self._ready.clear()
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            pass

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
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
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
        try:
            if len(body) >= THREAD_DECODE:
                doc = await asyncio.to_thread(orjson.loads, body)
            else:
                doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        entries = entries_of(doc)
        if entries is None:
            return self._answer("bad", 400, "not an audit.k8s.io EventList or Event")
        if not self.queue.offer(entries, len(body)):
            self.quiet.warning(
                "audit dropped",
                "the audit queue is full (%d bytes, --audit-webhook-queue): dropped a POST of "
                '%d entries (counted in pullwatch_audit_requests_total{outcome="dropped"})',
                self.queue.bytes,
                len(entries),
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
