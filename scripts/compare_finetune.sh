#!/usr/bin/env bash
# Fine-tune a dense and a Switch checkpoint on the same text-to-text set with the one fine-tuning recipe,
# config/finetune_tiny.yaml (fairseq-hydra-train), generate the test split with the recipe's decode, and
# score (paper Table 5 style, at CPU scale). Both checkpoints must come from PRETRAIN_DATA (its spm.model
# and dict.txt).
#
#   bash scripts/compare_finetune.sh PRETRAIN_DATA DENSE_CKPT SWITCH_CKPT SWITCH_EXPERTS OUT [PAIRS] [UPDATES]
#   bash scripts/compare_finetune.sh data-bin/pretrain_sample runs/demo/0_experts0/checkpoints/checkpoint_last.pt \
#       runs/demo/1_experts8/checkpoints/checkpoint_last.pt 8 runs/ft_headline data/downstream/bbc-headline 600
#
# PAIRS defaults to the bundled Debian summaries (long description -> synopsis); PREFIX (environment,
# default "summarize: ") is put before every input. The metric is ROUGE, with the diagnostics of
# degenerate outputs.
set -euo pipefail
PRETRAIN=$1 DENSE=$(realpath "$2") SWITCH=$(realpath "$3") EXPERTS=$4 OUT=$5 PAIRS=${6:-data/downstream/debian}
UPDATES=${7:-1000} PREFIX=${PREFIX:-"summarize: "}
PY=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PY")
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
DATA=$OUT/data
"$PY" scripts/prepare_downstream_data.py --pretrained "$PRETRAIN" --out "$DATA" --prefix "$PREFIX" "$PAIRS"
for run in dense switch; do
  if [ $run = dense ]; then CKPT=$DENSE; N=0; else CKPT=$SWITCH; N=$EXPERTS; fi
  "$BIN/fairseq-hydra-train" --config-dir config --config-name finetune_tiny \
      task.data="$DATA" model.moe_expert_count=$N checkpoint.finetune_from_model="$CKPT" \
      optimization.max_update="$UPDATES" common.cpu=true hydra.run.dir="$OUT/$run" > "$OUT/$run.train.log" 2>&1
  # the recipe's decode: task.eval_generate_args of config/finetune_tiny.yaml
  "$BIN/fairseq-generate" "$DATA" --user-dir fairseq_switch --task text_to_text \
      --path "$OUT/$run/checkpoints/checkpoint_best.pt" --gen-subset test --beam 1 --max-len-a 0 --max-len-b 128 \
      --batch-size 64 --cpu > "$OUT/$run.gen.out" 2> "$OUT/$run.gen.log"
  echo "== $run ($N experts): peak valid ROUGE-2 $(grep -o '"valid_best_rouge2": "[^"]*"' "$OUT/$run.train.log" | tail -1)"
  "$PY" scripts/score_generations.py "$OUT/$run.gen.out" --spm-model "$DATA/spm.model"
done
