#!/usr/bin/env python3
"""Benchmark: what one Suppression at the CRD's bounds costs the operator in memory (issue 15).

    .venv/bin/python bench/suppression_memory.py [--objects 20] [--images 32] [--length 256]
                                                  [--workloads 16]

Compiles N Suppressions whose lists are full of valid wildcard patterns of the given length (the
reviewer's worst case: every pattern distinct, so nothing is shared) with the core's own
``suppression_from_object``, keeping only what the operator keeps (the compiled object), and
prints the resident memory each one added and the time each compile took. ``--images 1000
--length 512 --workloads 256`` is the CRD's old maximum (about 10 MB and 1.6 s each).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
from pullwatch.core.suppressions import suppression_from_object


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def body(k: int, images: int, length: int, workloads: int, rng: random.Random) -> dict:
    def pattern(i: int) -> str:
        head = f"registry{k}-{i}.example.com/"
        path = ""
        while len(head) + len(path) + 22 < length:
            path += "".join(rng.choice("abcdefghij") for _ in range(20)) + "/"
        return f"{head}{path}*:*"

    spec = {
        "rules": ["*"],
        "images": [pattern(i) for i in range(images)],
        "workloads": [("w*" * 200)[: min(length, 253)] for _ in range(workloads)],
        "reason": "r" * 1000,
        "expires": "2026-06-01T00:00:00Z",
    }
    return {
        "apiVersion": "pullwatch.dev/v1alpha1",
        "kind": "Suppression",
        "metadata": {
            "name": f"s{k}",
            "namespace": "team",
            "creationTimestamp": "2026-05-01T00:00:00Z",
        },
        "spec": {k: v for k, v in spec.items() if v},  # an empty list is left out
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=20)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--workloads", type=int, default=16)
    args = ap.parse_args()
    rng = random.Random(0)
    kept = []
    suppression_from_object(body(-1, 1, 40, 1, rng), "pullwatch-system")  # imports warmed up
    gc.collect()
    before, took = rss_mb(), 0.0
    for k in range(args.objects):
        b = body(k, args.images, args.length, args.workloads, rng)
        start = time.perf_counter()
        s = suppression_from_object(b, "pullwatch-system")
        took += time.perf_counter() - start
        assert s.usable, s.problems[:2]
        kept.append(s)
        del b
    gc.collect()
    per = (rss_mb() - before) / args.objects
    units = 1 + args.images + args.workloads
    print(
        f"{args.objects} Suppressions of {args.images} images x {args.length} chars and "
        f"{args.workloads} workloads ({units} budget units each): {per:.3f} MB resident and "
        f"{1000 * took / args.objects:.1f} ms to compile each ({1000 * per / units:.1f} kB "
        "per unit)"
    )


if __name__ == "__main__":
    main()
