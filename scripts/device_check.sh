#!/usr/bin/env bash
# The GPU acceptance run, one command, ~6 minutes on one GPU (docs/gpu.md):
#   install with the machine's torch -> pytest -m cuda -> layer benchmark (bf16) -> 200 updates each of
#   t5_small, switch_small and switch_small --moe-dispatch grouped (fairseq-train --bf16)
# It writes device_check.json, device_check.md (targets next to the figures), layer_bench.md and
# device_check.log under $OUT (default runs/device_check).
#
#   bash scripts/device_check.sh             # on a GPU machine: TORCH=system, offline from .whl/ if present
#   bash scripts/device_check.sh --dry-run   # the same steps on the CPU at toy size, in the CI venv (CI runs it)
#
# Options (environment): OUT, PYTHON (default python3), VENV (default $TMPDIR/fairseq-switch-venv-device),
# WHEELHOUSE (default .whl when it exists; scripts/device_wheelhouse.sh builds it), DATA.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
for a in "$@"; do
  case "$a" in
    --dry-run) DRY=1;;
    *) echo "usage: bash scripts/device_check.sh [--dry-run]" >&2; exit 2;;
  esac
done
OUT=${OUT:-runs/device_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/device_check.log"
: > "$LOG"
export PYTHONUNBUFFERED=1
if [ "$DRY" = 1 ]; then
  # CI's venv (installed by .ci/run; a no-op when its stamp matches), one thread as on CI's 2 cores
  VENV=${VENV:-.venv}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  INSTALL=(env VENV="$VENV" bash scripts/install.sh)
else
  VENV=${VENV:-${TMPDIR:-/tmp}/fairseq-switch-venv-device}
  WHEELHOUSE=${WHEELHOUSE:-$([ -d .whl ] && echo "$PWD/.whl" || true)}
  INSTALL=(env VENV="$VENV" TORCH=system PYTHON="${PYTHON:-python3}" WHEELHOUSE="$WHEELHOUSE" bash scripts/install.sh)
fi
t0=$SECONDS
if [ "${DEVICE_CHECK_INSTALL:-}" = skip ]; then  # tests/test_device_check.py: never reinstall the venv in use
  [ -x "$VENV/bin/python" ] || { echo "error: DEVICE_CHECK_INSTALL=skip but $VENV has no python" >&2; exit 1; }
  rc=0 status="skipped (DEVICE_CHECK_INSTALL=skip)"
else
  echo "[device_check] install: ${INSTALL[*]}"
  set +e
  "${INSTALL[@]}" >> "$LOG" 2>&1
  rc=$?
  set -e
  status=$([ "$rc" = 0 ] && echo ok || echo failed)
fi
secs=$((SECONDS - t0))
echo "{\"status\": \"$status\", \"exit_code\": $rc, \"seconds\": $secs}" > "$OUT/install.json"
echo "[device_check] install: $status (${secs} s)"
if [ "$rc" != 0 ]; then
  tail -5 "$LOG" >&2
  echo "error: the install failed; see $LOG" >&2
  exit 1
fi
ARGS=(--out "$OUT" --install "$OUT/install.json")
[ "$DRY" = 1 ] && ARGS+=(--dry-run)
[ -z "${DATA:-}" ] || ARGS+=(--data "$DATA")
set +e
"$VENV/bin/python" -m fairseq_switch.lab.bench.device_check "${ARGS[@]}"
rc=$?
set -e
rm -f "$OUT/install.json"  # folded into device_check.json
exit $rc
