"""The Witness objects' status: ``kubectl get witnesses`` says whether pullwatch can see.

Each witness that reports here is one cluster-scoped ``Witness`` named after it, created once
(a 409 means it exists) and its status patched through the status subresource when what it says
changes, and at least every ``refresh`` seconds (so ``lastObservation`` stays current without a
write per observation). Only the active replica runs this. Every call has a deadline; a write
that fails is tried again at the next pass and its error logged once per interval.

A source is a callable answering (state, message, last observation as epoch seconds or None).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ... import GROUP, VERSION
from ..api import Api, ApiError
from ..quietlog import Quiet

log = logging.getLogger("pullwatch.witnesses")
PLURAL = "witnesses"
MERGE = "application/merge-patch+json"

Source = Callable[[], tuple[str, str, float | None]]


def stamp(when: float | None) -> str | None:
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


class WitnessStatus:
    def __init__(
        self,
        api: Api,
        sources: dict[str, Source],
        *,
        interval: float = 5.0,
        refresh: float = 60.0,
        quiet: Quiet | None = None,
    ):
        self.api, self.sources, self.interval, self.refresh = api, sources, interval, refresh
        self.quiet = quiet or Quiet(log)
        self._created: set[str] = set()
        self._written: dict[str, tuple[tuple[str, str], float]] = {}  # what, when (monotonic)

    async def run(self) -> None:
        while True:
            for name in self.sources:
                await self.write(name)
            await asyncio.sleep(self.interval)

    async def write(self, name: str) -> bool:
        """Bring one Witness up to date; whether a status was written."""
        state, message, last = self.sources[name]()
        said = (state, message)
        held = self._written.get(name)
        now = time.monotonic()
        if held is not None and held[0] == said and now - held[1] < self.refresh:
            return False
        path = f"/apis/{GROUP}/{VERSION}/{PLURAL}/{name}"
        try:
            if name not in self._created:
                body = {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "Witness",
                    "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "pullwatch"}},
                }
                try:
                    await self.api.request(
                        "POST", f"/apis/{GROUP}/{VERSION}/{PLURAL}", body=body, timeout=10
                    )
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                self._created.add(name)
            status = {"state": state, "message": message[:1024]}
            if last is not None:
                status["lastObservation"] = stamp(last)
            await self.api.request(
                "PATCH", f"{path}/status", body={"status": status}, content_type=MERGE, timeout=10
            )
        except ApiError as exc:
            self.quiet.warning(
                f"witness {name}", "cannot write the status of Witness %s: %s", name, exc
            )
            return False
        self.quiet.recovered(f"witness {name}", "the status of Witness %s is written again", name)
        self._written[name] = (said, now)
        return True
