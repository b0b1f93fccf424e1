"""The Findings in the cluster: adopted at start-up, kept as pullwatch wrote them, kept in bounds.

* Adoption: the Findings watch's first list (page by page: memory stays flat however many there
  are) merges each Finding into the detector, so that no pull is counted twice after a restart.
  A failed list is retried within seconds, as any stream is (a ``500`` right after an API server
  restart must not blind the operator for a minute, as a failed kopf start-up handler did).
* A Finding is evidence, so it must be tamper-evident. pullwatch owns its ``spec`` (rebuilt from
  the rule and the first pull, kept in ``status.origin``) and its counts: whoever changes either -
  at start-up it is compared, and while running the Findings are watched - has it put back, and
  is named at WARNING (the ``managedFields`` manager of the change). Labels and annotations are
  for people (triage) and are left alone.
* Retention: a Finding not seen for ``retention`` is deleted, unless a person labelled it
  ``pullwatch.dev/keep=true``. The delete is conditional on the version pullwatch last saw, so a
  Finding that has just been counted again is not deleted.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..core.detector import Detector
from ..core.findings import LABEL_KEEP, build_spec, minute_of
from ..core.state import FindingState
from .api import FIELD_MANAGER, Api, ApiError
from .quietlog import Quiet
from .writer import FindingWriter, path_of

log = logging.getLogger("pullwatch.store")


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def editors(obj: dict[str, Any], part: str | None = None) -> list[str]:
    """Who changed the object since pullwatch last wrote it: the managers of managedFields entries
    no older than pullwatch's own latest (times have one-second resolution); with ``part``
    (``spec``, ``status``), only those whose fields are in it."""
    entries = [e for e in _meta(obj).get("managedFields") or [] if isinstance(e, dict)]
    ours = max(
        (str(e.get("time") or "") for e in entries if e.get("manager") == FIELD_MANAGER), default=""
    )
    return sorted(
        {
            str(e.get("manager") or "unknown")
            for e in entries
            if e.get("manager") != FIELD_MANAGER
            and str(e.get("time") or "") >= ours
            and (part is None or f"f:{part}" in (e.get("fieldsV1") or {}))
        }
    )


class Custody:
    def __init__(
        self,
        api: Api,
        detector: Detector,
        writer: FindingWriter,
        *,
        retention_seconds: float,
        quiet: Quiet | None = None,
    ):
        self.api, self.detector, self.writer = api, detector, writer
        self.retention = retention_seconds
        self.quiet = quiet or Quiet(log)
        self.keep: set[str] = set()
        self.deleting: set[str] = set()
        self.restored = 0  # edits undone (for the metrics and tests)
        self.deleted = 0  # Findings removed by retention

    # -- adoption
    # ------------------------------------------------------------------------------------
    def _take(self, obj: dict[str, Any], at_start: bool) -> FindingState | None:
        """Adopt one stored Finding; put back what was changed behind pullwatch's back."""
        meta = _meta(obj)
        name = str(meta.get("name"))
        try:
            state = self.detector.adopt(obj)
        except ValueError as exc:
            self.quiet.warning(
                f"foreign {name}",
                "Finding %s/%s is not one pullwatch wrote (%s); left alone",
                meta.get("namespace"),
                name,
                exc,
            )
            return None
        self.writer.versions[name] = str(meta.get("resourceVersion"))
        self._note_labels(name, meta)
        self._check(state, obj, at_start)
        if name not in self.writer.dirty:
            state.cool()  # at rest until its next pull: a fraction of the memory (state.py)
        return state

    def _note_labels(self, name: str, meta: dict[str, Any]) -> None:
        labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
        if labels.get(LABEL_KEEP) == "true":
            self.keep.add(name)
        else:
            self.keep.discard(name)

    def _check(self, state: FindingState, stored: dict[str, Any], at_start: bool) -> None:
        if stored.get("spec") != build_spec(state.identity, state.origin):
            who = ", ".join(editors(stored, "spec")) or "someone"
            self.restored += 1
            log.warning(
                "Finding %s/%s: its spec was changed by %s%s; putting pullwatch's back",
                state.namespace,
                state.name,
                who,
                " while pullwatch was not running" if at_start else "",
            )
            self.writer.mark(state.name, restore_spec=True)
        count = (stored.get("status") or {}).get("count")
        if count != state.count and (at_start or editors(stored)):
            who = ", ".join(editors(stored, "status")) or "someone"
            self.restored += 1
            log.warning(
                "Finding %s/%s: its count was changed to %s by %s; putting back %d",
                state.namespace,
                state.name,
                count,
                who,
                state.count,
            )
            self.writer.mark(state.name)

    # -- while running: the Findings watch
    # ---------------------------------------------------------------
    def on_event(self, kind: str, obj: dict[str, Any], at_start: bool = False) -> None:
        """One Finding from the watch; ``at_start``: from its first list (the adoption)."""
        meta = _meta(obj)
        name = str(meta.get("name"))
        if kind == "DELETED":
            self.writer.versions.pop(name, None)
            self.keep.discard(name)
            if name in self.deleting:
                self.deleting.discard(name)
            elif name in self.detector.states:
                log.warning(
                    "Finding %s/%s was deleted (not by pullwatch's retention); it is written again, with "
                    "every pull pullwatch knows of, at its next pull",
                    meta.get("namespace"),
                    name,
                )
            return
        self._note_labels(name, meta)
        state = self.detector.states.get(name)
        if state is None:
            self._take(
                obj, at_start
            )  # adoption; or one not known yet: another replica's, or missed
            return
        if str(meta.get("resourceVersion")) == self.writer.versions.get(name):
            return  # the echo of pullwatch's own latest write
        count = (obj.get("status") or {}).get("count")
        if isinstance(count, int) and count > state.count:
            self.detector.adopt(
                obj
            )  # counted more elsewhere (another pullwatch): merge, never double
        self._check(state, obj, at_start)
        if name not in self.writer.dirty and name not in self.writer.in_flight:
            # the version pullwatch last saw: retention's conditional delete must not 409 for
            # ever because a person labelled it (a status PUT ignores labels: nothing is lost)
            self.writer.versions[name] = str(meta.get("resourceVersion"))

    # -- retention
    # ---------------------------------------------------------------------------------------
    async def sweep(self, now: float | None = None) -> int:
        """Delete the Findings not seen for ``retention`` (unless kept); how many were deleted."""
        cutoff = int((now if now is not None else time.time()) - self.retention) // 60
        deleted = 0
        for name, state in list(self.detector.states.items()):
            if name in self.keep or name in self.writer.dirty or name in self.writer.in_flight:
                continue
            last = minute_of(state.last_seen)
            if last is None or last >= cutoff:
                continue
            rv = self.writer.versions.get(name)
            body = {"apiVersion": "v1", "kind": "DeleteOptions"}
            if rv:
                body["preconditions"] = {"resourceVersion": rv}
            self.deleting.add(name)
            try:
                await self.api.request("DELETE", path_of(state.namespace, name), body=body)
            except ApiError as exc:
                if exc.status == 409:
                    self.deleting.discard(name)
                    continue  # changed since pullwatch saw it: next sweep
                if exc.status != 404:
                    self.deleting.discard(name)
                    self.quiet.warning(
                        f"forbidden {exc.what}" if exc.status == 403 else "retention failing",
                        "retention: cannot delete Finding %s/%s (%s)",
                        state.namespace,
                        name,
                        exc,
                    )
                    continue
            self.detector.forget(name)
            self.writer.versions.pop(name, None)
            self.writer.changed(state.namespace)
            self.deleted += 1
            deleted += 1
            log.info(
                "retention: deleted Finding %s/%s, last seen %s",
                state.namespace,
                name,
                state.last_seen,
            )
        return deleted
