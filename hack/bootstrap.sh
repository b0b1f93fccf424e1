# Sourced by hack/test.sh and hack/demo.sh: a project venv in .venv with pullwatch installed
# (a real `pip install .`, as users get it) plus the test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# A venv whose pip is missing (python3-venv was not installed when it was made) is made again.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    source hack/lib.sh
    ensure_packages python3-venv
  fi
  rm -rf .venv
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
# setuptools stages the package in build/ and keeps what is there: a module deleted or moved in the
# source would still be installed from an earlier build. Start each install from the source alone.
rm -rf build
.venv/bin/python -m pip install --quiet --disable-pip-version-check '.[test]' 2> >(grep -v "^WARNING: Location" >&2)
