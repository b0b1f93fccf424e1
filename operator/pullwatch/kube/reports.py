"""Keeping one OpenReports Report per namespace in step with its Findings (``--openreports``).

A namespace whose Findings change is marked; its Report is rewritten at most every
``interval`` seconds (coalesced), from the detector's state (core/reports.py builds it). A
namespace with no Finding left loses its Report. Reports pullwatch wrote carry the label
``app.kubernetes.io/managed-by=pullwatch``; at start those of namespaces without Findings are
removed. Writes have deadlines, back off on failure, and say each problem once; when the Report
CRD is not installed, that is said once and tried again later.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..core.detector import Detector
from ..core.names import is_label, segment
from ..core.reports import API_VERSION, LABEL_MANAGED_BY, NAME, SOURCE, report_for
from . import metrics
from .api import Api, ApiError
from .paging import pages
from .quietlog import Quiet
from .waiting import wait_event

log = logging.getLogger("pullwatch.reports")


def _path(namespace: str | None = None, name: str | None = None) -> str:
    if namespace is None:
        return f"/apis/{API_VERSION}/reports"
    base = f"/apis/{API_VERSION}/namespaces/{segment(namespace)}/reports"
    return base if name is None else f"{base}/{segment(name)}"


class ReportWriter:
    def __init__(
        self,
        api: Api,
        detector: Detector,
        *,
        interval: float = 5.0,
        max_results: int = 100,
        quiet: Quiet | None = None,
    ):
        self.api, self.detector = api, detector
        self.interval, self.max_results = interval, max_results
        self.quiet = quiet or Quiet(log)
        self.versions: dict[str, str] = {}  # namespace -> resourceVersion of its Report
        self.dirty: set[str] = set()
        self.writes = 0
        self._wake = asyncio.Event()

    def mark(self, namespace: str) -> None:
        if is_label(namespace):  # a namespace the API server could have made; nothing else
            self.dirty.add(namespace)
            self._wake.set()

    async def run(self) -> None:
        await self._adopt()
        delay = self.interval
        while True:
            await wait_event(self._wake, delay)
            self._wake.clear()
            await asyncio.sleep(self.interval)  # coalesce what comes in the meantime
            failed = False
            for namespace in sorted(self.dirty):
                self.dirty.discard(namespace)
                try:
                    await self._write(namespace)
                except ApiError as exc:
                    failed = True
                    self.dirty.add(namespace)
                    self._complain(exc)
            delay = min(300.0, delay * 2) if failed else self.interval
            if not failed:
                self.quiet.recovered_all(("reports ",), "writing OpenReports works again")

    async def _adopt(self) -> None:
        """The Reports pullwatch wrote before: know their versions; remove those with no
        Findings."""
        while True:
            try:
                async for page in pages(
                    self.api, _path(), params={"labelSelector": f"{LABEL_MANAGED_BY}={SOURCE}"}
                ):
                    if page.skipped is not None:  # none of ours is: someone else's, not adopted
                        metrics.OVERSIZE.labels("reports").inc()
                    for item in page.items:
                        meta = item.get("metadata") or {}
                        if meta.get("name") == NAME and is_label(meta.get("namespace")):
                            self.versions[meta["namespace"]] = meta.get("resourceVersion")
                            self.dirty.add(meta["namespace"])
                break
            except ApiError as exc:
                self._complain(exc)
                await asyncio.sleep(30)
        for namespace in list(self.detector.by_namespace):
            self.mark(namespace)
        self._wake.set()

    async def _write(self, namespace: str) -> None:
        wanted = report_for(namespace, self.detector.in_namespace(namespace), self.max_results)
        rv = self.versions.get(namespace)
        if wanted is None:
            if rv is not None:
                try:
                    await self.api.request("DELETE", _path(namespace, NAME))
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                self.versions.pop(namespace, None)
                self.writes += 1
            return
        for _ in range(3):
            try:
                if rv is None:
                    stored = await self.api.request("POST", _path(namespace), body=wanted)
                else:
                    wanted["metadata"]["resourceVersion"] = rv
                    stored = await self.api.request("PUT", _path(namespace, NAME), body=wanted)
            except ApiError as exc:
                if (
                    exc.status == 409
                ):  # it exists (create), or it moved on (update): read its version
                    rv = await self._version(namespace)
                    continue
                if exc.status == 404 and rv is not None:
                    rv = None  # deleted by someone: create it again
                    continue
                raise
            self.writes += 1
            self.versions[namespace] = stored["metadata"]["resourceVersion"]
            return
        raise ApiError(
            409, "Conflict", "gave up after 3 conflicting attempts", "PUT", _path(namespace, NAME)
        )

    async def _version(self, namespace: str) -> str | None:
        try:
            stored: dict[str, Any] = await self.api.request("GET", _path(namespace, NAME))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return stored["metadata"]["resourceVersion"]

    def _complain(self, exc: ApiError) -> None:
        if exc.status == 404 and "reports" in exc.path and exc.reason in ("NotFound", ""):
            self.quiet.warning(
                "reports crd",
                "OpenReports Reports are not installed in this cluster (%s): install "
                "their CRD (manifests/components/openreports); retrying",
                exc,
            )
        elif exc.status == 403:
            self.quiet.warning(
                f"reports forbidden {exc.what}", "forbidden: %s (OpenReports); retrying", exc.what
            )
        else:
            self.quiet.warning(
                f"reports {exc.status}", "writing an OpenReports Report failed (%s); retrying", exc
            )
