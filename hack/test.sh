#!/usr/bin/env bash
# The whole test suite on a fresh machine: venv and packages, then lint and format (fail fast, in
# seconds), then etcd/kubectl and the cached builds of kube-apiserver and kubelet (first run: ~9
# minutes, one pass), then pytest. The real-node tier (tests/e2e/test_realnode.py) sets up the rest
# itself (containerd, registry, images; seconds). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/bootstrap.sh
# Format and lint (ruff, line length 100) over the whole tree: seconds, before anything slow.
.venv/bin/ruff format --check --quiet .
.venv/bin/ruff check --quiet .
bash hack/build-kube.sh kube-apiserver kubelet >/dev/null
# Two workers (pytest-xdist), each given whole files (a module's operator is shared by its tests):
# the end-to-end tests mostly wait on an API server, and two sessions, each with its own API
# server, overlap their waits. PULLWATCH_TEST_WORKERS=0 runs everything in this process.
exec .venv/bin/python -m pytest -n "${PULLWATCH_TEST_WORKERS:-2}" --dist loadfile "$@"
