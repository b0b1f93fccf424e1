"""A lean list + watch, for an operator that must keep up with event storms and never go blind.

kopf serves lifecycle, login, peering, health and the AllowedImages index; but its per-object
machinery (a worker task and handler kwargs per object) costs more CPU per Event than the API
server spends storing it, and 90 % of Events are not image pulls. This stream:

* lists in pages (or, with ``cached``, all at once from the API server's watch cache, streamed;
  for the Findings, which adoption must read whole before any Event is counted) and then watches
  from the list's resourceVersion, with bookmarks;
* hands over only the lines that can matter (for Events: those with the bytes ``image \\"``, the
  same pre-filter as ``pullwatch scan``): the others are never parsed;
* never goes blind without saying so: a watch that delivers nothing at all for ``read_timeout``
  seconds - a half-open connection, a frozen proxy - is dropped and resumed, within that time
  instead of the minutes a TCP connection can stay half-open. So that a healthy watch of a quiet
  cluster is never taken for a dead one, the server is asked to end each watch well within that
  time (two thirds of it, or ``watch_timeout`` if shorter); it is then resumed from its
  resourceVersion, not re-listed;
* ``410 Gone`` means: list again; any other failure: resume, backing off up to 10 s, saying what
  failed once per interval (``forbidden: list events`` while RBAC refuses it).

Re-delivering an object is harmless (counting keeps per-series high-water marks), so resuming
from an older resourceVersion, or listing again, never double counts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from . import metrics
from .api import Api, ApiError, Listing
from .health import Health
from .quietlog import Quiet

log = logging.getLogger("pullwatch.stream")
BACKOFF_MAX = 10.0


class ListWatch:
    def __init__(
        self,
        api: Api,
        path: str,
        handle: Callable[[str, dict[str, Any]], None],
        *,
        name: str,
        health: Health | None = None,
        candidate: bytes | None = None,
        keep_listed: Callable[[dict[str, Any]], bool] | None = None,
        page: int = 500,
        watch_timeout: int = 60,
        read_timeout: float = 30.0,
        quiet: Quiet | None = None,
        metric: str | None = None,
        cached: bool = False,
    ):
        self.api, self.path, self.handle, self.name = api, path, handle, name
        self.resource = path.rstrip("/").rsplit("/", 1)[-1]
        self.health = health or Health()
        self.candidate, self.keep_listed = candidate, keep_listed
        self.page, self.read_timeout = page, read_timeout
        # The server ends a quiet watch cleanly before the read deadline can fire (bookmarks need
        # not come that often), so only a truly silent connection is dropped as one.
        self.watch_timeout = max(1, min(watch_timeout, int(read_timeout * 2 / 3)))
        self.quiet = quiet or Quiet(log)
        self.relists = 0  # how often it listed (1 + one per 410)
        self.silences = 0  # watches dropped because nothing arrived for read_timeout
        self.synced = asyncio.Event()  # set once the first list is handed over
        self.metric = metric
        self.cached = cached

    async def run(self) -> None:
        """List, watch, and again, until cancelled."""
        rv: str | None = None
        failures = 0
        while True:
            self.health.beat(self.name)
            try:
                if rv is None:
                    rv = await self._list()
                    self.synced.set()
                rv = await self._watch(rv)
                failures = 0
                continue  # the server ended the watch: resume from rv
            except asyncio.CancelledError:
                raise
            except _Gone:
                if self.metric:
                    metrics.RELISTS.labels(self.metric).inc()
                self.quiet.info(
                    f"{self.name} gone",
                    "%s: resourceVersion expired (410 Gone); listing again",
                    self.name,
                )
                rv = None
                continue
            except _Silent:
                self.silences += 1
                if self.metric:
                    metrics.SILENCES.labels(self.metric).inc()
                self.quiet.info(
                    f"{self.name} silent",
                    "%s: nothing received for %.0fs (half-open connection?); "
                    "watching again from where it was",
                    self.name,
                    self.read_timeout,
                )
                continue
            except ApiError as exc:
                failures += 1
                if exc.status == 403:
                    self.quiet.warning(
                        f"forbidden {exc.what}", "forbidden: %s (%s); retrying", exc.what, self.name
                    )
                else:
                    self.quiet.warning(
                        f"{self.name} failing", "%s interrupted (%s); retrying", self.name, exc
                    )
            except Exception as exc:
                failures += 1
                self.quiet.warning(
                    f"{self.name} failing",
                    "%s interrupted (%s: %s); retrying",
                    self.name,
                    type(exc).__name__,
                    str(exc)[:200],
                )
            await asyncio.sleep(min(BACKOFF_MAX, 0.5 * 2 ** min(failures, 6)))

    async def _list(self) -> str:
        """List everything, handing each item over as ADDED; the resourceVersion to watch from."""
        self.relists += 1
        rv = await (self._list_cached() if self.cached else self._list_paged())
        self.quiet.recovered_all(
            (f"forbidden list {self.resource}", f"{self.name} failing"),
            "%s: listing works again",
            self.name,
        )
        return rv

    def _listed(self, item: Any) -> None:
        if isinstance(item, dict) and (self.keep_listed is None or self.keep_listed(item)):
            self.handle("ADDED", item)

    async def _list_paged(self) -> str:
        rv = ""
        async for doc in self.api.pages(self.path, self.page):
            self.health.beat(self.name)
            for item in doc.get("items") or []:
                self._listed(item)
            rv = str((doc.get("metadata") or {}).get("resourceVersion") or "")
            await asyncio.sleep(0)  # let the writer and kopf run between pages
        return rv

    async def _list_cached(self) -> str:
        listing = Listing()
        n = 0
        async for item in self.api.items(self.path, listing, self.read_timeout):
            self._listed(item)
            n += 1
            if n % 200 == 0:
                self.health.beat(self.name)
                await asyncio.sleep(0)  # let the writer and kopf run in between
        return listing.resource_version

    async def _watch(self, rv: str) -> str:
        """Watch from ``rv`` until the server ends the watch; return where it got to."""
        params = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": rv,
            "timeoutSeconds": str(self.watch_timeout),
        }
        async with self.api.stream(self.path, params, self.read_timeout) as rsp:
            self.quiet.recovered_all(
                (f"forbidden list {self.resource}", f"{self.name} failing"),
                "%s: watching again",
                self.name,
            )
            while True:
                try:
                    line = await rsp.content.readline()
                except TimeoutError:
                    raise _Silent() from None
                except (aiohttp.ClientError, OSError) as exc:  # the stream broke mid-chunk
                    raise ApiError(
                        0, type(exc).__name__, str(exc)[:200], "GET", self.path
                    ) from None
                if not line:
                    return rv
                self.health.beat(self.name)
                if (
                    self.candidate is not None
                    and self.candidate not in line
                    and not line.startswith((b'{"type":"BOOKMARK"', b'{"type":"ERROR"'))
                ):
                    continue  # cannot be a pull; resuming from an older rv only re-delivers it
                event = orjson.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise ValueError(f"watch error: {str(obj.get('message'))[:200]}")
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.handle(kind, obj)


class _Gone(Exception):
    pass


class _Silent(Exception):
    pass
