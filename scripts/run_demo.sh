#!/usr/bin/env bash
# README command 1: install the pinned stack into .venv if needed, then pretrain switch_tiny
# (and its dense twin t5_tiny) on the bundled corpus and print their validation quality.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python scripts/demo.py "$@"
