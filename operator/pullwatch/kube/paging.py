"""Paged lists whose pages stay within a byte bound, whatever the objects in them.

A list asks for ``limit`` objects a page, and a page is as long as its objects. Events have no
size limit of their own but the API server's (~3 MiB a request; etcd stores up to 1.5 MiB an
object), so a tenant with ``create events`` can make a page of 500 Events most of a gigabyte:
read whole and parsed, that one page would get the operator OOM-killed - and then again at every
restart, since each one lists the same page first. So each page is read into at most
``MAX_PAGE`` bytes (``Api.read``):

* over the bound, the read stops there (the connection is dropped) and the same page - the same
  ``continue`` token - is asked again with half the ``limit``, down to 1;
* an object over the bound on its own (limit 1) is read to its end all the same, only the bytes
  around it kept, and skipped: the caller counts it (``Page.skipped``), and the list goes on from
  that page's ``continue`` token (read from the List's metadata, which comes before the items or
  after them, never inside), so that a list never stalls on one object;
* the next page's limit is what the last page's objects suggest would make ``PAGE_TARGET``
  bytes (so that a limit is right after one page, not after more halvings), growing back,
  doubling, to the one asked for.

Why ``MAX_PAGE`` is 8 MiB: what a page costs is its bytes plus, parsed, about as many again for
long strings (several times as many for many small fields: that is ``PAGE_TARGET``'s business),
plus what the allocator keeps of it: measured, a start-up list of 60 Events of 1 MB raised the
operator's peak RSS by 172 MB when its page was read whole, by 45 MB with a bound of 16 MiB and
by 22 MB with 8 MiB.
Normal pages are smaller: 500 Events are about 0.5 MiB, 500 Pods a few MiB; a page of 500
large Pods (20 KiB each: many containers, managedFields) is asked again as two.

Why ``PAGE_TARGET`` is 4 MiB: a page is parsed at once on the event loop, and the Event watch
waits meanwhile. A thread would not free the loop (orjson holds the GIL: measured, the loop
stalls as long as the parse), and a streaming parser costs 5 to 12 times the CPU (ijson, on
Events); so pages are kept small instead: 4 MiB of objects are parsed in tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .api import Api, ApiError, list_metadata
from .lines import Oversize

MAX_PAGE = 8 * 1024 * 1024
PAGE_TARGET = 4 * 1024 * 1024


@dataclass
class Page:
    items: list[Any]
    resource_version: str
    token: str  # metadata.continue: "" on the last page
    size: int = 0  # its bytes
    skipped: Oversize | None = field(default=None)  # an object over the bound, not in items


async def pages(
    api: Api,
    path: str,
    limit: int = 500,
    params: dict[str, str] | None = None,
    timeout: float | None = None,
    max_page: int = MAX_PAGE,
    target: int | None = None,
) -> AsyncIterator[Page]:
    """A list, one page at a time, each held in at most ``max_page`` bytes (see above); pages
    aim at ``target`` bytes (``PAGE_TARGET``, or half a smaller ``max_page``)."""
    aim = target or min(PAGE_TARGET, max_page // 2)
    n, token = limit, ""
    wait = timeout or max(api.timeout, 30)
    while True:
        query = {**(params or {}), "limit": str(n)}
        if token:
            query["continue"] = token
        page = await _page(api, path, query, max_page, n == 1, wait)
        if page is None:
            n = max(1, n // 2)  # the same token again, with fewer objects
            continue
        token = page.token
        n = min(limit, 2 * n)  # back up to the limit asked for, doubling
        if page.items and page.size:  # but no more than the size of these objects suggests
            n = min(n, max(1, len(page.items) * aim // page.size))
        yield page
        del page  # not held while the next page is read
        if not token:
            return


async def _page(
    api: Api, path: str, query: dict[str, str], bound: int, alone: bool, timeout: float
) -> Page | None:
    """One page; None when it is over the bound with more than one object in it."""
    body = await api.read(path, query, bound=bound, drain=alone, timeout=timeout)
    if body.data is None:
        if not alone:
            return None
        version, token = list_metadata(body.head, body.tail)
        if not version:
            raise ApiError(0, "BadList", "the list has no metadata.resourceVersion", "GET", path)
        return Page([], version, token, body.size, Oversize(body.head, body.size))
    try:
        doc = orjson.loads(body.data)
    except orjson.JSONDecodeError as exc:
        raise ApiError(0, "BadJSON", str(exc)[:200], "GET", path) from None
    size = len(body.data)
    del body  # the bytes, before the page is handed over
    if not isinstance(doc, dict):
        raise ApiError(0, "BadList", "the answer is not a List", "GET", path)
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    items = doc.get("items") if isinstance(doc.get("items"), list) else []
    return Page(
        items, str(meta.get("resourceVersion") or ""), str(meta.get("continue") or ""), size
    )
