"""The Witness objects (``kubectl get witnesses``): whether pullwatch can see, per witness.

One cluster-scoped object per witness (``events``, ``pods``, ``audit``), written by the active
replica through the status subresource, and only when what it says changes: a few writes an
hour in a steady cluster. Each witness is asked for a ``Report`` (state, last observation,
message); the board turns the streams' own facts into one:

* ``Blind``: the API server refuses the list or watch (403), or the witness says so (the audit
  policy drops Event creations);
* ``Silent``: connected, but nothing arrived for ``SILENT_AFTER`` (a quiet cluster, or a source
  that stopped sending);
* ``Receiving``; ``Disabled``: turned off by a flag.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from ..core.body import stamp
from .api import MERGE_PATCH, Api, ApiError
from .quietlog import Quiet

log = logging.getLogger("pullwatch.witnesses")

PATH = "/apis/pullwatch.dev/v1alpha1/witnesses"
SILENT_AFTER = 900.0  # 15 minutes: a cluster of any size pulls or changes a pod more often
MAX_MESSAGE = 1024  # the CRD's maxLength


class Report(NamedTuple):
    state: str  # Receiving, Silent, Blind or Disabled
    last_observation: float | None  # wall clock
    message: str


def stream_report(
    streams: Iterable[Any], what: str, now: float, silent_after: float = SILENT_AFTER
) -> Report:
    """The Report of a witness made of list + watch streams (``stream.ListWatch``).

    >>> class S:
    ...     received_at, refused = 100.0, None
    >>> stream_report([S()], "image Events", now=200.0).state
    'Receiving'
    >>> stream_report([S()], "image Events", now=2000.0)
    Report(state='Silent', last_observation=100.0, message='no image Events for 31 minutes')
    >>> S.refused = "list events"
    >>> stream_report([S()], "image Events", now=200.0).message
    'the API server refuses: list events (check pullwatch RBAC)'
    """
    streams = list(streams)
    if not streams:
        return Report("Disabled", None, "turned off by a flag")
    seen = [s.received_at for s in streams if s.received_at is not None]
    last = max(seen) if seen else None
    refused = sorted({s.refused for s in streams if s.refused})
    if refused:
        return Report(
            "Blind", last, f"the API server refuses: {', '.join(refused)} (check pullwatch RBAC)"
        )
    if last is None or now - last > silent_after:
        since = "since start-up" if last is None else f"for {int((now - last) // 60)} minutes"
        return Report("Silent", last, f"no {what} {since}")
    return Report("Receiving", last, f"{what} arrive")


class WitnessBoard:
    def __init__(
        self,
        api: Api,
        witnesses: dict[str, Callable[[], Report]],
        *,
        interval: float = 15.0,
        quiet: Quiet | None = None,
    ):
        self.api, self.witnesses, self.interval = api, witnesses, interval
        self.quiet = quiet or Quiet(log)
        self.written: dict[str, tuple[str, str | None, str]] = {}

    async def run(self) -> None:
        while True:
            await self.publish()
            await asyncio.sleep(self.interval)

    async def publish(self) -> None:
        """Write each Witness whose state, message or (at most every minute) last observation
        changed."""
        for name, report_of in self.witnesses.items():
            report = report_of()
            minute = report.last_observation // 60 * 60 if report.last_observation else None
            last = stamp(minute) if minute is not None else None
            wanted = (report.state, last, report.message[:MAX_MESSAGE])
            if self.written.get(name) == wanted:
                continue
            try:
                await self._write(name, wanted)
            except ApiError as exc:
                self.quiet.warning(
                    f"witness {exc.status}", "cannot write Witness %s: %s; retrying", name, exc
                )
                continue
            self.quiet.recovered_all(("witness ",), "writing Witness objects works again")
            if self.written.get(name, ("",))[0] != report.state:
                log.info("witness %s: %s (%s)", name, report.state, report.message)
            self.written[name] = wanted

    async def _write(self, name: str, wanted: tuple[str, str | None, str]) -> None:
        state, last, message = wanted
        status: dict[str, Any] = {"state": state, "message": message}
        if last is not None:
            status["lastObservation"] = last
        try:
            await self.api.request(
                "PATCH", f"{PATH}/{name}/status", body={"status": status}, content_type=MERGE_PATCH
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            body = {"apiVersion": "pullwatch.dev/v1alpha1", "kind": "Witness"}
            await self.api.request("POST", PATH, body={**body, "metadata": {"name": name}})
            await self.api.request(
                "PATCH", f"{PATH}/{name}/status", body={"status": status}, content_type=MERGE_PATCH
            )
