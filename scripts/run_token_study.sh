#!/usr/bin/env bash
# Where Switch starts to pay on a 2-core CPU (docs/results/token_study.md): dense and 8 experts
# (pretrain_tiny, T5 layout) trained side by side on the technical-documentation corpus, one thread
# each, validated every 500 updates.
#
#   fairseq-switch-fetch technical          # once: the 50M+-token corpus into data-bin/technical
#   bash scripts/run_token_study.sh         # both models to 10,000 updates, then the report
#
# Re-running the same command resumes both runs from their last save (every 500 updates), so the
# study can be spread over several sittings or survive a kill. Options (environment):
#   DATA=data-bin/technical OUT=runs/token_study MAX_UPDATE=10000 SEED=1 EXPERTS="0 8"
# An arm N@CF trains N experts at capacity factor CF (the paper's Table 1), in e<N>_cf<CF>_s<SEED>:
#   EXPERTS="8@2.0" bash scripts/run_token_study.sh     # the third arm, beside the two above
# The report covers every run of this seed under OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data-bin/technical}
OUT=${OUT:-runs/token_study}
MAX_UPDATE=${MAX_UPDATE:-10000}
SEED=${SEED:-1}
EXPERTS=${EXPERTS:-"0 8"}
BIN=${VENV_BIN:-.venv/bin}

if [ ! -f "$DATA/train.bin" ]; then
    echo "error: $DATA/train.bin not found; prepare the corpus first: fairseq-switch-fetch technical" >&2
    exit 2
fi
mkdir -p "$OUT"
DATA_ABS=$(cd "$DATA" && pwd)
for arm in $EXPERTS; do  # all checked before any run starts
    if ! [[ "$arm" =~ ^[0-9]+(@[0-9]*\.?[0-9]+)?$ ]]; then
        echo "error: EXPERTS entry '$arm' is not N or N@CAPACITY_FACTOR (e.g. 8 or 8@2.0)" >&2
        exit 2
    fi
done
runs=()
for arm in $EXPERTS; do
    e=${arm%@*}
    extra=()
    run="$OUT/e${e}_s${SEED}"
    if [ "$arm" != "$e" ]; then
        extra=("model.moe_capacity_factor=${arm#*@}")
        run="$OUT/e${e}_cf${arm#*@}_s${SEED}"
    fi
    runs+=("$run")
    echo "[study] $run: $e experts${extra[*]:+ (${extra[*]})}, seed $SEED, to $MAX_UPDATE updates (log: $run.out)"
    # One thread per model: the two runs share the two cores evenly.
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$BIN/fairseq-hydra-train" --config-dir config \
        --config-name pretrain_tiny \
        task.data="$DATA_ABS" model.moe_expert_count="$e" "${extra[@]}" common.seed="$SEED" \
        optimization.max_update="$MAX_UPDATE" common.log_interval=100 \
        dataset.validate_interval_updates=500 checkpoint.save_interval_updates=500 \
        checkpoint.keep_interval_updates=1 hydra.run.dir="$run" >> "$run.out" 2>&1 &
done
status=0
wait || status=$?
if [ "$status" -ne 0 ]; then
    echo "error: a training run failed (exit $status); see ${runs[*]/%/.out}; re-run to resume" >&2
    exit "$status"
fi
all_runs=()
for run in "$OUT"/e*_s"$SEED"; do [ -f "$run/hydra_train.log" ] && all_runs+=("$run"); done
"$BIN/python" scripts/scaling_report.py "${all_runs[@]}" --out "$OUT/report" --title "Dense vs Switch on the technical corpus"
