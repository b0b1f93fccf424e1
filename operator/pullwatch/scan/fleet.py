"""The scan of one shard and the merge of shards, as plain functions for a distributed engine.

A fleet's archive is scanned as a map and a reduce (``examples/fleet/``): each shard - a list of
files, objects, prefixes or globs - is scanned on its own by :func:`scan_shard`, and the shards'
results are joined by :func:`merge_results`, in any order and grouping (the merge is
commutative, associative and idempotent: ``core/collect.py``). Both take and return plain,
picklable values, so that an engine ships them by reference and only small results travel.

    >>> import json, os, tempfile
    >>> def pull(pod, image):
    ...     return json.dumps({"kind": "Event", "apiVersion": "v1",
    ...         "metadata": {"name": pod + ".1", "namespace": "shop"}, "reason": "Pulling",
    ...         "involvedObject": {"kind": "Pod", "name": pod, "namespace": "shop"},
    ...         "message": f'Pulling image "{image}"', "count": 1,
    ...         "source": {"component": "kubelet", "host": "node-1"}})
    >>> shards = []
    >>> for i, image in enumerate(["aquasec/kube-hunter:0.6.8", "evil/miner:1"]):
    ...     with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    ...         _ = f.write(pull(f"web-7d9f8b6c5d-x7k2{i}", image) + "\\n")
    ...     shards.append(f.name)
    >>> allowed = [("allowed.yaml", b"apiVersion: pullwatch.dev/v1alpha1\\nkind: AllowedImages\\n"
    ...            b"metadata: {name: base}\\nspec: {images: ['nginx:*']}\\n")]
    >>> a, b = (scan_shard([path], allowed) for path in shards)
    >>> both = merge_results(a, b)
    >>> len(a.findings()), len(b.findings()), len(both.findings()), both.errors
    (2, 1, 3, [])
    >>> for path in shards:
    ...     os.unlink(path)

The result of a shard is that of ``pullwatch scan -o json`` over it: the Findings with their
merge state, then a ``ScanContext`` document if there is one, and what could not be read
(``errors``: a shard that cannot be read is reported in its result, like an input of
``pullwatch scan``, not raised: an engine would retry it for nothing).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.allowlist import Allowlist
from ..core.collect import CONTEXT_KIND, Collector, merge
from ..core.rules import DEFAULT_SCANNER_IMAGES, scanner_names, validate_scanner_names
from .pipeline import load_config, scan_paths


@dataclass
class ShardResult:
    """What a shard's scan (or a merge of several) gives: Finding documents as ``pullwatch scan
    -o json`` writes its items, and the problems of the inputs that were not read in full."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    records: int = 0  # records read, over the shards joined here
    pulls: int = 0
    notices: list[str] = field(default_factory=list)  # nothing lost, worth telling (each once)

    def findings(self) -> list[dict[str, Any]]:
        """The Findings alone (without the ``ScanContext`` document)."""
        return [d for d in self.documents if d.get("kind") != CONTEXT_KIND]


Config = str | tuple[str, bytes]  # a configuration file's path, or (its name, its bytes)


def read_config(paths: Iterable[str]) -> list[tuple[str, bytes]]:
    """Configuration files as ``(name, bytes)``, to ship to workers that do not share this
    machine's disk (``scan_shard`` takes them as they are)."""
    out = []
    for path in paths:
        with open(path, "rb") as f:
            out.append((path, f.read()))
    return out


def scan_shard(
    paths: Sequence[str],
    allowed_images: Sequence[Config] = (),
    scanners: Iterable[str] = (),
    default_scanners: bool = True,
    operator_namespace: str = "pullwatch-system",
    parallel: bool = False,
) -> ShardResult:
    """``pullwatch scan PATHS -a ALLOWED_IMAGES --scanner …`` as a function.

    ``parallel`` (off by default): whether a large local file is split over this machine's
    cores; an engine's worker is given one core, and the engine's shards are the parallelism.
    A configuration file that cannot be read raises (InputError, ValueError), as it stops
    ``pullwatch scan``: every shard would be judged wrongly."""
    with tempfile.TemporaryDirectory(prefix="pullwatch-config-") as tmp:
        files = []
        for i, item in enumerate(allowed_images):
            if isinstance(item, str):
                files.append(item)
                continue
            name, text = item
            files.append(os.path.join(tmp, f"{i}-{os.path.basename(name)}"))
            with open(files[-1], "wb") as f:
                f.write(text)
        config = load_config(files, operator_namespace)
    names = scanner_names(
        config.scanner_lists,
        validate_scanner_names(list(scanners)),
        DEFAULT_SCANNER_IMAGES if default_scanners else frozenset(),
    )
    result = scan_paths(paths, Allowlist(config.policies), names, parallel, config)
    documents = list(result.findings)
    if result.context is not None:
        documents.append(result.context)
    errors = list(result.input_errors)
    if result.stats.damaged and not errors:
        errors.append(f"{sum(result.stats.damaged.values())} damaged record(s) could not be read")
    notices = list(result.notices)  # each text once already (ScanResult.note)
    return ShardResult(documents, errors, result.stats.records, result.pulls, notices)


def merge_results(*results: ShardResult) -> ShardResult:
    """The join of several shards' results: that of one scan over all their inputs. Raises
    ValueError for a document that cannot be merged (see ``pullwatch merge``)."""

    def every() -> Iterable[tuple[str, Any]]:
        for i, result in enumerate(results):
            for j, doc in enumerate(result.documents):
                yield f"result {i + 1} document {j + 1}", doc

    collector: Collector = merge(every(), clock=time.time())
    documents = list(collector.bodies())
    context = collector.context()
    if context is not None:
        documents.append(context)
    return ShardResult(
        documents,
        [e for r in results for e in r.errors],
        sum(r.records for r in results),
        sum(r.pulls for r in results),
        list(dict.fromkeys(n for r in results for n in r.notices)),
    )
