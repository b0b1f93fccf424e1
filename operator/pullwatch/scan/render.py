"""Output of Findings: kubectl-like table, JSON List, YAML, JSON lines; and the scan summary.

Event text is attacker-controlled (an image name or a pod name can carry terminal escape
sequences), so everything printed for a human goes through :func:`safe`. JSON and YAML escape
control characters by themselves.

    >>> safe("evil\\x1b[2Jname")
    'evil\\\\x1b[2Jname'
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import orjson
import yaml

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# The same unit and columns as `kubectl get findings -A` (plus the rule, which kubectl shows with
# -o wide).
COLUMNS = (
    "NAMESPACE",
    "NAME",
    "RULE",
    "SEVERITY",
    "RISK",
    "KIND",
    "WORKLOAD",
    "IMAGE",
    "PODS",
    "COUNT",
    "RAN",
    "LAST SEEN",
)
MAX_CELL = 80


def safe(text: Any) -> str:
    """Printable text: control and bidi-override characters shown as escapes, never executed."""
    return _CONTROL.sub(
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}"
        ),
        str(text),
    )


def _cell(value: Any) -> str:
    text = safe("<none>" if value in (None, "") else value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _rows(findings: Iterable[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = [COLUMNS]
    for f in findings:
        spec, status, meta = f["spec"], f.get("status") or {}, f["metadata"]
        workload = spec.get("workload") or {}
        ran = (status.get("outcomes") or {}).get("ran")  # yes | no | unknown
        rows.append(
            tuple(
                _cell(v)
                for v in (
                    meta["namespace"],
                    meta["name"],
                    spec["rule"],
                    spec["severity"],
                    spec["riskScore"],
                    workload.get("kind", "(overflow)"),
                    workload.get("name"),
                    spec.get("image"),
                    status.get("podCount"),
                    status.get("count"),
                    ran,
                    status.get("lastSeen"),
                )
            )
        )
    return rows


def write_table(
    findings: Iterable[dict[str, Any]],
    out: BinaryIO,
    complete: bool = True,
    extra: Iterable[dict[str, Any]] = (),
) -> None:
    """Findings only: ``extra`` (a ScanContext) is for machines."""
    rows = _rows(findings)
    if len(rows) == 1:
        # A scan that could not read its input must not look like a clean one.
        out.write(
            b"No findings.\n"
            if complete
            else b"No findings in what could be read: the input was not read in full "
            b"(see stderr).\n"
        )
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        out.write(("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n").encode())


# The List formats are written one item at a time: the Findings are never all rendered at once.
_LIST_HEAD = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}}


def write_json(
    findings: Iterable[dict[str, Any]],
    out: BinaryIO,
    complete: bool = True,
    extra: Iterable[dict[str, Any]] = (),
) -> None:
    out.write(orjson.dumps(_LIST_HEAD)[:-1] + b',"items":[')
    sep = b"\n"
    for encoded in _encoded(findings, extra, orjson.OPT_INDENT_2):
        out.write(sep + encoded)
        sep = b",\n"
    out.write(b"\n]}\n")


def write_jsonl(
    findings: Iterable[dict[str, Any]],
    out: BinaryIO,
    complete: bool = True,
    extra: Iterable[dict[str, Any]] = (),
) -> None:
    for encoded in _encoded(findings, extra, orjson.OPT_APPEND_NEWLINE):
        out.write(encoded)


def _encoded(
    findings: Iterable[dict[str, Any]], extra: Iterable[dict[str, Any]], option: int
) -> Iterator[bytes]:
    """Each document as ``orjson.dumps(doc, option=option)``; a scan's Findings (``Built``)
    encode themselves, on every core when there are many."""
    encode = getattr(findings, "encoded", None)
    if encode is not None:
        yield from encode(option)
    else:
        yield from (orjson.dumps(f, option=option) for f in findings)
    yield from (orjson.dumps(f, option=option) for f in extra)


def write_yaml(
    findings: Iterable[dict[str, Any]],
    out: BinaryIO,
    complete: bool = True,
    extra: Iterable[dict[str, Any]] = (),
) -> None:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    out.write(yaml.dump(_LIST_HEAD, Dumper=dumper, sort_keys=False).encode())
    out.write(b"items:\n")
    for f in itertools.chain(findings, extra):
        out.write(yaml.dump([f], Dumper=dumper, sort_keys=False, allow_unicode=False).encode())


FORMATS = {"table": write_table, "json": write_json, "yaml": write_yaml, "jsonl": write_jsonl}


def summary(
    records: int,
    examined: int,
    pulls: int,
    findings: int,
    skipped: dict[str, int],
    damaged: dict[str, int] | None = None,
) -> str:
    damaged = damaged or {}
    lines = [
        f"records read: {records}  examined: {examined}  pulls: {pulls}  findings: {findings}  "
        f"skipped: {sum(skipped.values())}"
        + (f"  damaged: {sum(damaged.values())}" if damaged else "")
    ]
    for reason, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  skipped {n}: {safe(reason)}")
    for reason, n in sorted(damaged.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  damaged {n}: {safe(reason)}")
    return "\n".join(lines) + "\n"
