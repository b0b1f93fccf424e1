"""Output of Findings: kubectl-like table, JSON List, YAML, JSON lines; and the scan summary.

Event text is attacker-controlled (an image name or a pod name can carry terminal escape
sequences), so everything printed for a human goes through :func:`safe`. JSON and YAML escape
control characters by themselves.

    >>> safe("evil\\x1b[2Jname")
    'evil\\\\x1b[2Jname'
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import orjson
import yaml

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
COLUMNS = ("NAMESPACE", "NAME", "RULE", "SEVERITY", "RISK", "IMAGE", "POD", "NODE", "COUNT", "LAST SEEN")
MAX_CELL = 80


def safe(text: Any) -> str:
    """Printable text: control and bidi-override characters shown as escapes, never executed."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                        else f"\\u{ord(m.group()):04x}", str(text))


def _cell(value: Any) -> str:
    text = safe("<none>" if value in (None, "") else value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def table(findings: Iterable[dict[str, Any]]) -> str:
    rows = [COLUMNS]
    for f in findings:
        spec, status, meta = f["spec"], f.get("status") or {}, f["metadata"]
        rows.append(tuple(_cell(v) for v in (
            meta["namespace"], meta["name"], spec["rule"], spec["severity"], spec["riskScore"],
            spec["image"], spec["involvedObject"]["name"], spec.get("node"), status.get("count"),
            status.get("lastSeen"),
        )))
    if len(rows) == 1:
        return "No findings.\n"
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n" for r in rows)


def as_list(findings: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": findings}


def to_json(findings: list[dict[str, Any]]) -> str:
    return orjson.dumps(as_list(findings), option=orjson.OPT_INDENT_2).decode() + "\n"


def to_jsonl(findings: list[dict[str, Any]]) -> str:
    return "".join(orjson.dumps(f).decode() + "\n" for f in findings)


def to_yaml(findings: list[dict[str, Any]]) -> str:
    return yaml.safe_dump(as_list(findings), sort_keys=False, allow_unicode=False)


FORMATS = {"table": table, "json": to_json, "yaml": to_yaml, "jsonl": to_jsonl}


def summary(records: int, examined: int, pulls: int, findings: int, skipped: dict[str, int]) -> str:
    lines = [f"records read: {records}  examined: {examined}  pulls: {pulls}  findings: {findings}  "
             f"skipped: {sum(skipped.values())}"]
    for reason, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  skipped {n}: {safe(reason)}")
    return "\n".join(lines) + "\n"
