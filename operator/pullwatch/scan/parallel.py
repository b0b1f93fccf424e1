"""One large JSON-lines file, scanned on every core, with results identical to one core's.

The file is cut into line-aligned byte ranges; a forked worker per range does the expensive,
order-free part (find candidate lines, parse them, the cheap rules look of ``Scanner.admit``,
the full decode of ``Scanner.decode``) and returns only the observations of the admitted
records, usually a few percent. The parent then runs ``Scanner.take`` on them in file order,
so series counting, audit de-duplication, the names Findings get after a collision and Finding
contents are exactly those of a sequential scan (``tests/test_parallel.py``). Judging in the
workers instead was measured slower: the records travel back larger than the observations.

Only for regular files and objects (``cloud.py``: each worker reads its range with its own
ranged GETs), uncompressed, in JSON-lines format, on a platform with ``fork``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import gc
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple

import orjson

from ..core.collect import Collector
from ..core.pulls import InvolvedObject, Pull
from . import cloud
from .pipeline import Scanner
from .records import ReadStats, json_lines
from .sources import InputError

MIN_BYTES = 64 << 20  # below this, forking costs more than it saves
RANGES_PER_WORKER = 4
_WINDOW = 64 << 10  # bytes read at a time while looking for the end of a line

_parent: Scanner | None = None  # inherited by the forked workers
_path: str = ""
_collector: Collector | None = None
MIN_FINDINGS = 400  # fewer are built faster than a pool starts
BUILD_CHUNK = 64  # Findings per task: small, so that the cores finish together
AHEAD = 4  # chunks a helper may build ahead of what the parent has written


def line_aligned_ranges(path: str, parts: int) -> list[tuple[int, int]]:
    """``parts`` byte ranges of a file or object, each starting at the start of a line."""
    if cloud.is_url(path):
        fs, inner = cloud.filesystem(path)
        size = cloud.object_size(path)
        return _ranges(size, parts, lambda at, n: fs.cat_file(inner, start=at, end=at + n))
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size

        def read_at(at: int, n: int) -> bytes:
            f.seek(at)
            return f.read(n)

        return _ranges(size, parts, read_at)


def tapered(parts: int) -> list[float]:
    """Where each of ``parts`` ranges ends, as a fraction of the file: the first half of the
    ranges of one size, the next quarter half of it, the last quarter a quarter of it. Two
    waits at the end of a read last as long as the last range does: the parent takes each
    range's pulls only once the range is read, so it takes the last range's while the other
    core idles; and the worker that finishes first idles until the other is done.

    >>> [round(end, 3) for end in tapered(8)]
    [0.182, 0.364, 0.545, 0.727, 0.818, 0.909, 0.955, 1.0]
    >>> tapered(2)
    [0.5, 1.0]
    """
    tail = parts // 4
    weights = [1.0] * (parts - 2 * tail) + [0.5] * tail + [0.25] * tail
    total, ends, at = sum(weights), [], 0.0
    for w in weights:
        at += w
        ends.append(at / total)
    return ends


def _ranges(size: int, parts: int, read_at: Callable[[int, int], bytes]) -> list[tuple[int, int]]:
    bounds = [0]
    for end in tapered(parts)[:-1]:
        at = max(int(size * end), bounds[-1])
        while at < size:  # on to the start of the next line: no line is cut in two
            window = read_at(at, _WINDOW)
            newline = window.find(b"\n")
            if newline != -1 or not window:
                at = at + newline + 1 if newline != -1 else size
                break
            at += len(window)
        bounds.append(min(at, size))
    bounds.append(size)
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


class _RangeReader:
    def __init__(self, f: Any, end: int):
        self._f, self._end = f, end

    def read(self, n: int = -1) -> bytes:
        left = self._end - self._f.tell()
        if left <= 0:
            return b""
        return self._f.read(left if n < 0 else min(n, left))

    def close(self) -> None:
        self._f.close()


def _open_range(start: int, end: int) -> Any:
    if cloud.is_url(_path):
        return cloud.open_object(_path, start, end)
    f = open(_path, "rb")
    f.seek(start)
    return _RangeReader(f, end)


class RangeResult(NamedTuple):
    """What a worker sends back for one range: small next to the range itself."""

    stats: ReadStats
    pulls: int
    kept: list[Any]  # (auditID or "", observations) in file order, _portable
    pulled: set[int]
    error: str | None
    notices: list[str]  # cloud.take_notices() of the worker (ScanResult.note keeps them)
    refused: set[str]  # endpoints that refused presigned GETs (the next objects' workers know)


def _portable(kept: list[tuple[str, list[Any]]]) -> list[Any]:
    """What a range kept, cheaper to send: an Event's pull (most of what is kept) as one flat
    tuple of its fields - pickle takes a named tuple through a Python call per object, which
    cost the workers more than decoding the Events (the Finding-heavy bench stream)."""
    out: list[Any] = []
    for audit_id, observations in kept:
        if not audit_id and len(observations) == 1:
            p = observations[0]
            if p.__class__ is Pull and p.actor is None:
                out.append((*p[:3], *p[3], *p[4:]))
                continue
        out.append((audit_id, observations))
    return out


def _restored(rows: list[Any]) -> Iterator[tuple[str, list[Any]]]:
    """:func:`_portable` undone, in the same order."""
    for row in rows:
        if len(row) == 2:
            yield row
        else:
            yield "", [Pull(row[0], row[1], row[2], InvolvedObject(*row[3:8]), *row[8:])]


def _scan_range(bounds: tuple[int, int]) -> RangeResult:
    assert _parent is not None
    worker = Scanner(_parent.detector)  # this process's copy: its counters are its own
    stats = worker.result.stats
    kept: list[tuple[str, list[Any]]] = []
    error = None
    try:
        reader = _open_range(*bounds)
    except (InputError, OSError) as exc:
        error = f"bytes {bounds[0]}-{bounds[1]} not read: {exc}"
        return RangeResult(
            stats, 0, kept, set(), error, cloud.take_notices(), cloud.refused_endpoints()
        )
    try:
        for kind, obj in json_lines(reader, stats):
            if worker.admit(kind, obj):
                decoded = worker.decode(kind, obj)
                if decoded is not None and decoded[1]:
                    kept.append(decoded)
    except OSError as exc:  # the network, usually: what was read before it counts
        error = f"read error in bytes {bounds[0]}-{bounds[1]}: {exc}"
    finally:
        reader.close()
    return RangeResult(
        stats,
        worker.result.pulls,
        _portable(kept),
        worker.collector.pulled,
        error,
        cloud.take_notices(),
        cloud.refused_endpoints(),
    )


def usable(path: str) -> bool:
    """A regular file or an object, uncompressed, big enough, whose first line is a JSON
    object (anything else is read by one core, which also reports its problems)."""
    if path == "-" or not _forkable():
        return False
    try:
        if cloud.is_url(path):
            if cloud.object_size(path) < MIN_BYTES:
                return False
            fs, inner = cloud.filesystem(path)
            head = fs.cat_file(inner, start=0, end=1 << 20)
            first = head.split(b"\n", 1)[0]
        else:
            if not os.path.isfile(path) or os.path.getsize(path) < MIN_BYTES:
                return False
            with open(path, "rb") as f:
                first = f.readline(1 << 20)
    except (InputError, OSError):
        return False
    except Exception:  # a storage library's own error: the sequential read will explain it
        return False
    try:
        # orjson refuses a byte-order mark, so a file that needs transcoding is read by one core
        return isinstance(orjson.loads(first), dict)
    except orjson.JSONDecodeError:
        return False


def feed_parallel(scanner: Scanner, path: str, workers: int | None = None) -> None:
    """Like ``scanner.feed_path(path)``, on ``workers`` processes (default: every core)."""
    global _parent, _path
    workers = workers or os.cpu_count() or 2
    # More ranges than workers: the parent processes range i (in order) while the workers are
    # still reading later ones, instead of waiting for all of them.
    try:
        ranges = line_aligned_ranges(path, workers * RANGES_PER_WORKER)
    except (InputError, OSError) as exc:
        scanner.result.input_errors.append(f"{path}: {exc}" if path not in str(exc) else str(exc))
        return
    _parent, _path = scanner, path
    total = scanner.result.stats
    try:
        with _workers(workers) as pool:
            futures = collections.deque(pool.submit(_scan_range, b) for b in ranges)
            while futures:
                # Popped, so that a range's result is let go once taken (no list holds them all).
                part = futures.popleft().result()
                total.add(part.stats)  # ranges come back in file order
                scanner.result.pulls += part.pulls
                scanner.collector.pulled |= part.pulled
                for audit_id, observations in _restored(part.kept):
                    scanner.take(audit_id, observations)
                if part.error:
                    scanner.result.input_errors.append(f"{path}: {part.error}")
                scanner.result.note(part.notices)
                cloud.learn_refused(part.refused)
    finally:
        _parent, _path = None, ""


class WorkerDied(RuntimeError):
    """A worker process ended without its result (killed, out of memory)."""


@contextlib.contextmanager
def _workers(n: int) -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    """``n`` forked workers. An executor, not a multiprocessing Pool: a Pool replaces a worker
    that was killed (the kernel's OOM killer) and waits for its task for ever; an executor
    fails its futures, and the scan says so."""
    pool = concurrent.futures.ProcessPoolExecutor(
        n, mp_context=multiprocessing.get_context("fork"), initializer=_worker_start
    )
    try:
        yield pool
    except BrokenProcessPool:
        # From a result waited for, or from a submit once a worker is gone.
        raise WorkerDied(
            "a worker process of the multi-core scan ended without its result (killed? out "
            "of memory?): the scan is incomplete"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_start() -> None:
    """A worker lives for one scan: it never runs the cyclic collector (``collector_off`` in
    pipeline.py says why), which would also walk everything it inherited from the parent,
    copying every page that lies in; reference counting frees what it drops."""
    gc.disable()


def _forkable() -> bool:
    import multiprocessing.process as mp_process

    return (
        "fork" in multiprocessing.get_all_start_methods()
        and (os.cpu_count() or 1) >= 2
        and not mp_process.current_process().daemon  # a daemonic worker may have no children
    )


def can_build(findings: int) -> bool:
    """Whether ``findings`` Findings are worth building on every core."""
    return findings >= MIN_FINDINGS and _forkable()


def _build_bodies(names: list[str]) -> list[dict[str, Any]]:
    assert _collector is not None
    return [_collector.body_of(name) for name in names]


def build_bodies(collector: Collector, workers: int | None = None) -> Iterator[dict[str, Any]]:
    """``collector.bodies()``, built by forked workers, in the same order (what the table and
    YAML outputs read; JSON takes :func:`build_encoded`)."""
    yield from _built(collector, _build_bodies, workers)


def _build_chunk(names: list[str], option: int) -> list[bytes]:
    """Bodies built and encoded here: bytes travel back cheaper than dicts, and the parent
    would only encode them anyway."""
    assert _collector is not None
    return [orjson.dumps(_collector.body_of(name), option=option) for name in names]


def build_encoded(collector: Collector, option: int, workers: int | None = None) -> Iterator[bytes]:
    """``collector.bodies()`` encoded by ``orjson.dumps(body, option=option)``, built by forked
    workers (each Finding is a function of the records alone), in the same order; a chunk of
    Findings is held at a time per worker."""
    yield from _built(collector, functools.partial(_build_chunk, option=option), workers)


def _built(
    collector: Collector, build: Callable[[list[str]], list[Any]], workers: int | None
) -> Iterator[Any]:
    """The Findings in chunks, in order: the parent builds every ``workers``-th chunk itself
    and forked helpers the others, at most ``AHEAD`` chunks each ahead of what was written
    (bounded memory). The parent builds a share because it would otherwise only wait: one
    process fewer forked and faulting in the records it inherits (measured: a helper spends a
    third more CPU on a chunk than the parent does)."""
    global _collector
    names = collector.names()
    chunks = [names[i : i + BUILD_CHUNK] for i in range(0, len(names), BUILD_CHUNK)]
    share = max(2, workers or os.cpu_count() or 2)
    _collector = collector
    try:
        with _workers(share - 1) as pool:
            ahead: dict[int, concurrent.futures.Future] = {}
            queued = 0
            for i, chunk in enumerate(chunks):
                while queued < len(chunks) and len(ahead) < AHEAD * (share - 1):
                    if queued % share:
                        ahead[queued] = pool.submit(build, chunks[queued])
                    queued += 1
                if i % share:
                    yield from ahead.pop(i).result()
                else:
                    yield from build(chunk)
    finally:
        _collector = None
