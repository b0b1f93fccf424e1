"""pullwatch's configuration objects in force: AllowedImages, ScannerImages and Suppressions.

One mechanism for the three kinds (``Kind`` says what differs):

* Each object is compiled once per ``metadata.generation`` (its spec: status writes do not change
  it), in a worker thread, by the pure core; what is in force is then assembled from the compiled
  objects, which is cheap. A change costs the compile of that one object, not of all of them (the
  old rebuild compiled everything on every change: 600 AllowedImages took 91 s to settle), and
  nothing heavy runs on the event loop (whose stall failed the liveness probe).
* Changes come from kopf (``apply``: every ADDED/MODIFIED/DELETED of the kind's watch); when an
  active replica starts, ``load`` lists them all first, so that no pull is judged against half of
  the configuration. A change is in force within ``DEBOUNCE`` seconds plus its compile time.
* The list and the watch race: a page of the list can be older than what the watch delivered.
  An older version never replaces a newer one, and a deleted object is remembered (a tombstone
  per uid: a uid is never reused, so nothing seen after its DELETED can bring it back) - else a
  stale page would put a deleted Suppression back in force.
* Each object's status says what pullwatch made of it - bounded whatever its size (counts, the
  first 20 problems) - and is written with retries that back off and are said once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import GROUP, VERSION
from ..core.names import is_label, is_subdomain, segment
from . import metrics
from .api import MERGE_PATCH, Api, ApiError
from .paging import MAX_PAGE, pages
from .quietlog import Quiet

DEBOUNCE = 0.1
SAMPLE = 20
TOMBSTONES = (
    10_000  # deleted uids remembered (a stale list page is seconds old, not 10,000 deletes)
)
log = logging.getLogger("pullwatch.config")


@dataclass(frozen=True)
class Kind:
    name: str  # AllowedImages
    plural: str  # allowedimages
    namespaced: bool
    compile: Callable[[dict[str, Any]], Any]  # body -> compiled (pure core; in a thread)
    install: Callable[[list[Any]], None]  # compiled objects in force -> the detector
    status: Callable[[Any, dict[str, Any]], dict[str, Any]]  # compiled, body -> status (bounded)
    prepare: Callable[[], None] | None = None  # before each pass over the statuses

    def path(self, meta: dict[str, Any] | None = None, status: bool = False) -> str:
        if meta is None:
            return f"/apis/{GROUP}/{VERSION}/{self.plural}"
        where = f"namespaces/{segment(meta['namespace'])}/" if self.namespaced else ""
        return f"/apis/{GROUP}/{VERSION}/{where}{self.plural}/{segment(meta['name'])}" + (
            "/status" if status else ""
        )

    def named(self, meta: dict[str, Any]) -> bool:
        """Whether the object's name (and namespace) are ones the API server could have given."""
        return is_subdomain(meta.get("name")) and (
            not self.namespaced or is_label(meta.get("namespace"))
        )


def condition(ok: bool, reason: str, message: str, generation: Any) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message[:1000],
        "observedGeneration": generation,
    }


def same_status(current: Any, wanted: dict[str, Any]) -> bool:
    if not isinstance(current, dict):
        return False
    strip = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in current.get("conditions") or []
        if isinstance(c, dict)
    ]
    return strip == wanted["conditions"] and all(
        current.get(k) == v for k, v in wanted.items() if k != "conditions"
    )


