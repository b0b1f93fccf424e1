#!/usr/bin/env bash
# The whole test suite on a fresh machine: venv and packages, etcd/kubectl and the cached
# kube-apiserver build (first run: a few minutes), then pytest. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/bootstrap.sh
bash hack/build-kube.sh kube-apiserver >/dev/null
exec .venv/bin/python -m pytest "$@"
