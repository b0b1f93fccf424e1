#!/usr/bin/env bash
# The demo: a local API server (never your real cluster), pullwatch running as its
# ServiceAccount, a few kubelet Events replayed, the Findings printed, everything stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/bootstrap.sh
bash hack/build-kube.sh kube-apiserver >/dev/null
exec .venv/bin/python hack/demo.py "$@"
