"""One Finding's requests to the API server: create, status update, restore, re-read.

* A new Finding is created (POST) and its status written through the status subresource (PUT
  with ``resourceVersion``). A 409 means someone else wrote it (an earlier run, another replica, a
  user): re-read, max-merge (never counts a pull twice), try again. A 404 on the status write means
  a user deleted it: it is created again with every pull pullwatch knows of (and the labels people
  had put on it, when custody saw the delete).
* pullwatch's labels (rule, severity, overflow) are evidence as much as the spec (selectors and
  alerts read them): a restore puts both back, over the version it read, and leaves the labels
  people set alone.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import orjson

from .. import GROUP, VERSION
from ..core.detector import Detector
from ..core.findings import LABEL_OVERFLOW, LABEL_RULE, LABEL_SEVERITY
from ..core.names import segment
from ..core.state import FindingState
from . import metrics
from .api import JSON_PATCH, Api, ApiError

PLURAL = "findings"
MAX_CONFLICTS = 5
OWNED_LABELS = (LABEL_RULE, LABEL_SEVERITY, LABEL_OVERFLOW)  # pullwatch's: evidence, restored
log = logging.getLogger("pullwatch.writer")


def path_of(namespace: str, name: str | None = None, status: bool = False) -> str:
    """A Finding's API path, each name a quoted segment.

    >>> path_of("ns", "a/b", status=True)
    '/apis/pullwatch.dev/v1alpha1/namespaces/ns/findings/a%2Fb/status'
    """
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{segment(namespace)}/{PLURAL}"
    return base if name is None else f"{base}/{segment(name)}" + ("/status" if status else "")


def owned_labels(labels: Any) -> dict[str, str]:
    """pullwatch's own labels among ``labels``."""
    if not isinstance(labels, dict):
        return {}
    return {k: v for k, v in labels.items() if k in OWNED_LABELS}


class FindingApi:
    def __init__(self, api: Api, detector: Detector):
        self.api, self.detector = api, detector
        self.versions: dict[str, str] = {}  # Findings known to exist -> last resourceVersion seen
        self.writes: Counter[tuple[str, str]] = Counter()  # (verb, outcome)
        self._carried: dict[str, dict[str, str]] = {}  # people's labels for a re-created Finding
        # Findings -> a hash of the spec stored as far as pullwatch knows (it wrote or read it):
        # a spec pullwatch changed itself (who did it, who wrote the Event: learned after the
        # Finding was made) is written by the next write, and custody tells such a stale spec
        # from one someone edited.
        self.specs: dict[str, int] = {}

    def stored_spec_is(self, name: str, spec: Any) -> bool:
        """Is ``spec`` the one pullwatch last wrote (or read) for ``name``?"""
        return self.specs.get(name) == spec_key(spec)

    def carry_labels(self, name: str, labels: dict[str, Any]) -> None:
        """A Finding someone deleted: when it is created again, it gets back the labels people
        had put on it (a ``pullwatch.dev/keep``, triage) besides pullwatch's own."""
        people = {k: v for k, v in labels.items() if k not in OWNED_LABELS and isinstance(v, str)}
        if people:
            self._carried[name] = people

    def _wrote(self, verb: str, outcome: str) -> None:
        self.writes[(verb, outcome)] += 1
        metrics.WRITES.labels(verb, outcome).inc()

    async def write(self, name: str, restore_spec: bool) -> None:
        """Write the Finding as pullwatch knows it (raises ApiError when it cannot)."""
        for _ in range(MAX_CONFLICTS):
            state = self.detector.states.get(name)
            if state is None:
                return
            body = state.body()  # a snapshot, taken on the event loop
            rv = self.versions.get(name)
            if rv is None:
                created = await self._create(state, body)
                if created is None:
                    continue
                rv, fresh = created
                body = state.body()
                restore_spec = restore_spec and not fresh  # a fresh one has pullwatch's spec
            # pullwatch's own spec changed since it was stored: written over the version read
            restore_spec = restore_spec or not self.stored_spec_is(name, body["spec"])
            if restore_spec:
                restored = await self._restore(state, body)
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

    async def _create(self, state: FindingState, body: dict[str, Any]) -> tuple[str, bool] | None:
        """POST it; (resourceVersion, whether pullwatch created it), or None if it is gone."""
        new = {k: v for k, v in body.items() if k != "status"}
        carried = self._carried.get(state.name)
        if carried:
            new["metadata"] = {
                **new["metadata"],
                "labels": {**carried, **new["metadata"]["labels"]},
            }
        try:
            created = await self.api.request("POST", path_of(state.namespace), body=new)
        except ApiError as exc:
            self._wrote("create", str(exc.status))
            if exc.status != 409:
                raise
            stored = await self._reread(state)  # it exists already: take it in, write over it
            return None if stored is None else (stored["metadata"]["resourceVersion"], False)
        self._wrote("create", "ok")
        self._carried.pop(state.name, None)
        self.specs[state.name] = spec_key(new["spec"])
        rv = created["metadata"]["resourceVersion"]
        self.versions[state.name] = rv
        return rv, True

    async def _restore(self, state: FindingState, body: dict[str, Any]) -> str | None:
        """Put pullwatch's spec and labels back (someone edited them), over the version just
        read; the labels people set for triage are left alone. The new resourceVersion, or None
        when the object moved on meanwhile or is gone (the caller tries again)."""
        stored = await self._reread(state)
        if stored is None:
            return None
        labels = _meta(stored).get("labels")
        people = {
            k: v
            for k, v in (labels if isinstance(labels, dict) else {}).items()
            if k not in OWNED_LABELS
        }
        patch = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": _meta(stored).get("resourceVersion"),
            },
            {"op": "replace", "path": "/spec", "value": body["spec"]},
            {
                "op": "add",
                "path": "/metadata/labels",
                "value": {**people, **body["metadata"]["labels"]},
            },
        ]
        try:
            result = await self.api.request(
                "PATCH", path_of(state.namespace, state.name), body=patch, content_type=JSON_PATCH
            )
        except ApiError as exc:
            self._wrote("patch", str(exc.status))
            if exc.status in (409, 422):  # it moved on since it was read (the test op failed)
                return None
            if exc.status == 404:
                self.versions.pop(state.name, None)
                return None
            raise
        self._wrote("patch", "ok")
        self.specs[state.name] = spec_key(body["spec"])
        rv = result["metadata"]["resourceVersion"]
        self.versions[state.name] = rv
        return rv

    async def _reread(self, state: FindingState) -> dict[str, Any] | None:
        """GET the stored Finding and merge it; the stored object, or None if it is gone."""
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
        self.versions[state.name] = stored["metadata"]["resourceVersion"]
        self.specs[state.name] = spec_key(stored.get("spec"))
        return stored


def spec_key(spec: Any) -> int:
    """A spec's identity, as compared (key order aside; a spec is small and JSON-clean)."""
    try:
        return hash(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS))
    except TypeError:
        return hash(repr(spec))


def _meta(obj: Any) -> dict[str, Any]:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return meta if isinstance(meta, dict) else {}
