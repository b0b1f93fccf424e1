#!/usr/bin/env python3
"""Benchmark: large allowlists, and damaged or awkward inputs of ~1 GB (issue 8).

    .venv/bin/python bench/hostile_inputs.py              # all (~3 minutes, ~4 GB in bench/out/)
    .venv/bin/python bench/hostile_inputs.py --skip-big   # only the allowlist figures

Prints:
  1. allowlist: time to load 50,000 patterns (normalize + compile, in-process and through
     `pullwatch scan -a`), and the cost of a lookup that matches nothing (the worst case; verdicts
     are cached per namespace and image afterwards);
  2. damaged inputs: wall time and peak RSS of `pullwatch scan` on
       - 1.1 GB of JSON lines whose first line is broken (target: peak RSS < 100 MB),
       - ~1 GB of `kubectl get events -w -o json` output (indented objects back to back),
       - a 1.1 GB JSON-lines stream, gzip-compressed and cut in half (corrupt tail),
     and the exit code (3: an input could not be read in full).
Uses bench/out/watch-1000000.jsonl from bench/scan_throughput.py (generated if missing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PULLWATCH = str(Path(sys.executable).parent / "pullwatch")
sys.path.insert(0, str(ROOT / "bench"))


# Runs the command and prints its peak RSS. A go-between because a child forked from this
# process starts with this process's high-water mark (Linux keeps it across exec), and this one
# has loaded 50,000 patterns: measured directly, every command would seem as big as the benchmark.
_PEAK = (
    "import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, "
    "stderr=subprocess.DEVNULL); _, st, ru = os.wait4(p.pid, 0); "
    "print(ru.ru_maxrss, os.waitstatus_to_exitcode(st))"
)


def measure(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MB (of the command's own process, from wait4) and exit code."""
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, *cmd], capture_output=True, text=True, check=True
    ).stdout
    elapsed = time.monotonic() - start
    maxrss, code = out.split()
    return elapsed, int(maxrss) / 1024, int(code)


def allowlist_figures() -> None:
    from pullwatch.core.allowlist import Allowlist
    from pullwatch.scan.pipeline import load_config

    images = []
    for i in range(50_000):
        images.append(
            [
                f"registry{i % 97}.example.com/team-{i}/*",
                f"docker.io/org{i}/**",
                f"quay.io/proj{i}/app-*:v1.*",
                f"ghcr.io/o{i}/*/x-*:*",
                f"docker.io/lib{i}/exact:1.0",
            ][i % 5]
        )
    path = OUT / "allowlist-50000.yaml"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "pullwatch.dev/v1alpha1",
                "kind": "AllowedImages",
                "metadata": {"name": "big"},
                "spec": {"images": images},
            }
        )
    )
    start = time.monotonic()
    policies = load_config([str(path)]).policies
    allowlist = Allowlist(policies)
    loaded = time.monotonic() - start
    assert len(policies[0].patterns) == 50_000 and not policies[0].problems
    start = time.monotonic()
    for j in range(2000):
        assert not allowlist.check("ns", f"docker.io/unknown{j}/x:1").allowed
    miss = (time.monotonic() - start) / 2000
    tiny = OUT / "one-event.json"
    tiny.write_text(
        '{"kind": "Event", "reason": "Started", "message": "x", "involvedObject": {"name": "p"}}\n'
    )
    wall, rss, code = measure([PULLWATCH, "scan", str(tiny), "-a", str(path), "-q"])
    print("allowlist, 50,000 patterns (40,000 with wildcards)")
    print(f"  load in-process (parse YAML, normalize, compile RE2 sets): {loaded:.2f} s")
    print(
        f"  `pullwatch scan -a` on a one-line input, whole command:   {wall:.2f} s, peak RSS "
        f"{rss:.0f} MB (exit {code})"
    )
    print(f"  lookup that matches no pattern (uncached):                {miss * 1e6:.0f} us")


def big_inputs() -> None:
    base = OUT / "watch-1000000.jsonl"
    if not base.exists():
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "scan_throughput.py"), "--no-jq"], check=True
        )
    broken = OUT / "damaged-first-line.jsonl"
    if not broken.exists():
        with open(broken, "wb") as out, open(base, "rb") as src:
            out.write(b'{"type": "ADDED", "object": {"kind": "Event", "reason": \n')
            while chunk := src.read(8 << 20):
                out.write(chunk)
    pretty = OUT / "kubectl-watch-pretty.json"
    if not pretty.exists():
        with open(pretty, "wb") as out, open(base, "rb") as src:
            written = 0
            for line in src:
                text = json.dumps(json.loads(line)["object"], indent=4).encode() + b"\n"
                out.write(text)
                written += len(text)
                if written > 1_000_000_000:
                    break
    cut = OUT / "watch-cut.jsonl.gz"
    if not cut.exists():
        comp = zlib.compressobj(1, zlib.DEFLATED, 31)
        with open(cut, "wb") as out, open(base, "rb") as src:
            total = os.path.getsize(base)
            done = 0
            while (chunk := src.read(8 << 20)) and done < total // 2:
                out.write(comp.compress(chunk))
                done += len(chunk)
            out.write(comp.flush(zlib.Z_SYNC_FLUSH))  # no end of stream: cut in the middle
    print("\ndamaged and awkward inputs: `pullwatch scan FILE -o json`")
    print(f"  {'input':44} {'size MB':>8} {'seconds':>8} {'peak RSS MB':>12} {'exit':>5}")
    for path, label in (
        (broken, "JSON lines, first line broken"),
        (pretty, "kubectl -w -o json (indented, back to back)"),
        (cut, "gzip JSON lines cut in half"),
    ):
        wall, rss, code = measure(
            [
                PULLWATCH,
                "scan",
                str(path),
                "-o",
                "json",
                "-a",
                str(ROOT / "examples" / "allowed-images.yaml"),
            ]
        )
        print(f"  {label:44} {path.stat().st_size / 1e6:8.0f} {wall:8.2f} {rss:12.0f} {code:5d}")
    print(
        "  target: peak RSS < 100 MB on the damaged 1 GB input; exit 3 where the input is damaged"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-big", action="store_true", help="only the allowlist figures")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    allowlist_figures()
    if not args.skip_big:
        big_inputs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
