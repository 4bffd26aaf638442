#!/usr/bin/env bash
# README command 2: install the pinned stack into .venv if needed, then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -q "$@"
