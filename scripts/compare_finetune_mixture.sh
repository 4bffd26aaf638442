#!/usr/bin/env bash
# Fine-tune a dense and a Switch checkpoint on the bundled two-task classification mixture (BBC topic +
# SpamAssassin) with config/finetune_tiny_mixture.yaml through fairseq-hydra-train, then score each task's
# test split with fairseq-generate (greedy) + score_generations (accuracy). Both checkpoints must come
# from PRETRAIN_DATA (its spm.model and dict.txt).
#
#   bash scripts/compare_finetune_mixture.sh PRETRAIN_DATA DENSE_CKPT SWITCH_CKPT SWITCH_EXPERTS OUT [UPDATES]
#   bash scripts/compare_finetune_mixture.sh data-bin/pretrain_full runs/scaling_full/0_experts0/checkpoints/checkpoint_last.pt \
#       runs/scaling_full/2_experts8/checkpoints/checkpoint_last.pt 8 runs/ft_mix 600
set -euo pipefail
PRETRAIN=$1 DENSE=$(realpath "$2") SWITCH=$(realpath "$3") EXPERTS=$4 OUT=$5 UPDATES=${6:-1000}
PY=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PY")
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
DATA=$OUT/data
for t in bbc-topic spam; do
  "$PY" scripts/prepare_downstream_data.py --pretrained "$PRETRAIN" --out "$DATA/$t" --prefix "classify: " \
      "data/downstream/$t"
done
for run in dense switch; do
  if [ $run = dense ]; then CKPT=$DENSE; N=0; else CKPT=$SWITCH; N=$EXPERTS; fi
  "$BIN/fairseq-hydra-train" --config-dir config --config-name finetune_tiny_mixture \
      task.data="$DATA" model.moe_expert_count=$N checkpoint.finetune_from_model="$CKPT" \
      optimization.max_update="$UPDATES" hydra.run.dir="$OUT/$run" > "$OUT/$run.train.log" 2>&1
  echo "== $run ($N experts): peak valid $(grep -o '"valid_best_acc": "[^"]*"' "$OUT/$run.train.log" | tail -1)"
  for t in bbc-topic spam; do
    "$BIN/fairseq-generate" "$DATA/$t" --user-dir fairseq_switch --task text_to_text \
        --path "$OUT/$run/checkpoints/checkpoint_best.pt" --gen-subset test --beam 1 --max-len-a 0 --max-len-b 8 \
        --batch-size 64 --cpu > "$OUT/$run.$t.gen.out" 2> "$OUT/$run.$t.gen.log"
    echo "-- $run / $t (test)"
    "$PY" scripts/score_generations.py "$OUT/$run.$t.gen.out" --spm-model "$DATA/$t/spm.model" --metrics acc,em
  done
done
