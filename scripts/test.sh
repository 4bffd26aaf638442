#!/usr/bin/env bash
# README command 2: install the pinned stack into .venv if needed, then run the tests.
# The test files run on two processes (pytest-xdist; one file stays in one process, so its fixtures
# are shared as before); TEST_WORKERS=0 runs them in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
