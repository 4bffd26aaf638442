#!/usr/bin/env bash
# Installs the pinned fairseq-switch stack into .venv (idempotent).
# Both README commands (scripts/run_demo.sh and scripts/test.sh) call this.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
STAMP="$VENV/.fairseq_switch_installed"
STACK_HASH=$(cat scripts/install.sh setup.py | sha1sum | cut -c1-12)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STACK_HASH" ]; then
  exit 0
fi
command -v "$PY" >/dev/null || { echo "error: $PY not found; fairseq-switch needs Python 3.11 (set PYTHON=...)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
export PIP_PROGRESS_BAR=off
# This machine's pip.conf names local indexes that may be absent; hide that noise, keep real errors.
pip_install() { $PIP install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
echo "[install] torch 2.13.0 (CPU wheel; a CUDA machine can pre-install its own 2.13.0 build)"
pip_install "torch==2.13.0"
echo "[install] fairseq's real dependencies, fairscale, tooling"
pip_install "hydra-core==1.3.2" "omegaconf==2.3.0" cffi cython "numpy<2.3" regex sacrebleu tqdm \
  bitarray scikit-learn packaging "fairscale==0.4.13" sentencepiece rouge-score tensorboardX pytest "pytest-xdist==3.8.0" "execnet==2.1.2" "ruff==0.16.9" \
  "matplotlib==3.10.*" "setuptools<81" wheel
# matplotlib: PNG plots of scripts/scaling_report.py. ruff: the lint step of .ci/run (ruff.toml).
# pytest-xdist: scripts/test.sh runs the test files on two processes (CI has 2 cores and a 25-minute limit).
echo "[install] safetensors (checkpoint conversion) and transformers (test reference models; needs no torch of its own)"
pip_install "safetensors==0.8.0" "transformers==5.25.0"
# fairseq-fixed declares torchaudio, which has no release matching torch 2.13: install without deps.
# No build isolation: an isolated build env would pull an unpinned (CUDA) torch.
echo "[install] fairseq-fixed 0.12.3.1 (first build compiles extensions, ~3 min; pip caches it)"
pip_install --no-deps --no-build-isolation "fairseq-fixed==0.12.3.1"
echo "[install] fairseq_switch (editable)"
pip_install --no-deps --no-build-isolation -e .
echo "$STACK_HASH" > "$STAMP"
echo "[install] done: $VENV"
