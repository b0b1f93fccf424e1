"""The offline pipeline behind ``pullwatch scan``: inputs -> records -> pulls -> Findings.

Pure orchestration over the core; file and stdin handling is the only I/O here. Each input is
read on its own: one that cannot be opened, or is damaged part-way, is reported in
``ScanResult.input_errors`` and the others are read all the same (their Findings are kept).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..core.allowlist import KIND as ALLOWED_IMAGES
from ..core.allowlist import Allowlist, Policy, objects_from_documents, policy_from_object
from ..core.audit import AuditDeduper, entry_observations
from ..core.collect import Collector
from ..core.detector import Detector
from ..core.names import is_label
from ..core.pods import decode_pod
from ..core.pulls import (
    INVALID_NAMESPACE,
    DecodeError,
    Pull,
    decode_event,
    event_parts,
    slot_of,
)
from ..core.rules import (
    SCANNER_IMAGES_KIND,
    ScannerList,
    scanner_digests,
    scanner_list_from_object,
)
from ..core.suppressions import KIND as SUPPRESSION
from ..core.suppressions import Suppression, Suppressions, suppression_from_object
from .records import ReadStats, iter_objects
from .sources import InputError, expand_inputs, open_path
from .yamltext import load_all

MAX_CONFIG_BYTES = 64 << 20  # an allowlist file larger than this is not an allowlist


@dataclass
class ScanResult:
    stats: ReadStats = field(default_factory=ReadStats)
    pulls: int = 0
    findings: Any = field(default_factory=list)  # a sequence of Finding bodies
    context: dict[str, Any] | None = None  # the ScanContext document, if there is one
    # "<input>: <what went wrong>" for every input that could not be read in full
    input_errors: list[str] = field(default_factory=list)
    # what was worth telling though nothing was lost (cloud.notice), each text once
    notices: list[str] = field(default_factory=list)

    def note(self, texts: Iterable[str]) -> None:
        """Keep notices not kept yet: every worker of every object may tell the same one."""
        self.notices.extend(t for t in texts if t not in self.notices)

    @property
    def complete(self) -> bool:
        """Was every input read in full, and was anything in them an Event or audit entry?"""
        s = self.stats
        return not self.input_errors and not s.damaged and not (s.unrecognized and not s.recognized)


class Scanner:
    def __init__(self, detector: Detector, clock: float | None = None):
        self.detector = detector
        self.collector = Collector(detector, clock if clock is not None else time.time())
        self.result = ScanResult()
        self._audit = AuditDeduper()
        self._admitted: tuple[Any, Any] = (None, None)  # the last Event admitted, and its look

    def admit(self, kind: str, obj: Any) -> bool:
        """The cheap first look: is this a pull that some rule fires on?

        Most pulls are of allowed images; they are counted here and never fully decoded.
        Audit entries are always admitted: a request logged at several stages must be
        de-duplicated (in :meth:`process`) before it is counted.
        """
        if kind in ("audit", "pod"):
            return True
        try:
            parts = event_parts(obj)
        except DecodeError as exc:
            self.result.stats.skipped[str(exc)] += 1
            return False
        if parts is None:
            return False
        head = parts[4], parts[2]
        if not is_label(head[0]):  # as decode_event says; and no cache keeps such a name
            self.result.stats.skipped[INVALID_NAMESPACE] += 1
            return False
        if self.detector.rules_for(*head):
            self._admitted = obj, parts  # decode goes on from this look
            return True
        self.result.pulls += 1
        slot = slot_of(parts[3])  # the object the look read: a dict
        if slot is not None:
            self.collector.note_pulled(head[0], *slot, head[1])
        return False

    def process(self, kind: str, obj: Any) -> None:
        """Full decode of an admitted record, into the Findings it belongs to: an Event's pull,
        every observation of an audit entry (pulls, who wrote Events, pods created, people
        changing workloads), the containers a pod ran."""
        decoded = self.decode(kind, obj)
        if decoded is not None:
            self.take(*decoded)

    def decode(self, kind: str, obj: Any) -> tuple[str, list[Any]] | None:
        """The order-free half of :meth:`process`: ``(auditID or "", observations)``, a pure
        function of the record (so workers can do it, ``parallel.py``); None when it cannot
        be used (counted as skipped)."""
        try:
            if kind == "event":
                obj_parts, self._admitted = self._admitted, (None, None)
                pull = decode_event(obj, head=obj_parts[1] if obj_parts[0] is obj else None)
                return "", [pull] if pull is not None else []
            if kind == "audit":
                return entry_observations(obj)
            return "", decode_pod(obj)
        except DecodeError as exc:
            self.result.stats.skipped[str(exc)] += 1
            return None

    def take(self, audit_id: str, observations: list[Any]) -> None:
        """The in-order half: an audit request logged at several stages counts once (its first
        stage with observations), then each observation goes to its Findings."""
        if audit_id and observations and not self._audit.first_time(audit_id):
            return
        for obs in observations:
            if obs.__class__ is Pull:
                self.result.pulls += 1
            self.collector.add(obs)

    def feed(self, records: Iterable[tuple[str, Any]]) -> None:
        for kind, obj in records:
            if self.admit(kind, obj):
                self.process(kind, obj)

    def feed_path(self, path: str) -> None:
        try:
            source = open_path(path)
        except InputError as exc:
            self.result.input_errors.append(str(exc))
            return
        try:
            before = sum(self.result.stats.damaged.values())
            self.feed(iter_objects(source, self.result.stats))
            for problem in source.damage:
                self.result.input_errors.append(f"{source.name}: {problem}")
            damaged = sum(self.result.stats.damaged.values()) - before
            if damaged and not source.damage:
                self.result.input_errors.append(
                    f"{source.name}: {damaged} damaged record(s) could not be read"
                )
        finally:
            source.close()

    def finish(self, parallel: bool = False) -> ScanResult:
        self.result.findings = Built(self.collector, parallel)
        self.result.context = self.collector.context()
        return self.result


class Built:
    """The scan's Findings: a lazy sequence, each body built when it is read (20,000 Findings are
    never held as bodies at once). ``parallel``: many are built on every core."""

    def __init__(self, collector: Collector, parallel: bool = False):
        self.collector = collector
        self.parallel = parallel

    def __len__(self) -> int:
        return len(self.collector.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from . import parallel as par

        with collector_off():  # building bodies would have it walk every record again
            if self.parallel and par.can_build(len(self)):
                yield from par.build_bodies(self.collector)
            else:
                yield from self.collector.bodies()

    def encoded(self, option: int = 0) -> Iterator[bytes]:
        """Each body as ``orjson.dumps(body, option=option)``, in the order of iteration; many
        Findings are built and encoded on every core (what JSON output needs, cheapest)."""
        from . import parallel as par

        if not (self.parallel and par.can_build(len(self))):
            yield from (orjson.dumps(body, option=option) for body in self)
            return
        with collector_off():
            yield from par.build_encoded(self.collector, option)

    def __bool__(self) -> bool:
        return bool(self.collector.records)


@dataclass
class Config:
    """What configuration files hold: the same objects the operator reads from the cluster."""

    policies: list[Policy] = field(default_factory=list)
    scanner_lists: list[ScannerList] = field(default_factory=list)
    suppressions: list[Suppression] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # objects of another kind


def load_config(paths: Iterable[str], operator_namespace: str = "pullwatch-system") -> Config:
    """AllowedImages, ScannerImages and Suppressions from YAML/JSON files (several documents, or a
    List). Raises InputError for a file that cannot be read or is not YAML: the configuration
    decides what is reported, and a scan with part of it missing would report the wrong things. A
    malformed object is kept with its problems listed (it then allows, adds or covers nothing)."""
    config = Config()
    for path in paths:
        for obj in objects_from_documents(read_documents(path)):
            kind = obj.get("kind") if isinstance(obj, dict) else None
            if kind == SCANNER_IMAGES_KIND:
                config.scanner_lists.append(scanner_list_from_object(obj))
            elif kind == SUPPRESSION:
                config.suppressions.append(
                    suppression_from_object(obj, operator_namespace, now=time.time())
                )
            elif kind == ALLOWED_IMAGES or not isinstance(kind, str):
                config.policies.append(policy_from_object(obj))
            else:
                config.unknown.append(f"{path}: {str(kind)[:60]}")
    return config


def read_documents(path: str) -> list[Any]:
    """Every YAML/JSON document of a configuration file, or InputError saying why not."""
    source = open_path(path)
    try:
        text = source.read(MAX_CONFIG_BYTES + 1)
    finally:
        source.close()
    if source.damage:
        raise InputError(f"{path}: {source.damage[0]}")
    if len(text) > MAX_CONFIG_BYTES:
        raise InputError(
            f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB; not a configuration file"
        )
    try:
        return list(load_all(text))
    except ValueError as exc:
        raise InputError(f"{path}: not valid YAML or JSON: {exc}") from None


def scan_paths(
    paths: Iterable[str],
    allowlist: Allowlist,
    scanners: Iterable[str] | None = None,
    parallel: bool = True,
    config: Config | None = None,
) -> ScanResult:
    """``config``: its Suppressions and its ScannerImages' digests apply (``scanners``: the
    scanner names in force, made from its ScannerImages and the command line)."""
    from . import cloud
    from . import parallel as par  # here: parallel builds on this module

    detector = Detector(allowlist) if scanners is None else Detector(allowlist, scanners)
    if config is not None:
        detector.suppressions = Suppressions(config.suppressions)
        detector.scanner_digests = scanner_digests(config.scanner_lists)
    scanner = Scanner(detector)
    with collector_off():
        for path in expand_inputs(paths, scanner.result.input_errors):
            if parallel and par.usable(path):
                par.feed_parallel(scanner, path)
            else:
                scanner.feed_path(path)
            scanner.result.note(cloud.take_notices())
    return scanner.finish(parallel)


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """The cyclic garbage collector off while a scan reads or builds its Findings.

    The scan builds no reference cycles (parsed JSON and its own records), so reference counting
    frees everything; the cyclic collector would only walk the growing records again and again
    (measured: a third of the parent's time on the Finding-heavy stream of
    bench/scan_throughput.py). The workers that build Findings never collect either
    (parallel.py)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
