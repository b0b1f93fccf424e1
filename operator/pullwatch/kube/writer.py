"""Writing Findings: ordered by severity, coalesced, conflict-safe, and never stuck.

* A Finding touched by a pull is marked dirty. It is written when due: a new one within
  ``flush_interval`` (0.25 s: detection latency), count updates of one that exists at most every
  ``status_interval`` (2 s: a burst of repeats costs one write). Due Findings are written in order
  of severity, new ones first: a flood of medium Findings never delays a scanner Finding.
* A new Finding is created (POST) and its status written through the status subresource (PUT
  with ``resourceVersion``). A 409 means someone else wrote it (an earlier run, another replica, a
  user): re-read, max-merge (never counts a pull twice), try again. A 404 on the status write means
  a user deleted it: it is created again with every pull pullwatch knows of.
* A Finding leaves the dirty set only once it is written, and a change made while its write was
  in flight keeps it dirty: SIGTERM in the middle of a flush loses nothing (``drain``).
* Every request has a deadline (api.py). A Finding whose write fails waits before the next try,
  exponentially per Finding up to 5 minutes (a namespace whose policy refuses it is not hammered
  4 times a second); but while *every* write fails (RBAC revoked, API server away) the wait is at
  most 10 s, and the first success retries everything at once, so recovery takes seconds. Each
  distinct error is logged once per interval.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import GROUP, VERSION
from ..core.detector import Detector
from ..core.findings import RULES_BY_SHORT
from ..core.state import FindingState
from . import metrics
from .api import JSON_PATCH, Api, ApiError
from .health import Health
from .quietlog import Quiet

PLURAL = "findings"
MAX_CONFLICTS = 5
BACKOFF_MAX, OUTAGE_BACKOFF_MAX = 300.0, 10.0
_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3, "informational": 4}
log = logging.getLogger("pullwatch.writer")


def path_of(namespace: str, name: str | None = None, status: bool = False) -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return base if name is None else f"{base}/{name}" + ("/status" if status else "")


@dataclass
class _Dirty:
    since: float  # first change not yet written (coalescing starts here)
    generation: int = 1  # bumped by every change: a write covers the generation it started with
    attempts: int = 0  # failures in a row
    not_before: float = 0.0
    restore_spec: bool = False  # someone changed the spec: put pullwatch's back


class FindingWriter:
    def __init__(
        self,
        api: Api,
        detector: Detector,
        health: Health,
        *,
        flush_interval: float = 0.25,
        status_interval: float = 2.0,
        concurrency: int = 4,
        quiet: Quiet | None = None,
    ):
        self.api, self.detector, self.health = api, detector, health
        self.flush_interval = flush_interval
        self.status_interval = max(flush_interval, status_interval)
        self.concurrency = concurrency
        self.quiet = quiet or Quiet(log)
        self.versions: dict[str, str] = {}  # Findings known to exist -> last resourceVersion seen
        self.dirty: dict[str, _Dirty] = {}
        self.in_flight: set[str] = set()
        self.writes: Counter[tuple[str, str]] = Counter()  # (verb, outcome)
        self.last_success = self.last_failure = 0.0
        # Findings whose writes failed since the last success (two or more: an outage, not one
        # Finding a namespace's policy refuses), and the Findings each logged trouble is about:
        # "works again" is said when those succeed, not when some other Finding does.
        self.failing: set[str] = set()
        self.troubled: dict[str, set[str]] = {}
        self.listeners: list[Callable[[str], None]] = []  # told the namespace of every change
        self._wake = asyncio.Event()
        self._draining = False
        self._tasks: set[asyncio.Task] = set()

    # -- what to write
    # ------------------------------------------------------------------------------
    def changed(self, namespace: str) -> None:
        """A Finding of ``namespace`` changed (or was removed): tell the listeners (OpenReports)."""
        for listener in self.listeners:
            listener(namespace)

    def mark(self, name: str, restore_spec: bool = False) -> None:
        state = self.detector.states.get(name)
        if state is not None:
            self.changed(state.namespace)
        now = asyncio.get_running_loop().time()
        d = self.dirty.get(name)
        if d is None:
            self.dirty[name] = _Dirty(since=now, restore_spec=restore_spec)
        else:
            d.generation += 1
            d.restore_spec = d.restore_spec or restore_spec
        if name not in self.versions or restore_spec:
            self._wake.set()

    def _due(self, now: float) -> list[str]:
        due = []
        for name, d in list(self.dirty.items()):
            if name in self.in_flight or d.not_before > now:
                continue
            state = self.detector.states.get(name)
            if state is None or not state.has_evidence:
                del self.dirty[name]  # forgotten, or nothing counted yet (a back-off alone)
                continue
            new = name not in self.versions
            if (
                self._draining
                or d.restore_spec
                or now - d.since >= (self.flush_interval if new else self.status_interval)
            ):
                severity = RULES_BY_SHORT[state.identity.rule].severity
                due.append((_RANK.get(severity, 9), not new, d.since, name))
        due.sort()
        return [name for *_, name in due]

    # -- the loop
    # -----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Write due Findings forever, ``concurrency`` at a time (cancelled at shutdown; then
        ``drain`` writes what is left)."""
        loop = asyncio.get_running_loop()
        while True:
            self.health.beat("writer")
            free = self.concurrency - len(self.in_flight)
            for name in self._due(loop.time())[: max(0, free)]:
                self._start(name)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            except TimeoutError:
                pass

    def _start(self, name: str) -> None:
        self.in_flight.add(name)
        task = asyncio.create_task(self._write_one(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, deadline: float) -> int:
        """Write every dirty Finding now, most severe first, until done or ``deadline`` (loop
        time); return how many are left unwritten."""
        loop = asyncio.get_running_loop()
        self._draining = True
        while self.dirty and loop.time() < deadline:
            for d in self.dirty.values():
                d.not_before = min(d.not_before, loop.time())  # no backoff at the end
            free = self.concurrency - len(self.in_flight)
            for name in self._due(loop.time())[: max(0, free)]:
                self._start(name)
            if not self._tasks:
                break
            await asyncio.wait(
                set(self._tasks),
                timeout=max(0.0, deadline - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        return len(self.dirty)

    async def _write_one(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        d = self.dirty.get(name)
        if d is None:
            self.in_flight.discard(name)
            return
        generation = d.generation
        try:
            await self._write(name, d.restore_spec)
        except ApiError as exc:
            self._failed(name, d, exc, loop.time())
        except Exception as exc:
            self._failed(
                name, d, ApiError(0, type(exc).__name__, str(exc)[:200], "PUT", name), loop.time()
            )
        else:
            self._succeeded(name, loop.time())
            metrics.LATENCY.observe(loop.time() - d.since)
            if d.generation == generation:
                self.dirty.pop(name, None)
            else:
                d.since, d.attempts, d.restore_spec = loop.time(), 0, False
        finally:
            self.in_flight.discard(name)
            self.health.beat("writer")
            self._wake.set()

    def _failed(self, name: str, d: _Dirty, exc: ApiError, now: float) -> None:
        self.last_failure = now
        self.failing.add(name)
        d.attempts += 1
        cap = OUTAGE_BACKOFF_MAX if self.outage else BACKOFF_MAX
        d.not_before = now + min(cap, 2 ** min(d.attempts, 9)) * random.uniform(0.8, 1.2)
        state = self.detector.states.get(name)
        where = f"{state.namespace}/{name}" if state else name
        key = f"forbidden {exc.what}" if exc.status == 403 else f"write {exc.status} {exc.reason}"
        self.troubled.setdefault(key, set()).add(name)
        if exc.status == 403:
            self.quiet.warning(
                key,
                "forbidden: %s (Finding %s; %s); will retry",
                exc.what,
                where,
                exc.message[:200],
            )
        else:
            self.quiet.warning(key, "writing Finding %s failed: %s; will retry", where, exc)

    def _succeeded(self, name: str, now: float) -> None:
        was_outage = self.outage
        self.last_success = now
        self.failing.clear()
        if was_outage:
            # The trouble that stopped every write is over: retry everything that waited.
            for d in self.dirty.values():
                d.not_before = 0.0
            self._wake.set()
        for key, names in list(self.troubled.items()):
            # a Finding no longer pending (written, or gone) is no longer trouble
            names = self.troubled[key] = {n for n in names if n != name and n in self.dirty}
            if not names:
                del self.troubled[key]
                self.quiet.recovered(key, "writing Findings works again")

    @property
    def outage(self) -> bool:
        """Writes of two or more Findings failed since the last success: the API server, RBAC or
        the network, not one Finding's namespace (whose retries must not be hurried by others)."""
        return len(self.failing) >= 2

    def _wrote(self, verb: str, outcome: str) -> None:
        self.writes[(verb, outcome)] += 1
        metrics.WRITES.labels(verb, outcome).inc()

    # -- one Finding
    # ----------------------------------------------------------------------------------
    async def _write(self, name: str, restore_spec: bool) -> None:
        for _ in range(MAX_CONFLICTS):
            state = self.detector.states.get(name)
            if state is None:
                return
            body = state.body()  # a snapshot, taken on the event loop
            rv = self.versions.get(name)
            if rv is None:
                rv = await self._create(state, body)
                if rv is None:
                    continue
                body = state.body()
                restore_spec = False
            if restore_spec:
                restored = await self._restore_spec(state, body["spec"], rv)
                if restored is None:
                    continue  # it moved on, or is gone: read again, then try again
                rv, restore_spec = restored, False
            body["metadata"]["resourceVersion"] = rv
            try:
                result = await self.api.request(
                    "PUT", path_of(state.namespace, name, status=True), body=body
                )
            except ApiError as exc:
                self._wrote("update", str(exc.status))
                if exc.status == 409:
                    await self._reread(state)
                    continue
                if exc.status == 404:
                    self.versions.pop(name, None)
                    log.info("Finding %s/%s was deleted; creating it again", state.namespace, name)
                    continue
                raise
            self._wrote("update", "ok")
            self.versions[name] = result["metadata"]["resourceVersion"]
            return
        raise ApiError(
            409, "Conflict", f"gave up after {MAX_CONFLICTS} conflicting attempts", "PUT", name
        )

    async def _create(self, state: FindingState, body: dict[str, Any]) -> str | None:
        try:
            created = await self.api.request(
                "POST",
                path_of(state.namespace),
                body={k: v for k, v in body.items() if k != "status"},
            )
        except ApiError as exc:
            self._wrote("create", str(exc.status))
            if exc.status != 409:
                raise
            return await self._reread(state)  # it exists already: take it in, write over it
        self._wrote("create", "ok")
        rv = created["metadata"]["resourceVersion"]
        self.versions[state.name] = rv
        return rv

    async def _restore_spec(self, state: FindingState, spec: dict[str, Any], rv: str) -> str | None:
        """Put pullwatch's spec back (someone edited it), only over the version that was read;
        labels and annotations people use for triage are left alone. The new resourceVersion, or
        None when the object moved on or is gone (re-read: the caller tries again)."""
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "replace", "path": "/spec", "value": spec},
        ]
        try:
            result = await self.api.request(
                "PATCH", path_of(state.namespace, state.name), body=patch, content_type=JSON_PATCH
            )
        except ApiError as exc:
            self._wrote("patch", str(exc.status))
            if exc.status in (
                409,
                422,
            ):  # resourceVersion moved on (the test op failed): read again
                await self._reread(state)
                return None
            if exc.status == 404:
                self.versions.pop(state.name, None)
                return None
            raise
        self._wrote("patch", "ok")
        rv = result["metadata"]["resourceVersion"]
        self.versions[state.name] = rv
        return rv

    async def _reread(self, state: FindingState) -> str | None:
        """GET the stored Finding and merge it; its resourceVersion, or None if it is gone."""
        try:
            stored = await self.api.request("GET", path_of(state.namespace, state.name))
        except ApiError as exc:
            if exc.status == 404:
                self.versions.pop(state.name, None)
                return None
            raise
        try:
            self.detector.adopt(stored)
        except ValueError as exc:
            log.warning(
                "Finding %s/%s as stored is not one pullwatch can read (%s); writing over it",
                state.namespace,
                state.name,
                exc,
            )
        rv = stored["metadata"]["resourceVersion"]
        self.versions[state.name] = rv
        return rv
