"""One large JSON-lines file, scanned on every core, with results identical to one core's.

The file is cut into line-aligned byte ranges; a forked worker per range does the expensive,
order-free part (find candidate lines, parse them, the cheap rules look of ``Scanner.admit``)
and returns only the admitted records, usually a few percent. The parent then runs
``Scanner.process`` on them in file order, so series counting, audit de-duplication and
Finding contents are exactly those of a sequential scan (``tests/test_parallel.py``).

Only for regular, uncompressed files in JSON-lines format, on a platform with ``fork``.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import orjson

from .pipeline import Scanner
from .records import ReadStats, json_lines

MIN_BYTES = 64 << 20  # below this, forking costs more than it saves
RANGES_PER_WORKER = 4

_parent: Scanner | None = None  # inherited by the forked workers
_path: str = ""


def line_aligned_ranges(path: str, parts: int) -> list[tuple[int, int]]:
    size = os.path.getsize(path)
    bounds = [0]
    with open(path, "rb") as f:
        for i in range(1, parts):
            f.seek(max(size * i // parts, bounds[-1]))
            f.readline()  # on to the start of the next line: no line is cut in two
            bounds.append(min(f.tell(), size))
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


def _scan_range(bounds: tuple[int, int]) -> tuple[ReadStats, int, list[tuple[str, Any]]]:
    assert _parent is not None
    worker = Scanner(_parent.detector)  # this process's copy: its counters are its own
    stats = worker.result.stats
    kept: list[tuple[str, Any]] = []
    with open(_path, "rb") as f:
        f.seek(bounds[0])
        for kind, obj in json_lines(_RangeReader(f, bounds[1]), stats):
            if worker.admit(kind, obj):
                kept.append((kind, obj))
    return stats, worker.result.pulls, kept


def usable(path: str) -> bool:
    """A regular, uncompressed, big enough file whose first line is a JSON object."""
    if (
        path == "-"
        or "fork" not in multiprocessing.get_all_start_methods()
        or (os.cpu_count() or 1) < 2
    ):
        return False
    try:
        if not os.path.isfile(path) or os.path.getsize(path) < MIN_BYTES:
            return False
        with open(path, "rb") as f:
            first = f.readline(1 << 20)
    except OSError:
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
    ranges = line_aligned_ranges(path, workers * RANGES_PER_WORKER)
    _parent, _path = scanner, path
    total = scanner.result.stats
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for stats, pulls, kept in pool.imap(_scan_range, ranges, chunksize=1):  # file order
                total.add(stats)
                scanner.result.pulls += pulls
                for kind, obj in kept:
                    scanner.process(kind, obj)
    finally:
        _parent, _path = None, ""
