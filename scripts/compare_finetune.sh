#!/usr/bin/env bash
# Fine-tune a dense and a Switch checkpoint on the same text-to-text set, generate, score (paper Table 5
# style, at CPU scale). Both checkpoints must come from the same pretraining data (its spm.model, dict.txt).
#
#   bash scripts/compare_finetune.sh PRETRAIN_DATA DENSE_CKPT SWITCH_CKPT SWITCH_EXPERTS OUT [PAIRS] [UPDATES]
#   bash scripts/compare_finetune.sh data-bin/pretrain_full runs/scaling_full/0_experts0/checkpoints/checkpoint_last.pt \
#       runs/scaling_full/2_experts8/checkpoints/checkpoint_last.pt 8 runs/ft_debian
#
# PAIRS defaults to the bundled Debian summaries (long description -> synopsis); the metric is ROUGE.
set -euo pipefail
PRETRAIN=$1 DENSE=$2 SWITCH=$3 EXPERTS=$4 OUT=$5 PAIRS=${6:-data/downstream/debian} UPDATES=${7:-600}
PY=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PY")
DATA=$OUT/data
"$PY" scripts/prepare_downstream_data.py --pretrained "$PRETRAIN" --out "$DATA" --prefix "summarize: " \
    --max-input-tokens 128 --max-target-tokens 32 "$PAIRS"
for run in dense switch; do
  if [ $run = dense ]; then CKPT=$DENSE; N=0; else CKPT=$SWITCH; N=$EXPERTS; fi
  "$BIN/fairseq-train" "$DATA" --user-dir fairseq_switch --task text_to_text --arch switch_tiny \
      --moe-expert-count $N --finetune-from-model "$CKPT" --criterion switch_cross_entropy \
      --optimizer adam --lr 1e-3 --lr-scheduler inverse_sqrt --warmup-updates 50 --max-tokens 4096 \
      --max-update "$UPDATES" --eval-metric rouge --validate-interval-updates 200 \
      --best-checkpoint-metric rouge2 --maximize-best-checkpoint-metric --no-epoch-checkpoints \
      --save-interval-updates 200 --keep-interval-updates 1 \
      --save-dir "$OUT/$run" --log-format json --log-interval 100 --seed 1 --cpu > "$OUT/$run.train.log" 2>&1
  "$BIN/fairseq-generate" "$DATA" --user-dir fairseq_switch --task text_to_text --path "$OUT/$run/checkpoint_best.pt" \
      --gen-subset test --beam 4 --max-len-b 32 --batch-size 64 --cpu > "$OUT/$run.gen.out" 2> "$OUT/$run.gen.log"
  echo "== $run ($N experts): peak valid ROUGE-2 $(grep -o '"valid_best_rouge2": "[^"]*"' "$OUT/$run.train.log" | tail -1)"
  "$PY" scripts/score_generations.py "$OUT/$run.gen.out" --spm-model "$DATA/spm.model"
done
