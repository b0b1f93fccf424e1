"""A lean list + watch, for an operator that must keep up with event storms and never go blind.

kopf serves lifecycle, login, peering and health; but its per-object
machinery (a worker task and handler kwargs per object) costs more CPU per Event than the API
server spends storing it, and 90 % of Events are not image pulls. This stream (for any kind):

* lists in pages, each held in a bounded buffer (paging.py: a page over the bound is asked
  again smaller, an object over it alone is skipped and counted), or, with ``cached``, all at
  once from the API server's watch cache, streamed (for the Findings, which adoption must read
  whole before any Event is counted); then watches from the list's resourceVersion, with
  bookmarks;
* reads the watch in chunks and splits its lines itself (lines.py): any line the API server can
  send is read, and one over ``MAX_LINE`` is skipped and counted
  (``pullwatch_stream_oversize_total``), its resourceVersion read from its first bytes so that
  the stream moves past it instead of retrying it for ever;
* hands over only the lines that can matter (for Events: those with the bytes ``image \\"``, the
  same pre-filter as ``pullwatch scan``): the others are never parsed (the last one of each
  chunk is read for its resourceVersion, so that a resumed watch starts where it got to);
* never goes blind without saying so: a watch that delivers nothing at all for ``read_timeout``
  seconds - a half-open connection, a frozen proxy - is dropped and resumed, within that time
  instead of the minutes a TCP connection can stay half-open. So that a healthy watch of a quiet
  cluster is never taken for a dead one, the server is asked to end each watch well within that
  time (two thirds of it, or ``watch_timeout`` if shorter); it is then resumed from its
  resourceVersion, not re-listed;
* ``410 Gone`` means: list again; any other failure: resume, backing off up to 10 s, saying what
  failed once per interval (``forbidden: list events`` while RBAC refuses it).

Liveness is progress (health.py): the stream beats when its resourceVersion moves, when a list
page or a whole list arrives and when a watch ends cleanly - not merely because it is looping. A
stream that fails on the same data again and again (a line it cannot handle, at the same
resourceVersion) stops beating, and ``/healthz`` fails after ``allowed`` seconds. A stream that
cannot reach the API server at all (nothing answered: refused, unreachable, no answer in time,
or an HTTP error status) is *waiting*, and beats on each attempt: a restart of the operator
cannot bring an API server back or restore RBAC, and a crash-looping operator would relist
everything at the moment the API server returns, when it is least able to serve it; the
trouble is said in the log once per interval, and the writer's and the streams' metrics show it.

Re-delivering an object is harmless (counting keeps per-series high-water marks), so resuming
from an older resourceVersion, or listing again, never double counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from . import metrics
from .api import Api, ApiError, Listing
from .health import Health
from .lines import MAX_LINE, Lines, Oversize, resource_version_of
from .paging import MAX_PAGE, pages
from .quietlog import Quiet

log = logging.getLogger("pullwatch.stream")
BACKOFF_MAX = 10.0
_CONTROL = (b'{"type":"BOOKMARK"', b'{"type":"ERROR"')
_HEAD = 4096  # where a built-in kind's metadata.resourceVersion is (after name, namespace, uid)


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
        max_line: int = MAX_LINE,
        max_page: int = MAX_PAGE,
        sleep: Callable[[float], Any] = asyncio.sleep,
        listed: Callable[[set[str]], None] | None = None,
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
        self.oversize = 0  # lines over max_line, skipped
        self.synced = asyncio.Event()  # set once the first list is handed over
        self.metric = metric
        self.cached = cached
        self.max_line, self.max_page = max_line, max_page
        self.sleep = sleep  # the backoff's (tests pass one that does not wait)
        # Told the uids a list held, once it was read to its end with nothing skipped (what a
        # whole list no longer holds was deleted while no watch ran).
        self.listed = listed
        self._held: set[str] | None = None
        self.rv: str | None = None  # where the stream got to; None: list first
        # For the Witness objects: when an item was last handed over (wall clock), and why the
        # API server refuses the stream (a 403's "verb resource"), while it does.
        self.received_at: float | None = None
        self.refused: str | None = None
        self._received = False  # this attempt got data from the API server
        self._furthest = 0  # items the furthest failed list got to: only going further is progress

    def _progress(self, rv: str | None = None) -> None:
        """Progress: the resourceVersion moved, or a list or a watch was completed."""
        if rv is not None:
            if rv == self.rv:
                return
            self.rv = rv
        self.refused = None
        self.health.beat(self.name)

    async def run(self) -> None:
        """List, watch, and again, until cancelled."""
        failures = 0
        while True:
            self._received = False
            try:
                if self.rv is None:
                    self._progress(await self._list())
                    self.synced.set()
                await self._watch(self.rv)
                failures = 0
                self._progress()  # the server ended the watch: resume from where it got to
                continue
            except asyncio.CancelledError:
                raise
            except _Gone:
                self._gone()
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
                if exc.status == 410:  # the watch refused outright: list again, at once
                    self._gone()
                    continue
                failures += 1
                if not self._received:
                    self.health.beat(self.name)  # waiting on the API server (see the docstring)
                self.refused = exc.what if exc.status == 403 else None
                if exc.status == 403:
                    self.quiet.warning(
                        f"forbidden {exc.what}", "forbidden: %s (%s); retrying", exc.what, self.name
                    )
                else:
                    self.quiet.warning(
                        f"{self.name} failing", "%s interrupted (%s); retrying", self.name, exc
                    )
            except Exception as exc:
                failures += 1  # data it cannot handle: no beat, so that liveness says so
                self.quiet.warning(
                    f"{self.name} failing",
                    "%s interrupted at resourceVersion %s (%s: %s); retrying",
                    self.name,
                    self.rv,
                    type(exc).__name__,
                    str(exc)[:200],
                )
            await self.sleep(min(BACKOFF_MAX, 0.5 * 2 ** min(failures, 6)))

    def _gone(self) -> None:
        if self.metric:
            metrics.RELISTS.labels(self.metric).inc()
        self.quiet.info(
            f"{self.name} gone", "%s: resourceVersion expired (410 Gone); listing again", self.name
        )
        self.rv = None

    async def _list(self) -> str:
        """List everything, handing each item over as ADDED; the resourceVersion to watch from."""
        self.relists += 1
        self._held = set() if self.listed is not None else None
        rv = await (self._list_cached() if self.cached else self._list_paged())
        held, self._held = self._held, None
        if held is not None and self.listed is not None:
            self.listed(held)
        self.quiet.recovered_all(
            (f"forbidden list {self.resource}", f"{self.name} failing"),
            "%s: listing works again",
            self.name,
        )
        return rv

    def _listed(self, item: Any) -> None:
        if self._held is not None and isinstance(item, dict):
            uid = (item.get("metadata") or {}).get("uid")
            if isinstance(uid, str):
                self._held.add(uid)
        if isinstance(item, dict) and (self.keep_listed is None or self.keep_listed(item)):
            self.received_at = time.time()
            self.handle("ADDED", item)

    def _listing(self, items: int) -> None:
        """A list got ``items`` far: progress if no earlier attempt got as far (a list that fails
        on the same item every time is not progress, however many pages come before it)."""
        if items > self._furthest:
            self._furthest = items
            self._progress()

    async def _list_paged(self) -> str:
        rv, n = "", 0
        async for page in pages(self.api, self.path, self.page, max_page=self.max_page):
            self._received = True
            if page.skipped is not None:
                self._held = None  # not a whole list: it cannot say what was deleted
                self._oversize(page.skipped, listed=True)
                n += 1
            for item in page.items:
                self._listed(item)
                n += 1
            self._listing(n)
            rv = page.resource_version
            page = item = None  # not held while the next page is read
            await asyncio.sleep(0)  # let the writer and kopf run between pages
        self._furthest = 0
        return rv

    async def _list_cached(self) -> str:
        listing = Listing()
        n = 0
        async for item in self.api.items(self.path, listing, self.read_timeout):
            self._received = True
            self._listed(item)
            n += 1
            if n % 200 == 0:
                self._listing(n)
                await asyncio.sleep(0)  # let the writer and kopf run in between
        self._furthest = 0
        return listing.resource_version

    async def _watch(self, rv: str | None) -> None:
        """Watch from ``rv`` until the server ends the watch (``self.rv`` follows it)."""
        params = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": rv or "",
            "timeoutSeconds": str(self.watch_timeout),
        }
        async with self.api.stream(self.path, params, self.read_timeout) as rsp:
            self.quiet.recovered_all(
                (f"forbidden list {self.resource}", f"{self.name} failing"),
                "%s: watching again",
                self.name,
            )
            lines = Lines(self.max_line)
            while True:
                try:
                    chunk = await rsp.content.readany()
                except TimeoutError:
                    raise _Silent() from None
                except (aiohttp.ClientError, OSError) as exc:  # the stream broke mid-chunk
                    raise ApiError(
                        0, type(exc).__name__, str(exc)[:200], "GET", self.path
                    ) from None
                if not chunk:
                    if lines.pending:
                        raise ApiError(0, "Truncated", "the watch ended mid-line", "GET", self.path)
                    return
                self._received = True
                self._lines(lines.feed(chunk))

    def _lines(self, batch: list[bytes | Oversize]) -> None:
        skipped: bytes | None = None  # the last line passed over unparsed, if none came after it
        for line in batch:
            if isinstance(line, Oversize):
                skipped = None
                self._oversize(line)
            elif (
                self.candidate is not None
                and self.candidate not in line
                and not line.startswith(_CONTROL)
            ):
                skipped = line  # cannot be a pull
            else:
                skipped = None
                self._event(orjson.loads(line))
        if skipped is not None:
            rv = resource_version_of(skipped[:_HEAD])
            if rv:
                self._progress(rv)

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise ValueError(f"watch error: {str(obj.get('message'))[:200]}")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self.received_at = time.time()
            self.handle(kind, obj)
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if isinstance(rv, str) and rv:
            self._progress(rv)  # after the handler: a line it fails on is read again

    def _oversize(self, line: Oversize, listed: bool = False) -> None:
        """A watch line over ``max_line``, or (``listed``) a listed object over ``max_page``."""
        self.oversize += 1
        if self.metric:
            metrics.OVERSIZE.labels(self.metric).inc()
        if listed:
            self.quiet.warning(
                f"{self.name} oversize",
                "%s: skipped a listed object of %d bytes (a page of it alone is over %d): no "
                "object the API server stores is that long",
                self.name,
                line.size,
                self.max_page,
            )
            return
        rv = resource_version_of(line.head)
        self.quiet.warning(
            f"{self.name} oversize",
            "%s: skipped a line of %d bytes (over %d; resourceVersion %s): no object the API "
            "server stores unescaped is that long",
            self.name,
            line.size,
            self.max_line,
            rv or "unknown",
        )
        if rv:
            self._progress(rv)


class _Gone(Exception):
    pass


class _Silent(Exception):
    pass
