#!/usr/bin/env bash
# Installs the fairseq-switch stack into .venv (idempotent).
# Both README commands (scripts/run_demo.sh and scripts/test.sh) call this.
#
#   PYTHON=python3.X   interpreter for the venv; Python 3.10-3.12 (default python3.11)
#   TORCH=system       use the torch that PYTHON already has (a GPU machine's CUDA build): the venv sees
#                      PYTHON's packages (--system-site-packages), nothing pins torch, and a torch older
#                      than $MIN_TORCH is refused. Default: the pinned torch 2.13.0 (CPU wheel on disk for 3.11).
#   WHEELHOUSE=dir     install offline from the wheels in dir (a machine without a registry;
#                      scripts/device_wheelhouse.sh builds one)
#   VENV=dir           where to install (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
TORCH=${TORCH:-pinned}
# The oldest torch this project has run its tests on (2.11: the GPU machines' build, and a CPU run here).
MIN_TORCH=2.11
STAMP="$VENV/.fairseq_switch_installed"
STACK_HASH=$( (cat scripts/install.sh setup.py; [ "$TORCH" = pinned ] || echo "torch=$TORCH") | sha1sum | cut -c1-12)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STACK_HASH" ]; then
  exit 0
fi
case "$TORCH" in pinned|system) ;; *) echo "error: TORCH=$TORCH: use TORCH=system (the torch PYTHON has) or leave it unset (pinned 2.13.0)" >&2; exit 1;; esac
command -v "$PY" >/dev/null || { echo "error: $PY not found; fairseq-switch needs Python 3.10-3.12 (set PYTHON=...)" >&2; exit 1; }
PYV=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$PYV" in
  3.10|3.11|3.12) ;;
  *) echo "error: $PY is Python $PYV; fairseq-switch supports Python 3.10-3.12, the versions its stack (fairseq 0.12, fairscale 0.4.13) is checked on" >&2; exit 1;;
esac
if [ "$TORCH" = system ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    # Without ensurepip (a distribution's python minus its venv package) pip comes from PYTHON's packages.
    "$PY" -m venv --system-site-packages "$VENV" 2>/dev/null || "$PY" -m venv --system-site-packages --without-pip "$VENV"
    # A venv made from a venv's python (a GPU image's /opt/torch/.venv) sees the base interpreter's packages,
    # not that venv's: a .pth file adds PYTHON's own site-packages after the new venv's.
    "$PY" -c 'import site, sys; sys.prefix != sys.base_prefix and print("\n".join(site.getsitepackages()))' \
      > "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_fairseq_switch_system.pth"
  fi
  # One line either way: the venv's python sees the system torch or it does not.
  "$VENV/bin/python" - "$MIN_TORCH" <<'EOF' || exit 1
import sys
try:
    import torch
except ImportError as e:
    sys.exit(f"error: TORCH=system, but {sys.executable} cannot import torch ({e}); install torch >= {sys.argv[1]} for it, or leave TORCH unset")
have = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
need = tuple(int(p) for p in sys.argv[1].split("."))
if have < need:
    sys.exit(f"error: TORCH=system found torch {torch.__version__}; fairseq-switch needs torch >= {sys.argv[1]} (the oldest it is tested on)")
print(f"[install] system torch {torch.__version__} (cuda {torch.version.cuda}, {torch.__file__.rsplit('/torch/', 1)[0]})")
EOF
else
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
export PIP_PROGRESS_BAR=off
FROM=()
[ -z "${WHEELHOUSE:-}" ] || FROM=(--no-index --find-links "$WHEELHOUSE")
# This machine's pip.conf names local indexes that may be absent; hide that noise, keep real errors.
pip_install() { $PIP install -q "${FROM[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
if [ "$TORCH" = pinned ]; then
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
else
  # The machine's own numpy, transformers, pytest etc. stay when they fit: only what it lacks is added.
  # (pip sees the system packages; the CI pins above are for reproducing CI, not needed to run.)
  echo "[install] fairseq's real dependencies, fairscale, test tooling (keeping the machine's packages)"
  pip_install "hydra-core==1.3.2" "omegaconf==2.3.0" cython numpy regex sacrebleu tqdm bitarray scikit-learn packaging \
    "fairscale==0.4.13" sentencepiece rouge-score tensorboardX pytest safetensors "transformers>=5" "setuptools<81" wheel
fi
# fairseq-fixed declares torchaudio, which has no release matching torch 2.13: install without deps.
# No build isolation: an isolated build env would pull an unpinned (CUDA) torch.
echo "[install] fairseq-fixed 0.12.3.1 (first build compiles extensions, ~3 min; pip caches it)"
pip_install --no-deps --no-build-isolation "fairseq-fixed==0.12.3.1"
echo "[install] fairseq_switch (editable)"
pip_install --no-deps --no-build-isolation -e .
echo "$STACK_HASH" > "$STAMP"
echo "[install] done: $VENV"
