"""Writing Findings to the API server: coalesced, conflict-safe, restart-safe.

The detector holds each Finding's state (counts derived from per-series high-water marks); the
writer makes the API server's copy equal to it:

* Findings touched by pulls are marked dirty and written in batches: a new Finding within
  ``interval`` (0.25 s: detection latency), a count update of an existing one within
  ``status_interval`` (2 s by default): a burst of repeats of one series costs one write, not one per
  Event, which is what keeps the API writes per detected pull under one in a storm.
* A new Finding is created (POST) and then its status written through the status subresource
  (PUT with ``resourceVersion``). A 409 on either means someone else wrote it (an earlier run,
  a second replica, a user): the writer re-reads it, max-merges it into the local state
  (``Detector.merge``: never counts a pull twice) and tries again.
* A 404 on the status write means a user deleted the Finding: it is created again with the
  full count pullwatch knows for it (its Events' cumulative counts, as long as they exist).
* Any other failure (API server restarting…) leaves the Finding dirty for the next flush.

The state is read and merged on the event loop only; the blocking HTTP calls run in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from .. import GROUP, VERSION
from ..core.detector import Detector

PLURAL = "findings"
MAX_ATTEMPTS = 5
log = logging.getLogger("pullwatch.writer")


class FindingWriter:
    def __init__(self, api: CustomObjectsApi, detector: Detector, interval: float = 0.25,
                 status_interval: float = 2.0):
        self.api = api
        self.detector = detector
        self.interval = interval
        self.status_interval = max(interval, status_interval)
        self.versions: dict[str, str] = {}  # Findings known to exist -> last resourceVersion seen
        self.dirty: set[str] = set()
        self.writes = 0  # API writes made (creates + status writes), for the benchmark
        self._wake = asyncio.Event()

    def adopt(self, body: dict[str, Any]) -> None:
        """Take in an existing Finding (start-up list): its counts and its resourceVersion."""
        state = self.detector.merge(body)
        if state is not None:
            self.versions[state.name] = body["metadata"]["resourceVersion"]

    def mark(self, name: str) -> None:
        self.dirty.add(name)

    async def run(self) -> None:
        """Flush forever (cancelled at shutdown; then ``flush()`` writes what is left)."""
        loop = asyncio.get_running_loop()
        next_status = loop.time() + self.status_interval
        while True:
            await asyncio.sleep(self.interval)
            if loop.time() >= next_status:
                next_status = loop.time() + self.status_interval
                await self.flush()
            else:
                await self.flush(new_only=True)

    async def flush(self, new_only: bool = False) -> None:
        """Write the dirty Findings; with ``new_only``, only those not created yet."""
        if new_only:
            names = {n for n in self.dirty if n not in self.versions}
            self.dirty -= names
        else:
            names, self.dirty = self.dirty, set()
        failed = 0
        for name in sorted(names):
            try:
                await self._write(name)
            except Exception as exc:  # noqa: BLE001 - keep the Finding, retry on the next flush
                failed += 1
                self.dirty.add(name)
                if failed == 1:
                    log.warning("writing Finding %s failed (%s); will retry", name, _brief(exc))
        if failed > 1:
            log.warning("%d Findings not written this round; will retry", failed)

    async def _write(self, name: str) -> None:
        for _ in range(MAX_ATTEMPTS):
            state = self.detector.states.get(name)
            if state is None:
                return
            body = state.body()  # a snapshot, taken on the event loop
            ns = state.namespace
            rv = self.versions.get(name)
            if rv is None:
                try:
                    created = await asyncio.to_thread(
                        self.api.create_namespaced_custom_object, GROUP, VERSION, ns, PLURAL,
                        {k: v for k, v in body.items() if k != "status"})
                    self.writes += 1
                    rv = created["metadata"]["resourceVersion"]
                    state.spec_dirty = False
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    rv = await self._reread(name, ns)
                    if rv is None:
                        continue
                    body = self.detector.states[name].body()
            body["metadata"]["resourceVersion"] = rv
            if state.spec_dirty:
                # spec.reason moved from Pulled to Pulling (once, at most). A merge patch of that
                # field alone, conditional on resourceVersion: labels or annotations people put
                # on the Finding (triage) are kept.
                patch = {"metadata": {"resourceVersion": rv}, "spec": {"reason": body["spec"]["reason"]}}
                try:
                    updated = await asyncio.to_thread(
                        self.api.patch_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, name, patch)
                    self.writes += 1
                    state.spec_dirty = False
                    body["metadata"]["resourceVersion"] = rv = updated["metadata"]["resourceVersion"]
                except ApiException as exc:
                    if exc.status == 409:
                        await self._reread(name, ns)
                        continue
                    if exc.status == 404:
                        self.versions.pop(name, None)
                        continue
                    raise
            try:
                result = await asyncio.to_thread(
                    self.api.replace_namespaced_custom_object_status, GROUP, VERSION, ns, PLURAL, name, body)
                self.writes += 1
                self.versions[name] = result["metadata"]["resourceVersion"]
                return
            except ApiException as exc:
                if exc.status == 409:
                    await self._reread(name, ns)
                elif exc.status == 404:
                    self.versions.pop(name, None)
                    log.info("Finding %s/%s was deleted; creating it again", ns, name)
                else:
                    raise
        raise RuntimeError(f"gave up after {MAX_ATTEMPTS} conflicting attempts")

    async def _reread(self, name: str, namespace: str) -> str | None:
        """GET the stored Finding and merge it; its resourceVersion, or None if it is gone."""
        try:
            stored = await asyncio.to_thread(
                self.api.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                self.versions.pop(name, None)
                return None
            raise
        self.detector.merge(stored)
        rv = stored["metadata"]["resourceVersion"]
        self.versions[name] = rv
        return rv


def _brief(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"[:200]
