"""A lean list + watch of core/v1 Events, for an operator that must keep up with event storms.

kopf serves everything else (lifecycle, login, peering, health, the AllowedImages index); but its
per-object machinery (a worker task and handler kwargs per Event uid) costs more CPU per Event than
the API server spends storing it, and 90 % of Events are not image pulls. This stream:

* lists in pages (``limit``/``continue``) and then watches from the list's resourceVersion, with
  bookmarks; ``410 Gone`` or any broken stream means: list again (as kopf does);
* hands over only the lines that can be a pull (they contain the bytes ``"Pull``; the same
  pre-filter as ``pullwatch scan``): the other 90 % are never parsed;
* delivers each candidate Event to ``handle`` on the event loop.

Re-delivering an Event is harmless (counting keeps per-series high-water marks), so resuming
from an older resourceVersion, or listing again, never double counts.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, Callable

import aiohttp
import orjson

from ..core.pulls import CANDIDATE

log = logging.getLogger("pullwatch.events")


class ApiEndpoint:
    """Where and how to reach the API server, from the kubernetes client's configuration
    (in-cluster ServiceAccount or KUBECONFIG), re-read on every connection so that rotated
    ServiceAccount tokens are picked up."""

    def __init__(self, configuration: Any):
        self.conf = configuration

    @property
    def host(self) -> str:
        return self.conf.host.rstrip("/")

    def headers(self) -> dict[str, str]:
        # auth_settings() is how the client itself builds its headers (and it runs the token
        # refresh hook); the key names differ between client versions.
        return {a["key"]: a["value"] for a in self.conf.auth_settings().values()
                if a.get("in") == "header" and a.get("value")}

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.conf.verify_ssl:
            return False
        ctx = ssl.create_default_context(cafile=self.conf.ssl_ca_cert) if self.conf.ssl_ca_cert \
            else ssl.create_default_context()
        if self.conf.cert_file:
            ctx.load_cert_chain(self.conf.cert_file, self.conf.key_file)
        return ctx


class EventStream:
    def __init__(self, endpoint: ApiEndpoint, handle: Callable[[dict[str, Any]], None],
                 namespace: str | None = None, page: int = 500, watch_timeout: int = 300,
                 backoff: float = 1.0):
        self.endpoint = endpoint
        self.handle = handle
        self.path = f"/api/v1/namespaces/{namespace}/events" if namespace else "/api/v1/events"
        self.page, self.watch_timeout, self.backoff = page, watch_timeout, backoff
        self.relists = 0  # how often the Events were listed (1 + one per 410 or broken stream)

    async def run(self) -> None:
        """List, watch, and again, until cancelled."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.watch_timeout + 30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    rv = await self._list(session)
                    await self._watch(session, rv)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - API server restarting, network: list again
                    log.warning("Event stream interrupted (%s); listing again in %.0fs",
                                f"{type(exc).__name__}: {exc}"[:200], self.backoff)
                    await asyncio.sleep(self.backoff)

    async def _get(self, session: aiohttp.ClientSession, params: dict[str, str]) -> aiohttp.ClientResponse:
        rsp = await session.get(self.endpoint.host + self.path, params=params,
                                headers=self.endpoint.headers(), ssl=self.endpoint.ssl_context())
        if rsp.status != 200:
            body = (await rsp.read())[:300]
            rsp.release()
            raise RuntimeError(f"GET {self.path}: HTTP {rsp.status} {body!r}")
        return rsp

    async def _list(self, session: aiohttp.ClientSession) -> str:
        self.relists += 1
        params = {"limit": str(self.page)}
        while True:
            rsp = await self._get(session, params)
            doc = orjson.loads(await rsp.read())
            for item in doc.get("items") or []:
                if isinstance(item, dict) and item.get("reason") in ("Pulling", "Pulled"):
                    self.handle(item)
            meta = doc.get("metadata") or {}
            if not meta.get("continue"):
                return str(meta.get("resourceVersion") or "")
            params = {"limit": str(self.page), "continue": meta["continue"]}
            await asyncio.sleep(0)  # let the writer and kopf run between pages

    async def _watch(self, session: aiohttp.ClientSession, rv: str) -> None:
        """Watch from ``rv``; renew when the server ends the watch; return (to list again) on
        410 Gone."""
        while True:
            params = {"watch": "1", "allowWatchBookmarks": "true", "resourceVersion": rv,
                      "timeoutSeconds": str(self.watch_timeout)}
            rsp = await self._get(session, params)
            try:
                async for line in rsp.content:
                    if CANDIDATE in line:
                        event = orjson.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            self.handle(obj)
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    elif line.startswith(b'{"type":"BOOKMARK"') or line.startswith(b'{"type":"ERROR"'):
                        event = orjson.loads(line)
                        obj = event.get("object") or {}
                        if event["type"] == "ERROR":
                            if obj.get("code") == 410:
                                log.info("Event watch expired (410 Gone); listing again")
                                return
                            raise RuntimeError(f"watch error: {obj.get('message')}")
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    # Other lines cannot be pulls. Resuming from an older rv only re-delivers
                    # Events already counted, so their resourceVersion need not be read.
            finally:
                rsp.release()
