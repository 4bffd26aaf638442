#!/usr/bin/env bash
# Builds .whl/: the wheels scripts/install.sh needs on a GPU machine that has Python 3.12 and torch but
# reaches no package registry (WHEELHOUSE=.whl, used by scripts/device_check.sh). Run here, once, before
# the device call, and carry .whl with it (~24 MB; listed in .git/info/exclude, never committed).
#
#   PY312=/path/to/python3.12 bash scripts/device_wheelhouse.sh
#
# PY312 must be a Python 3.12 with torch, cython and numpy (fairseq-fixed compiles its extensions
# against them): e.g. a venv made by `PYTHON=python3.12 TORCH=system bash scripts/install.sh`.
# What the GPU image already has (torch, numpy, transformers, sacrebleu, scikit-learn, pytest, ...)
# is not fetched; see docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY312=${PY312:?set PY312 to a Python 3.12 that has torch, cython and numpy}
DEST=${WHEELHOUSE:-.whl}
mkdir -p "$DEST"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PIP=(python3 -m pip --disable-pip-version-check)
echo "[wheelhouse] cp312 binary and pure-Python wheels"
"${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$DEST" \
  "hydra-core==1.3.2" "omegaconf==2.3.0" "bitarray==3.12.3" "nltk==3.10.4" "tensorboardX==2.6.5" "setuptools==80.10.2" "six==1.17.0" "defusedxml==0.7.1"
echo "[wheelhouse] pure-Python packages published as sources only"
"${PIP[@]}" wheel -q --no-deps -w "$DEST" "antlr4-python3-runtime==4.9.3" "fairscale==0.4.13" "rouge-score==0.1.2"
echo "[wheelhouse] fairseq-fixed 0.12.3.1 for cp312 (compiles its extensions, a few minutes)"
"$PY312" -m pip --disable-pip-version-check wheel -q --no-deps --no-build-isolation -w "$DEST" "fairseq-fixed==0.12.3.1"
ls -la "$DEST"
du -sh "$DEST"
