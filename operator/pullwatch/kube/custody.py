"""The Findings in the cluster: adopted at start-up, kept as pullwatch wrote them, kept in bounds.

* Adoption: the Findings watch's first list (streamed: memory stays flat however many there
  are) merges each Finding into the detector, so that no pull is counted twice after a restart.
  A failed list is retried within seconds, as any stream is (a ``500`` right after an API server
  restart must not blind the operator for a minute, as a failed kopf start-up handler did).
* A Finding is evidence, so it must be tamper-evident. pullwatch owns its ``spec`` (rebuilt from
  the rule and the first pull, kept in ``status.origin``), its counts and ledger, and its own
  labels (``pullwatch.dev/rule``, ``/severity``, ``/overflow``: selectors and alerts read them).
  Whoever changes any of them - at start-up it is compared, and while running the Findings are
  watched - has it put back, and is named at WARNING (the ``managedFields`` manager of the
  change). A status someone made unreadable (a corrupt ``status.ledger``) is tamper like any
  other edit: said, and pullwatch's state written back; never an exception in the watch (which
  would stop the Findings watch on that object for good). Other labels and annotations are for
  people (triage) and are left alone.
* A Finding someone deletes is written again at once, from memory, with every pull pullwatch
  knows of and the labels people had put on it. The Findings watch cannot say who deleted it (a
  DELETED carries the object as it was, not the request): ``on_deleted`` callbacks are told, so
  that a witness that can (the audit log) names them.
* Retention: a Finding not seen for ``retention`` is deleted, unless a person labelled it
  ``pullwatch.dev/keep=true``. The delete is conditional on the version pullwatch last saw, so a
  Finding that has just been counted again is not deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..core.body import labels_of
from ..core.detector import Detector
from ..core.findings import LABEL_KEEP, build_spec, minute_of
from ..core.names import is_label, is_subdomain
from ..core.state import FindingState
from .api import FIELD_MANAGER, Api, ApiError
from .findingapi import spec_key
from .quietlog import Quiet
from .writer import FindingWriter, owned_labels, path_of

log = logging.getLogger("pullwatch.custody")
DeletedHook = Callable[[str, str, dict[str, Any]], None]  # (namespace, name, the object as it was)


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
        clock: Callable[[], float] = time.time,
    ):
        self.api, self.detector, self.writer = api, detector, writer
        self.retention = retention_seconds
        self.quiet = quiet or Quiet(log)
        self.clock = clock
        self.keep: set[str] = set()
        self.deleting: set[str] = set()
        self.on_deleted: list[DeletedHook] = []  # told of every delete pullwatch did not make
        self.restored = 0  # edits undone (for the metrics and tests)
        self.recreated = 0  # Findings deleted by someone and written again
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
            state = self._take_unreadable(obj, exc, at_start)
            if state is None:
                return None
        self.writer.versions[name] = str(meta.get("resourceVersion"))
        self._note_labels(name, meta)
        self._check(state, obj, at_start)
        # what is stored now (after the check: an edited spec is one, and is put back)
        self.writer.findings.specs[name] = spec_key(obj.get("spec"))
        if name not in self.writer.dirty:
            state.cool()  # at rest until its next pull: a fraction of the memory (state.py)
        return state

    def _take_unreadable(
        self, obj: dict[str, Any], exc: ValueError, at_start: bool
    ) -> FindingState | None:
        """A Finding pullwatch cannot read. Its name and spec still say which it is: then only its
        status was damaged - tamper: it is adopted without it (counted again from the Events
        still in the cluster; what it showed cannot be verified) and written back. Otherwise it
        is not one pullwatch wrote, and is left alone."""
        meta = _meta(obj)
        status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        try:
            state = self.detector.adopt({**obj, "status": {"origin": status.get("origin")}})
        except ValueError:
            try:
                state = self.detector.adopt({**obj, "status": {}})
            except ValueError:
                self.quiet.warning(
                    f"foreign {meta.get('name')}",
                    "Finding %s/%s is not one pullwatch wrote (%s); left alone",
                    meta.get("namespace"),
                    meta.get("name"),
                    exc,
                )
                return None
        self.restored += 1
        log.warning(
            "Finding %s/%s: its status was made unreadable (%s) by %s%s; it showed %s pulls, which "
            "cannot be verified: counting again from the Events still in the cluster",
            state.namespace,
            state.name,
            exc,
            ", ".join(editors(obj, "status")) or "someone",
            " while pullwatch was not running" if at_start else "",
            status.get("count"),
        )
        self.writer.mark(state.name)
        return state

    def _note_labels(self, name: str, meta: dict[str, Any]) -> None:
        labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
        if labels.get(LABEL_KEEP) == "true":
            self.keep.add(name)
        else:
            self.keep.discard(name)

    def _check(self, state: FindingState, stored: dict[str, Any], at_start: bool) -> None:
        spec = build_spec(state.identity, state.evidence().origin)
        labels = labels_of(state.identity)
        stored_labels = owned_labels(_meta(stored).get("labels"))
        stale = stored.get("spec") != spec and self.writer.findings.stored_spec_is(
            state.name, stored.get("spec")
        )
        if stale and stored_labels == labels:
            self.writer.mark(state.name)  # pullwatch's own newer spec, on its way: no tampering
        elif stored.get("spec") != spec or stored_labels != labels:
            part = "spec" if stored.get("spec") != spec else "metadata"
            who = ", ".join(editors(stored, part)) or "someone"
            self.restored += 1
            log.warning(
                "Finding %s/%s: its %s was changed by %s%s; putting pullwatch's back",
                state.namespace,
                state.name,
                "spec" if part == "spec" else f"labels ({_diff(stored_labels, labels)})",
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
        name, namespace = meta.get("name"), meta.get("namespace")
        if not (is_subdomain(name) and is_label(namespace)):
            return  # not an object the API server stored: nothing of pullwatch's
        if kind == "DELETED":
            self._deleted(namespace, name, obj)
            return
        state = self.detector.states.get(name)
        if state is not None and state.namespace != namespace:
            # Names are unique in pullwatch's set (a collision takes a salted name): an object
            # of another namespace under this name is not the Finding pullwatch holds.
            self.quiet.warning(
                "name collision",
                "Finding %s/%s has the name of pullwatch's Finding %s/%s: left alone",
                namespace,
                name,
                state.namespace,
                name,
            )
            return
        self._note_labels(name, meta)
        if state is None:
            self._take(obj, at_start)  # adoption; or one not known yet: another replica's, missed
            return
        if str(meta.get("resourceVersion")) == self.writer.versions.get(name):
            return  # the echo of pullwatch's own latest write
        try:
            stored = FindingState.from_body(obj)
        except ValueError as exc:
            self.restored += 1
            log.warning(
                "Finding %s/%s: its status was made unreadable (%s) by %s; writing it back",
                namespace,
                name,
                exc,
                ", ".join(editors(obj, "status")) or "someone",
            )
            self.writer.mark(name)
            stored = None
        if stored is not None and stored.count > state.count:
            self.detector.adopt(obj)  # counted more elsewhere (another pullwatch): merge
        self._check(state, obj, at_start)
        if name not in self.writer.dirty and name not in self.writer.in_flight:
            # The version pullwatch last saw: retention's conditional delete must not 409 for
            # ever because a person labelled it (a status PUT ignores labels: nothing is lost).
            self.writer.versions[name] = str(meta.get("resourceVersion"))

    def _deleted(self, namespace: str, name: str, obj: dict[str, Any]) -> None:
        self.writer.versions.pop(name, None)
        self.keep.discard(name)
        if name in self.deleting:
            self.deleting.discard(name)  # pullwatch's own retention
            return
        state = self.detector.states.get(name)
        if state is None or not state.has_evidence or state.namespace != namespace:
            return
        self.recreated += 1
        log.warning(
            "Finding %s/%s was deleted, not by pullwatch (the watch cannot say by whom; the API "
            "server's audit log can); writing it again now with every pull pullwatch knows of",
            namespace,
            name,
        )
        labels = _meta(obj).get("labels")
        self.writer.carry_labels(name, labels if isinstance(labels, dict) else {})
        self.writer.mark(name)
        for hook in self.on_deleted:
            hook(namespace, name, obj)

    # -- retention
    # ---------------------------------------------------------------------------------------
    async def sweep(self, now: float | None = None) -> int:
        """Delete the Findings not seen for ``retention`` (unless kept); how many were deleted."""
        cutoff = int((now if now is not None else self.clock()) - self.retention) // 60
        deleted = 0
        for name, state in list(self.detector.states.items()):
            if name in self.keep or name in self.writer.dirty or name in self.writer.in_flight:
                continue
            # The operator's own clock: an Event's time is evidence, never trusted for deletion
            # (a far-future one would pin a Finding, a far-past one erase it). A Finding from
            # before lastObserved existed falls back to its lastSeen.
            last = int(state.last_observed) // 60 if state.last_observed else None
            if last is None:
                last = minute_of(state.last_seen)
            if last is None or last >= cutoff:
                continue
            if await self._delete(state):
                deleted += 1
        return deleted

    async def _delete(self, state: FindingState) -> bool:
        name = state.name
        rv = self.writer.versions.get(name)
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if rv:
            body["preconditions"] = {"resourceVersion": rv}
        self.deleting.add(name)
        try:
            await self.api.request("DELETE", path_of(state.namespace, name), body=body)
        except ApiError as exc:
            if exc.status != 404:
                self.deleting.discard(name)
                if exc.status != 409:  # 409: changed since pullwatch saw it: the next sweep
                    self.quiet.warning(
                        f"forbidden {exc.what}" if exc.status == 403 else "retention failing",
                        "retention: cannot delete Finding %s/%s (%s)",
                        state.namespace,
                        name,
                        exc,
                    )
                return False
        self.detector.forget(name)
        self.writer.versions.pop(name, None)
        self.writer.changed(state.namespace)
        self.deleted += 1
        log.info(
            "retention: deleted Finding %s/%s, last seen %s", state.namespace, name, state.last_seen
        )
        return True


def _diff(stored: dict[str, str], wanted: dict[str, str]) -> str:
    keys = sorted(set(stored) | set(wanted))
    return ", ".join(
        f"{k}={stored.get(k)!s} instead of {wanted.get(k)!s}"
        for k in keys
        if stored.get(k) != wanted.get(k)
    )
