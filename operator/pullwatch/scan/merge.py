"""``pullwatch merge``: the Findings of several scans, joined into those of one scan over all.

Inputs are what ``pullwatch scan -o json|jsonl|yaml`` writes (Lists, JSON lines, YAML streams,
compressed or not, ``-`` for stdin): Findings carrying their merge state, and ``ScanContext``
documents. Nothing is judged again - each Finding was judged by the scan that wrote it - so the
configuration of the scans is theirs; merge scans made with the same configuration.

A document that is not a Finding of ``pullwatch scan`` (an operator's Finding has no merge
state), a damaged one, or one from another pullwatch version is refused with its input and
position named: a merge that silently left one out would not be exact.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson

from .. import EXIT_INPUT, EXIT_OK, EXIT_USAGE
from ..core.collect import Collector, merge
from .records import sniff
from .sources import InputError, open_path
from .yamltext import load_all


def documents(path: str) -> Iterator[Any]:
    """Every top-level document of one input, a List's items one by one. Raises InputError."""
    source = open_path(path)
    try:
        data = source.read(-1)
    finally:
        source.close()
    if source.damage:
        raise InputError(f"{path}: {source.damage[0]}")
    kind = sniff(data[: 4 << 20], True)
    try:
        if kind == "lines":
            values = [orjson.loads(line) for line in data.splitlines() if line.strip()]
        elif kind == "json":
            values = [orjson.loads(data)]
        elif kind == "yaml":
            values = list(load_all(data))
        elif kind == "empty":
            values = []
        else:
            raise InputError(f"{path}: not JSON or YAML")
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not what `pullwatch scan` writes ({exc})") from None
    for value in values:
        if isinstance(value, dict) and value.get("kind") == "List":
            yield from value.get("items") or []
        elif isinstance(value, list):
            yield from value
        else:
            yield value


def merge_paths(paths: list[str]) -> Collector:
    """The joined Findings of every input. Raises InputError or ValueError (naming where)."""

    def every() -> Iterator[tuple[str, Any]]:
        for path in paths:
            for i, doc in enumerate(documents(path)):
                yield f"{path} item {i + 1}", doc

    return merge(every(), clock=time.time())


def run(paths: list[str], output: str, keep: list[object] | None = None) -> int:
    """``keep``: where the merge's records are held until the process leaves (cli.console)."""
    from .render import FORMATS, safe

    try:
        collector = merge_paths(paths)
        if keep is not None:
            keep.append(collector)
        bodies = list(collector.bodies())
        if keep is not None:
            keep.append(bodies)
        context = collector.context()
    except InputError as exc:
        print(f"pullwatch: {safe(exc)}", file=sys.stderr)
        return EXIT_INPUT
    except ValueError as exc:
        print(f"pullwatch: cannot merge: {safe(exc)}", file=sys.stderr)
        return EXIT_USAGE
    FORMATS[output](bodies, sys.stdout.buffer, extra=[context] if context else [])
    sys.stdout.flush()
    print(f"merged: {len(bodies)} Findings", file=sys.stderr)
    return EXIT_OK