class Configs:
    """The objects of one kind, compiled and in force."""

    def __init__(self, api: Api, kind: Kind, quiet: Quiet | None = None):
        self.api, self.kind = api, kind
        self.quiet = quiet or Quiet(log)
        self.max_page = MAX_PAGE  # bytes of one list page held at most (paging.py)
        self.objects: dict[str, dict[str, Any]] = {}  # uid -> latest body seen
        self.deleted: OrderedDict[str, None] = OrderedDict()  # tombstones: uids seen DELETED
        self.compiled: dict[tuple[str, Any], Any] = {}  # (uid, generation) -> compiled
        self.ready = asyncio.Event()
        self.rebuilds = 0
        self._said = -1
        self._changed = asyncio.Event()
        self._statuses: dict[str, dict[str, Any]] = {}  # uid -> body whose status to check

    def in_force(self) -> list[Any]:
        return [
            self.compiled[k]
            for k in sorted((uid, _generation(b)) for uid, b in self.objects.items())
            if k in self.compiled
        ]

    # -- changes -----------------------------------------------------------------------------------
    def apply(self, event: str, body: dict[str, Any]) -> None:
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        uid = meta.get("uid")
        if not isinstance(uid, str) or not self.kind.named(meta):
            return
        if uid in self.deleted:
            return  # deleted: whatever comes after (a stale list page) is older than that
        if event == "DELETED":
            self.objects.pop(uid, None)
            self._statuses.pop(uid, None)
            self.deleted[uid] = None
            if len(self.deleted) > TOMBSTONES:
                self.deleted.popitem(last=False)
        else:
            known = self.objects.get(uid)
            if known is not None and _rv(known) > _rv(body):
                return  # an older version than one already in force (kopf and the list can race)
            self.objects[uid] = body
            self._statuses[uid] = body
        self._changed.set()

    def recheck_statuses(self) -> None:
        """Statuses that depend on what happens (a Suppression's hidden pulls): check them again."""
        for uid, body in self.objects.items():
            self._statuses.setdefault(uid, body)
        self._changed.set()

    async def load(self) -> None:
        """List every object (retrying within seconds) and put them in force."""
        delay = 0.5
        while True:
            try:
                async for page in pages(self.api, self.kind.path(), max_page=self.max_page):
                    if page.skipped is not None:
                        self._oversize(page.skipped.size)
                    for item in page.items:
                        self.apply("ADDED", item)
                break
            except ApiError as exc:
                self.quiet.warning(
                    f"forbidden {exc.what}"
                    if exc.status == 403
                    else f"{self.kind.plural} list failing",
                    "listing %s failed (%s); retrying (nothing is judged until it works)",
                    self.kind.name,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
        self.quiet.recovered_all(
            (f"{self.kind.plural} list failing", f"forbidden list {self.kind.plural}"),
            f"listing {self.kind.name} works again",
        )
        await self.rebuild()

    def _oversize(self, size: int) -> None:
        """An object over the page bound alone (none the API server stores is): not in force,
        counted and said."""
        metrics.OVERSIZE.labels(self.kind.plural).inc()
        self.quiet.warning(
            f"{self.kind.plural} oversize",
            "listing %s: skipped an object of %d bytes (a page of it alone is over %d)",
            self.kind.name,
            size,
            self.max_page,
        )

    async def run(self) -> None:
        """Rebuild after changes (debounced), and keep the statuses written."""
        delay = 0.0
        while True:
            await self._changed.wait()
            await asyncio.sleep(DEBOUNCE)
            self._changed.clear()
            await self.rebuild()
            delay = await self._write_statuses(delay)
            if self._statuses:
                asyncio.get_running_loop().call_later(max(delay, DEBOUNCE), self._changed.set)

    async def rebuild(self) -> None:
        objects = list(self.objects.items())
        missing = [
            (uid, body) for uid, body in objects if (uid, _generation(body)) not in self.compiled
        ]
        if missing:
            compile_ = self.kind.compile
            fresh = await asyncio.to_thread(
                lambda: [((uid, _generation(b)), compile_(b)) for uid, b in missing]
            )
            self.compiled.update(fresh)
        keys = {(uid, _generation(body)) for uid, body in objects}
        for stale in [k for k in self.compiled if k not in keys]:
            del self.compiled[stale]
        in_force = self.in_force()
        self.kind.install(in_force)
        self.rebuilds += 1
        if len(in_force) != self._said:
            self._said = len(in_force)
            log.info("%d %s in force", len(in_force), self.kind.name)
        self.ready.set()

    async def _write_statuses(self, delay: float) -> float:
        """Write the statuses that differ from what is wanted; the delay before a retry."""
        failed = False
        if self._statuses and self.kind.prepare is not None:
            self.kind.prepare()
        for uid, body in list(self._statuses.items()):
            compiled = self.compiled.get((uid, _generation(body)))
            if compiled is None:
                continue
            meta = body["metadata"]
            wanted = self.kind.status(compiled, body)
            if same_status(body.get("status"), wanted):
                self._statuses.pop(uid, None)
                continue
            wanted["conditions"][0]["lastTransitionTime"] = datetime.datetime.now(
                datetime.UTC
            ).strftime("%Y-%m-%dT%H:%M:%SZ")
            try:
                stored = await self.api.request(
                    "PATCH",
                    self.kind.path(meta, status=True),
                    body={"status": wanted},
                    content_type=MERGE_PATCH,
                )
            except ApiError as exc:
                failed = True
                if exc.status == 404:
                    self._statuses.pop(uid, None)
                    continue
                self.quiet.warning(
                    f"forbidden {exc.what}"
                    if exc.status == 403
                    else f"{self.kind.plural} status failing",
                    "cannot write the status of %s %s (%s); will retry",
                    self.kind.name,
                    meta["name"],
                    exc,
                )
                continue
            self._statuses.pop(uid, None)
            if (
                isinstance(stored, dict)
                and uid in self.objects
                and _rv(stored) >= _rv(self.objects[uid])
            ):
                self.objects[uid] = stored  # what is stored now: its status is the one just written
            if wanted["conditions"][0]["status"] != "True":
                self.quiet.warning(
                    f"{self.kind.plural} {meta['name']} {meta.get('generation')}",
                    "%s %s: %s",
                    self.kind.name,
                    meta["name"],
                    wanted["conditions"][0]["message"],
                )
        if not failed:
            self.quiet.recovered_all(
                (f"{self.kind.plural} status failing", f"forbidden patch {self.kind.plural}"),
                f"writing {self.kind.name} statuses works again",
            )
            return 0.0
        return min(10.0, max(0.5, delay * 2))


def _rv(body: dict[str, Any]) -> int:
    rv = (body.get("metadata") or {}).get("resourceVersion")
    try:
        return int(rv)
    except (TypeError, ValueError):
        return -1


def _generation(body: dict[str, Any]) -> Any:
    meta = body.get("metadata") or {}
    return meta.get("generation", meta.get("resourceVersion"))


def allowlist_gauges(policies: list[Any]) -> None:
    metrics.ALLOWLIST_OBJECTS.set(len(policies))
    metrics.REFUSED_PATTERNS.set(sum(len(p.problems) for p in policies))
