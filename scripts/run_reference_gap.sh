#!/usr/bin/env bash
# The Switch-minus-dense gap of this project against transformers' implementation: pretrain_tiny (T5
# layout), dense and 8 experts, 500 updates, seeds 1 and 2, each pair trained by fairseq-hydra-train and
# by scripts/reference_transformers.py on the same batches from the same initial weights. 8 runs of
# about 10 minutes on one thread, JOBS at a time; finished runs are skipped. Then the report.
#
#   bash scripts/run_reference_gap.sh
# Options (environment): DATA=data-bin/pretrain_full OUT=runs/reference_gap SEEDS="1 2" MAX_UPDATE=500 JOBS=2
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data-bin/pretrain_full}
OUT=${OUT:-runs/reference_gap}
SEEDS=${SEEDS:-"1 2"}
MAX_UPDATE=${MAX_UPDATE:-500}
JOBS=${JOBS:-2}
BIN=${VENV_BIN:-.venv/bin}

if [ ! -f "$DATA/train.bin" ]; then
    echo "error: $DATA/train.bin not found; prepare it: python scripts/fetch_pretraining_corpus.py &&" \
         "python scripts/prepare_pretraining_data.py --out $DATA data-raw/pretrain" >&2
    exit 2
fi
mkdir -p "$OUT"
DATA_ABS=$(cd "$DATA" && pwd)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

ours() {  # experts seed
    local run="$OUT/ours_e$1_s$2"
    "$BIN/fairseq-hydra-train" --config-dir config --config-name pretrain_tiny task.data="$DATA_ABS" \
        model.moe_expert_count="$1" common.seed="$2" optimization.max_update="$MAX_UPDATE" \
        dataset.validate_interval_updates=100 checkpoint.no_save=true hydra.run.dir="$run" > "$run.out" 2>&1
}
hf() {  # experts seed
    local run="$OUT/hf_e$1_s$2"
    if [ -f "$run/log.jsonl" ] && grep -q seconds_per_update "$run/log.jsonl"; then return 0; fi
    "$BIN/python" scripts/reference_transformers.py --data "$DATA_ABS" --experts "$1" --seed "$2" \
        --max-update "$MAX_UPDATE" --validate-interval 100 --out "$run" --overwrite > "$run.out" 2>&1
}

jobs_list=()
for s in $SEEDS; do for e in 0 8; do
    if ! grep -qs "\"valid_num_updates\": \"$MAX_UPDATE\"" "$OUT/ours_e${e}_s$s/hydra_train.log"; then
        rm -rf "$OUT/ours_e${e}_s$s"; jobs_list+=("ours $e $s")
    fi
    jobs_list+=("hf $e $s")
done; done
for job in "${jobs_list[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
    echo "[reference-gap] $job"
    # shellcheck disable=SC2086
    $job &
done
status=0
for pid in $(jobs -p); do wait "$pid" || status=$?; done
if [ "$status" -ne 0 ]; then
    echo "error: a run failed (exit $status); see $OUT/*.out; re-run to finish the rest" >&2
    exit "$status"
fi
"$BIN/python" scripts/reference_gap_report.py "$OUT"
