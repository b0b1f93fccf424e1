"""The offline pipeline behind ``pullwatch scan``: inputs -> records -> pulls -> Findings.

Pure orchestration over the core; file and stdin handling is the only I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import yaml

from ..core.allowlist import Allowlist, Policy, objects_from_documents, policy_from_object
from ..core.audit import AuditDeduper, decode_audit_entry
from ..core.detector import Detector
from ..core.pulls import DecodeError, decode_event, event_head
from .records import InputError, ReadStats, iter_objects, open_input


@dataclass
class ScanResult:
    stats: ReadStats = field(default_factory=ReadStats)
    pulls: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)


class Scanner:
    def __init__(self, detector: Detector):
        self.detector = detector
        self.result = ScanResult()
        self._audit = AuditDeduper()

    def admit(self, kind: str, obj: Any) -> bool:
        """The cheap first look: is this a pull that some rule fires on?

        Most pulls are of allowed images; they are counted here and never fully decoded.
        Audit entries are always admitted: a request logged at several stages must be
        de-duplicated (in :meth:`process`) before it is counted.
        """
        if kind == "audit":
            return True
        try:
            head = event_head(obj)
        except DecodeError as exc:
            self.result.stats.skipped[str(exc)] += 1
            return False
        if head is None:
            return False
        if self.detector.rules_for(*head):
            return True
        self.result.pulls += 1
        return False

    def process(self, kind: str, obj: Any) -> None:
        """Full decode and exact counting of an admitted record."""
        try:
            pull = decode_event(obj) if kind == "event" else decode_audit_entry(obj, self._audit)
        except DecodeError as exc:
            self.result.stats.skipped[str(exc)] += 1
            return
        if pull is not None:
            self.result.pulls += 1
            self.detector.observe(pull)

    def feed(self, records: Iterable[tuple[str, Any]]) -> None:
        for kind, obj in records:
            if self.admit(kind, obj):
                self.process(kind, obj)

    def feed_path(self, path: str) -> None:
        stream = open_input(path)
        try:
            self.feed(iter_objects(stream, self.result.stats, name=path))
        finally:
            if path != "-":
                stream.close()

    def finish(self) -> ScanResult:
        self.result.findings = self.detector.findings()
        return self.result


def load_policies(paths: Iterable[str]) -> list[Policy]:
    """AllowedImages from YAML/JSON files (several documents, or a List). Raises InputError for
    an unreadable file; a malformed object becomes an unusable Policy with its problem listed."""
    policies: list[Policy] = []
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for path in paths:
        stream = open_input(path)
        try:
            docs = list(yaml.load_all(stream.read(), Loader=loader))
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML: {exc}") from None
        finally:
            if path != "-":
                stream.close()
        for obj in objects_from_documents(docs):
            policies.append(policy_from_object(obj))
    return policies


def scan_paths(paths: Iterable[str], allowlist: Allowlist, scanners: Iterable[str] | None = None,
               parallel: bool = True) -> ScanResult:
    from . import parallel as par  # here: parallel builds on this module

    detector = Detector(allowlist) if scanners is None else Detector(allowlist, scanners)
    scanner = Scanner(detector)
    for path in paths:
        if parallel and par.usable(path):
            par.feed_parallel(scanner, path)
        else:
            scanner.feed_path(path)
    return scanner.finish()
