"""The allowlist in force, from the AllowedImages objects: incremental, off the event loop, bounded.

* Each object is compiled once per ``metadata.generation`` (its spec; status writes do not
  change it), in a worker thread; the Allowlist is then assembled from the compiled objects,
  which is cheap. So a change costs the compile of that one object, not of all of them (the old
  rebuild compiled everything on every change: 600 objects took 91 s to settle), and nothing
  heavy runs on the event loop (whose stall failed the liveness probe).
* Changes come from kopf (``apply``: every ADDED/MODIFIED/DELETED of the AllowedImages watch); when
  an active replica starts, ``load`` lists them all first, so that no pull is judged against a
  half-loaded allowlist. A change is in force within ``DEBOUNCE`` seconds plus its compile time.
* Each object's validity is written to its ``status``, bounded whatever its size (counts, the
  first 20 problems and normalized patterns), with retries that back off and are said once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

from .. import GROUP, VERSION
from ..core.allowlist import Allowlist, Policy, policy_from_object
from ..core.detector import Detector
from ..core.findings import cut
from . import metrics
from .api import MERGE_PATCH, Api, ApiError
from .quietlog import Quiet

PLURAL = "allowedimages"
DEBOUNCE = 0.1
SAMPLE = 20
log = logging.getLogger("pullwatch.allowlist")


def desired_status(policy: Policy, generation: Any, total_patterns: int) -> dict[str, Any]:
    """The status of one AllowedImages: bounded, whatever the number of its patterns."""
    problems = list(policy.problems)
    if not policy.usable:
        ready = ("False", "Invalid", "; ".join(problems[:3]))
    elif problems:
        ready = ("False", "InvalidPatterns", f"{len(problems)} problem(s); the valid patterns still apply: "
                 + "; ".join(problems[:3]))
    else:
        ready = ("True", "Valid", f"{len(policy.patterns)} pattern(s) in use")
    return {
        "observedGeneration": generation,
        "patterns": len(policy.patterns),
        "patternsWritten": total_patterns,
        "normalizedPatterns": [cut(p.normalized, 256) for p in policy.patterns[:SAMPLE]],
        "problems": [cut(p, 300) for p in problems[:SAMPLE]],
        "problemCount": len(problems),
        "conditions": [{"type": "Ready", "status": ready[0], "reason": ready[1],
                        "message": cut(ready[2], 1000), "observedGeneration": generation}],
    }


def same_status(current: Any, wanted: dict[str, Any]) -> bool:
    if not isinstance(current, dict):
        return False
    strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in current.get("conditions") or []
             if isinstance(c, dict)]
    return strip == wanted["conditions"] and all(current.get(k) == v for k, v in wanted.items() if k != "conditions")


class Policies:
    def __init__(self, api: Api, detector: Detector, quiet: Quiet | None = None):
        self.api, self.detector = api, detector
        self.quiet = quiet or Quiet(log)
        self.objects: dict[str, dict[str, Any]] = {}            # uid -> latest body seen
        self.compiled: dict[tuple[str, Any], Policy] = {}        # (uid, generation) -> compiled
        self.ready = asyncio.Event()
        self.rebuilds = 0
        self._changed = asyncio.Event()
        self._statuses: dict[str, dict[str, Any]] = {}           # uid -> body whose status to check

    # -- changes -----------------------------------------------------------------------------------
    def apply(self, kind: str, body: dict[str, Any]) -> None:
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        uid = meta.get("uid")
        if not isinstance(uid, str):
            return
        if kind == "DELETED":
            self.objects.pop(uid, None)
            self._statuses.pop(uid, None)
        else:
            known = self.objects.get(uid)
            if known is not None and _rv(known) > _rv(body):
                return  # an older version than one already in force (kopf and the list can race)
            self.objects[uid] = body
            self._statuses[uid] = body
        self._changed.set()

    async def load(self) -> None:
        """List every AllowedImages (retrying within seconds) and put the allowlist in force."""
        delay = 0.5
        while True:
            try:
                async for page in self.api.pages(f"/apis/{GROUP}/{VERSION}/{PLURAL}"):
                    for item in page.get("items") or []:
                        self.apply("ADDED", item)
                break
            except ApiError as exc:
                self.quiet.warning(f"forbidden {exc.what}" if exc.status == 403 else "allowlist list failing",
                                   "listing AllowedImages failed (%s); retrying (no pull is judged until it works)", exc)
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
        self.quiet.recovered_all(("allowlist list failing", "forbidden list allowedimages"), "listing AllowedImages works again")
        await self.rebuild()

    # -- putting them in force ------------------------------------------------------------------------
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
                self._schedule_retry(delay)

    def _schedule_retry(self, delay: float) -> None:
        asyncio.get_running_loop().call_later(max(delay, DEBOUNCE), self._changed.set)

    async def rebuild(self) -> None:
        objects = list(self.objects.items())
        missing = [(uid, body) for uid, body in objects if (uid, _generation(body)) not in self.compiled]
        if missing:
            fresh = await asyncio.to_thread(lambda: [((uid, _generation(b)), policy_from_object(b)) for uid, b in missing])
            self.compiled.update(fresh)
        keys = {(uid, _generation(body)) for uid, body in objects}
        for stale in [k for k in self.compiled if k not in keys]:
            del self.compiled[stale]
        policies = [self.compiled[k] for k in sorted(keys)]
        self.detector.allowlist = Allowlist(policies)
        self.rebuilds += 1
        metrics.ALLOWLIST_OBJECTS.set(len(policies))
        metrics.REFUSED_PATTERNS.set(sum(len(p.problems) for p in policies))
        self.ready.set()

    async def _write_statuses(self, delay: float) -> float:
        """Write the statuses that differ from what is wanted; the delay before a retry."""
        failed = False
        for uid, body in list(self._statuses.items()):
            policy = self.compiled.get((uid, _generation(body)))
            if policy is None:
                continue
            meta = body["metadata"]
            spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
            images = spec.get("images")
            wanted = desired_status(policy, meta.get("generation"), len(images) if isinstance(images, list) else 0)
            if same_status(body.get("status"), wanted):
                self._statuses.pop(uid, None)
                continue
            wanted["conditions"][0]["lastTransitionTime"] = \
                datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            try:
                await self.api.request("PATCH", f"/apis/{GROUP}/{VERSION}/{PLURAL}/{meta['name']}/status",
                                       body={"status": wanted}, content_type=MERGE_PATCH)
            except ApiError as exc:
                failed = True
                if exc.status == 404:
                    self._statuses.pop(uid, None)
                    continue
                self.quiet.warning(f"forbidden {exc.what}" if exc.status == 403 else "allowlist status failing",
                                   "cannot write the status of AllowedImages %s (%s); will retry", meta["name"], exc)
                continue
            self._statuses.pop(uid, None)
            if not policy.usable or policy.problems:
                self.quiet.warning(f"policy {meta['name']} {meta.get('generation')}", "AllowedImages %s: %s",
                                   meta["name"], "; ".join(policy.problems[:5]))
        if not failed:
            self.quiet.recovered_all(("allowlist status failing", "forbidden patch allowedimages"),
                                     "writing AllowedImages statuses works again")
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
