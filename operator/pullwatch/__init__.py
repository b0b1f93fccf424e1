"""pullwatch: detect Kubernetes scanner and unapproved image pulls, record them as Findings.

Layers (a test enforces who may import whom):

* ``pullwatch.core``: the pure detection core - image references, allowlist patterns, rules,
  Event and audit decoding, exact counting, Finding bodies. No kopf, no kubernetes, no I/O.
* ``pullwatch.scan``: ``pullwatch scan`` - reading dumps and logs, output, multi-core scanning.
* ``pullwatch.kube``: ``pullwatch run`` - the operator: kopf app, Event stream, Finding writer.
* ``pullwatch.cli``: the command line over both.
"""

__version__ = "0.1.0"

GROUP = "pullwatch.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Exit codes of the command line (documented in `pullwatch scan --help`).
EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3, 4
# Not a bug, so not EXIT_INTERNAL: the kernel killed a worker (out of memory).
EXIT_WORKER_DIED = 5
