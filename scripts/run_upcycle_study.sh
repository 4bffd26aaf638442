#!/usr/bin/env bash
# What sparse upcycling buys (docs/upcycling.md): one dense checkpoint (pretrain_tiny, T5 layout) is
# continued densely and, upcycled to 8 experts, with each start of docs/upcycling.md, on the same
# batches, one thread per run, at most PARALLEL runs at once; then the report (curves, gaps, the
# initial jump, time per update).
#
#   bash scripts/run_token_study.sh          # once: the dense run to 2,000 updates (runs/token_study/e0_s1)
#   bash scripts/run_upcycle_study.sh        # 2,000 more updates per run, then the report
#
# Re-running the same command resumes every run from its last save (every VALID updates). The short
# comparison committed in data/upcycle_study/ was run with
#   DENSE=runs/upcycle/dense300/checkpoints/checkpoint_last.pt DATA=data-bin/pretrain_sample \
#   OUT=runs/upcycle/short UPDATES=300 VALID=100 WARMUP=100 bash scripts/run_upcycle_study.sh
# (VARIANTS="dense plain gate nodrop gate_nodrop st_nodrop"). Variants: dense (the dense continuation),
# plain (the plain copy), gate (--moe-gate-warmup-updates WARMUP), nodrop (--moe-no-drop-updates
# WARMUP), gate_nodrop (both), st_nodrop (the gate held at 1 for the whole run, no drops for WARMUP).
# Options (environment): DENSE DATA OUT UPDATES VALID EXPERTS WARMUP SEED PARALLEL VARIANTS
set -euo pipefail
cd "$(dirname "$0")/.."
DENSE=${DENSE:-runs/token_study/e0_s1/checkpoints/checkpoint_last.pt}
DATA=${DATA:-data-bin/technical}
OUT=${OUT:-runs/upcycle_study}
UPDATES=${UPDATES:-2000}
VALID=${VALID:-250}
EXPERTS=${EXPERTS:-8}
WARMUP=${WARMUP:-100}
SEED=${SEED:-1}
PARALLEL=${PARALLEL:-2}
VARIANTS=${VARIANTS:-"dense gate_nodrop plain nodrop"}  # the default start beside dense first
BIN=${VENV_BIN:-.venv/bin}
ST_FOREVER=1000000000

if [ ! -f "$DENSE" ]; then
    echo "error: the dense checkpoint $DENSE does not exist; train it first (bash scripts/run_token_study.sh," \
         "or set DENSE=...)" >&2
    exit 2
fi
if [ ! -f "$DATA/train.bin" ]; then
    echo "error: $DATA/train.bin not found; prepare the corpus first: fairseq-switch-fetch technical" >&2
    exit 2
fi
mkdir -p "$OUT"
DATA_ABS=$(cd "$DATA" && pwd)
START="$OUT/upcycled/checkpoint.pt"
if [ ! -f "$START" ]; then  # one start for every variant: the same router init; the options are training flags
    "$BIN/python" scripts/upcycle_checkpoint.py "$DENSE" "$OUT/upcycled" --experts "$EXPERTS" --seed "$SEED"
fi

flags_of() {
    case "$1" in
        dense) echo "model.moe_expert_count=0 checkpoint.finetune_from_model=$(realpath "$DENSE")" ;;
        plain) echo "model.moe_expert_count=$EXPERTS" ;;
        gate) echo "model.moe_expert_count=$EXPERTS +model.moe_gate_warmup_updates=$WARMUP" ;;
        nodrop) echo "model.moe_expert_count=$EXPERTS +model.moe_no_drop_updates=$WARMUP" ;;
        gate_nodrop) echo "model.moe_expert_count=$EXPERTS +model.moe_gate_warmup_updates=$WARMUP" \
                          "+model.moe_no_drop_updates=$WARMUP" ;;
        # the combine weight stays p / stop_gradient(p) = 1 for the whole run (it would reach p at 10^9)
        st_nodrop) echo "model.moe_expert_count=$EXPERTS +model.moe_gate_warmup_updates=$ST_FOREVER" \
                        "+model.moe_no_drop_updates=$WARMUP" ;;
        *) echo "error: unknown variant $1 (dense plain gate nodrop gate_nodrop st_nodrop)" >&2; return 2 ;;
    esac
}

train() {
    local v=$1 run="$OUT/$1" flags
    flags=$(flags_of "$v")
    [ "$v" = dense ] || flags="$flags checkpoint.finetune_from_model=$(realpath "$START")"
    mkdir -p "$run"
    if [ ! -s "$run/validate0.log" ]; then  # the start itself (update 0), as the first validation sees it
        local path=$START overrides="{}"
        [ "$v" = dense ] && path=$DENSE
        case "$v" in gate* | st_*) overrides="{'moe_gate_warmup_updates': $WARMUP}" ;; esac
        OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 5 "$BIN/fairseq-validate" "$DATA_ABS" --user-dir fairseq_switch \
            --task span_corruption --input-length 128 --path "$path" --model-overrides "$overrides" \
            --valid-subset valid --max-tokens 4096 --cpu --log-format json > "$run/validate0.log" 2>&1
    fi
    echo "[upcycle study] $run: $flags, $UPDATES updates (log: $run.out)"
    # shellcheck disable=SC2086  # flags are separate Hydra overrides
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 5 "$BIN/fairseq-hydra-train" --config-dir config \
        --config-name pretrain_tiny task.data="$DATA_ABS" common.seed="$SEED" $flags \
        optimization.max_update="$UPDATES" common.log_interval=10 dataset.validate_interval_updates="$VALID" \
        checkpoint.save_interval_updates="$VALID" checkpoint.keep_interval_updates=1 \
        hydra.run.dir="$run" >> "$run.out" 2>&1
}

status=0
running=0
for v in $VARIANTS; do
    flags_of "$v" > /dev/null
    if [ "$running" -ge "$PARALLEL" ]; then
        wait -n || status=$?
        running=$((running - 1))
    fi
    train "$v" &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
    wait -n || status=$?
    running=$((running - 1))
done
if [ "$status" -ne 0 ]; then
    echo "error: a training run failed (exit $status); see $OUT/*.out; re-run to resume" >&2
    exit "$status"
fi
runs=()
for v in $VARIANTS; do runs+=("$v=$OUT/$v"); done
"$BIN/python" -m fairseq_switch.lab.reports.upcycle_study "${runs[@]}" --out "$OUT/report" \
    --title "Upcycled ($EXPERTS experts) vs dense, from $(basename "$(dirname "$(dirname "$DENSE")")")"
