"""pullwatch's configuration objects in force: AllowedImages, ScannerImages and Suppressions.

One mechanism for the three kinds (``Kind`` says what differs):

* Each object is compiled once per ``metadata.generation`` (its spec: status writes do not change
  it), in a worker thread, by the pure core; what is in force is then assembled from the compiled
  objects, which is cheap. A change costs the compile of that one object, not of all of them, and
  nothing heavy runs on the event loop (whose stall fails the liveness probe).
* When an active replica starts, ``load`` lists them all first, so that no pull is judged against
  half of the configuration; changes then come from the kind's watch (stream.py's ``ListWatch``,
  from the list's resourceVersion: ``apply`` takes every ADDED/MODIFIED/DELETED). A watch that
  fails - the API server restarting serves no custom resource for seconds (404) - is resumed, never
  the end of the operator. What a whole list (``load``'s, or the watch's after a 410) no longer
  holds was deleted while nobody watched (``drop_unlisted``). A change is in force within
  ``DEBOUNCE`` seconds plus its compile time.
* Versions can come out of order (a re-read or a list page older than what the watch delivered).
  An older version never replaces a newer one, and a deleted object is remembered (a tombstone
  per uid: a uid is never reused, so nothing seen after its DELETED can bring it back) - else a
  stale page would put a deleted Suppression back in force.
* What is kept of an object is what is used: a few metadata fields, its status, the lengths of
  its spec's lists, and the compiled object; its spec only until it is compiled.
* A kind may have a budget (Suppressions: core/budgets.py): objects over it are not compiled,
  get a stand-in that covers nothing and says why, and their specs are dropped as soon as they
  are known to be over (while the list is still being read: refusal only grows as objects are
  added). One that fits again later is read again (a GET) and compiled.
* The list at start-up is streamed and parsed item by item: one object in memory, not a page.
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
from ..core.budgets import Claim
from ..core.names import is_label, is_subdomain, segment
from ..core.suppressions import parse_time
from . import metrics
from .api import MERGE_PATCH, Api, ApiError
from .paging import MAX_PAGE, pages
from .quietlog import Quiet

DEBOUNCE = 0.1
SAMPLE = 20
# deleted uids remembered (a stale list page is seconds old, not 10,000 deletes)
TOMBSTONES = 10_000
TRIM_EVERY = 100  # listed objects between two budget passes (each pass is O(objects))
_META = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp")
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
    # A budget (None: none): what each object costs (from its body, before any compile); which
    # claims are refused (uid -> why); the stand-in compiled for a refused one (metadata, why).
    cost: Callable[[dict[str, Any]], int] | None = None
    budget: Callable[[list[Claim]], dict[str, str]] | None = None
    refused: Callable[[dict[str, Any], str], Any] | None = None
    # Told once per object and generation that pullwatch's status does not yet record (new, or
    # changed - also while no operator ran: the stored status is what the last one saw).
    noticed: Callable[[Any, dict[str, Any]], None] | None = None

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
        self.objects: dict[str, dict[str, Any]] = {}  # uid -> what is kept of it (slim)
        self.deleted: OrderedDict[str, None] = OrderedDict()  # tombstones: uids seen DELETED
        self.compiled: dict[tuple[str, Any], Any] = {}  # (uid, generation) -> compiled
        self.refused: dict[str, str] = {}  # uid -> why it is over the budget
        self.ready = asyncio.Event()
        self.rebuilds = 0
        self._said = -1
        self._changed = asyncio.Event()
        self._statuses: set[str] = set()  # uids whose status to check
        self._specs: dict[str, dict[str, Any]] = {}  # uid -> whole body, until compiled
        self._stand_ins: dict[tuple[str, Any], str] = {}  # compiled key -> why (budget stand-ins)
        self._noticed: dict[str, Any] = {}  # uid -> generation told to kind.noticed

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
            self._statuses.discard(uid)
            self._specs.pop(uid, None)
            self._noticed.pop(uid, None)
            self.deleted[uid] = None
            if len(self.deleted) > TOMBSTONES:
                self.deleted.popitem(last=False)
        else:
            known = self.objects.get(uid)
            if known is not None and _rv(known) > _rv(body):
                return  # an older version than one already in force (a status re-read and a page)
            kept = self._slim(body)
            self.objects[uid] = kept
            self._statuses.add(uid)
            key = (uid, _generation(kept))
            if key not in self.compiled or key in self._stand_ins:
                self._specs[uid] = body
            else:
                self._specs.pop(uid, None)  # a status write: that generation is compiled
        self._changed.set()

    def drop_unlisted(self, held: set[str]) -> None:
        """A whole list held the uids ``held``: whatever else is kept was deleted meanwhile. (No
        watch runs while a list is read, so nothing newer can be missing from it.)"""
        for uid in [u for u in self.objects if u not in held]:
            self.apply("DELETED", {"metadata": self.objects[uid]["metadata"]})

    def _slim(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        return {
            "metadata": {k: meta[k] for k in _META if k in meta},
            "status": body.get("status"),
            "sizes": {k: len(v) for k, v in spec.items() if isinstance(v, list)},
            "cost": self.kind.cost(body) if self.kind.cost is not None else 0,
        }

    def recheck_statuses(self) -> None:
        """Statuses that depend on what happens (a Suppression's hidden pulls): check them again."""
        self._statuses.update(self.objects)
        self._changed.set()

    def _admit(self) -> None:
        """Which objects are over the budget; drop their specs (they will not be compiled)."""
        if self.kind.budget is None:
            return
        self.refused = self.kind.budget(
            [
                Claim(uid, m.get("namespace") or "", _created(m), m["name"], kept["cost"])
                for uid, kept in self.objects.items()
                for m in (kept["metadata"],)
            ]
        )
        for uid in self.refused:
            self._specs.pop(uid, None)

    async def load(self) -> str:
        """List every object (retrying within seconds) and put them in force; the list's
        resourceVersion (where the kind's watch starts)."""
        delay = 0.5
        while True:
            try:
                listed, rv = 0, ""
                held: set[str] | None = set()  # uids of this attempt's list
                async for page in pages(self.api, self.kind.path(), max_page=self.max_page):
                    rv = page.resource_version
                    if page.skipped is not None:
                        self._oversize(page.skipped.size)
                        held = None  # not a whole list: it cannot say what was deleted
                    for item in page.items:
                        if held is not None:
                            held.add(str((item.get("metadata") or {}).get("uid")))
                        self.apply("ADDED", item)
                        listed += 1
                        if listed % TRIM_EVERY == 0:
                            self._admit()
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
        if held is not None:
            self.drop_unlisted(held)  # what a failed attempt read and was deleted since
        self.quiet.recovered_all(
            (f"{self.kind.plural} list failing", f"forbidden list {self.kind.plural}"),
            f"listing {self.kind.name} works again",
        )
        await self.rebuild()
        return rv

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
        self._admit()
        await self._read_again()
        objects = list(self.objects.items())
        missing: list[tuple[tuple[str, Any], dict[str, Any]]] = []
        for uid, kept in objects:
            key = (uid, _generation(kept))
            why = self.refused.get(uid)
            if why is not None and self.kind.refused is not None:
                if self._stand_ins.get(key) != why:
                    self.compiled[key] = self.kind.refused(kept["metadata"], why)
                    self._stand_ins[key] = why
                    self._statuses.add(uid)
            elif (key not in self.compiled or key in self._stand_ins) and uid in self._specs:
                missing.append((key, self._specs[uid]))
        if missing:
            compile_ = self.kind.compile
            fresh = await asyncio.to_thread(lambda: [(k, compile_(b)) for k, b in missing])
            for key, compiled in fresh:
                self.compiled[key] = compiled
                self._stand_ins.pop(key, None)
                if (
                    self._specs.get(key[0]) is not None
                    and _generation(self._specs[key[0]]) == key[1]
                ):
                    del self._specs[key[0]]
        keys = {(uid, _generation(kept)) for uid, kept in objects}
        for stale in [k for k in self.compiled if k not in keys]:
            del self.compiled[stale]
            self._stand_ins.pop(stale, None)
        if self.refused:
            uid, why = next(iter(self.refused.items()))
            self.quiet.warning(
                f"{self.kind.plural} over budget",
                "%d %s over the budget are not compiled and cover nothing (e.g. %s/%s: %s)",
                len(self.refused),
                self.kind.name,
                self.objects[uid]["metadata"].get("namespace"),
                self.objects[uid]["metadata"]["name"],
                why,
            )
        else:
            self.quiet.recovered(
                f"{self.kind.plural} over budget", f"no {self.kind.name} over budget"
            )
        in_force = self.in_force()
        self.kind.install(in_force)
        self.rebuilds += 1
        if len(in_force) != self._said:
            self._said = len(in_force)
            log.info("%d %s in force", len(in_force), self.kind.name)
        self.ready.set()

    async def _read_again(self) -> None:
        """Objects within the budget again whose spec was dropped: read them (one GET each; a
        failure is tried again at the next rebuild)."""
        for uid, kept in list(self.objects.items()):
            key = (uid, _generation(kept))
            if uid in self.refused or uid in self._specs:
                continue
            if key in self.compiled and key not in self._stand_ins:
                continue
            try:
                body = await self.api.request("GET", self.kind.path(kept["metadata"]))
            except ApiError as exc:
                if exc.status != 404:  # 404: deleted, its DELETED is on its way
                    self.quiet.warning(
                        f"{self.kind.plural} read failing",
                        "cannot read %s %s again (%s); will retry",
                        self.kind.name,
                        kept["metadata"]["name"],
                        exc,
                    )
                    asyncio.get_running_loop().call_later(1.0, self._changed.set)
                continue
            if isinstance(body, dict) and (body.get("metadata") or {}).get("uid") == uid:
                self.apply("MODIFIED", body)

    async def _write_statuses(self, delay: float) -> float:
        """Write the statuses that differ from what is wanted; the delay before a retry."""
        failed = False
        if self._statuses and self.kind.prepare is not None:
            self.kind.prepare()
        for uid in list(self._statuses):
            body = self.objects.get(uid)
            compiled = body and self.compiled.get((uid, _generation(body)))
            if body is None or compiled is None:
                continue
            meta = body["metadata"]
            self._notice(uid, compiled, body)
            wanted = self.kind.status(compiled, body)
            if same_status(body.get("status"), wanted):
                self._statuses.discard(uid)
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
                    self._statuses.discard(uid)
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
            self._statuses.discard(uid)
            if (
                isinstance(stored, dict)
                and isinstance(stored.get("metadata"), dict)
                and uid in self.objects
                and _rv(stored) >= _rv(self.objects[uid])
            ):
                self.objects[uid] = self._slim(stored)  # its status is the one just written
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

    def _notice(self, uid: str, compiled: Any, body: dict[str, Any]) -> None:
        """Tell the kind of a generation its stored status does not record yet, once."""
        generation = body["metadata"].get("generation")
        status = body.get("status") if isinstance(body.get("status"), dict) else {}
        if (
            self.kind.noticed is None
            or self._noticed.get(uid) == generation
            or status.get("observedGeneration") == generation
        ):
            return
        self._noticed[uid] = generation
        self.kind.noticed(compiled, body)


def _created(meta: dict[str, Any]) -> float:
    try:
        return parse_time(meta.get("creationTimestamp"))
    except (ValueError, TypeError):
        return float("inf")  # never the oldest


def _rv(body: dict[str, Any]) -> int:
    rv = (body.get("metadata") or {}).get("resourceVersion")
    try:
        return int(rv)
    except (TypeError, ValueError):
        return -1


def _generation(body: dict[str, Any]) -> Any:
    meta = body.get("metadata") or {}
    return meta.get("generation", meta.get("resourceVersion"))
