"""Convert checkpoints between transformers' T5 / SwitchTransformers and fairseq-switch (T5 layout).

    # a transformers folder (config.json, model.safetensors or pytorch_model.bin, spiece.model) -> fairseq
    python scripts/convert_checkpoint.py to-fairseq google-switch-base-8/ fs-switch-base-8/ [--world-size 8]
    fairseq-train <data> --user-dir fairseq_switch --task text_to_text --arch switch_transformer \\
        --finetune-from-model fs-switch-base-8/checkpoint.pt <the flags in fs-switch-base-8/conversion.json> ...

    # a fairseq-switch checkpoint (plain or expert-parallel) -> a transformers folder
    python scripts/convert_checkpoint.py to-transformers checkpoints/checkpoint_best.pt hf-out/ [--spm-model spm.model]

to-fairseq writes checkpoint.pt (+ checkpoint-experts-rank{r}.pt with --world-size), dict.txt (fairseq ids:
data for fine-tuning is prepared with `scripts/prepare_downstream_data.py --pretrained <out>`; its copies
dict.input.txt, dict.target.txt make the folder the checkpoint's own data folder), spm.model and
conversion.json; `SwitchTransformerModel.from_pretrained(out).sample([...])` generates text from it.
Peak memory is about the largest output file; --world-size W keeps it near 1/W of the experts.
"""

import argparse
import os
import sys
from typing import List, Optional

from . import fairseq_to_transformers, transformers_to_fairseq


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="convert_checkpoint", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="direction", required=True)
    a = sub.add_parser("to-fairseq", help="transformers folder -> fairseq-switch checkpoint folder")
    a.add_argument("src", help="transformers model folder")
    a.add_argument("out", help="output folder (checkpoint.pt, dict.txt, spm.model, conversion.json)")
    a.add_argument("--world-size", type=int, default=1,
                   help="write the expert-sharded save of this many expert-parallel ranks (default 1: one file)")
    a.add_argument("--spm-model", help="the T5 SentencePiece model, if the folder has no spiece.model")
    a.add_argument("--moe-capacity-factor", type=float, help="training capacity factor stored in the cfg "
                   "(default fairseq-switch's 1.25)")
    a.add_argument("--moe-eval-capacity-factor", type=float, help="eval capacity factor stored in the cfg "
                   "(default 2.0), used only with --moe-capacity-per-sequence 0")
    a.add_argument("--moe-capacity-per-sequence", type=int, help="slots per expert per sequence in eval and "
                   "generation (default: the source's expert_capacity, so the model drops what transformers drops; "
                   "0: the per-batch eval factor instead)")
    a.add_argument("--overwrite", action="store_true", help="replace an earlier conversion in OUT")
    b = sub.add_parser("to-transformers", help="fairseq-switch checkpoint (T5 layout) -> transformers folder")
    b.add_argument("checkpoint", help="checkpoint file (its -experts-rank*.pt files are read from next to it)")
    b.add_argument("out", help="output folder (config.json, model.safetensors, spiece.model)")
    b.add_argument("--spm-model", help="the T5 SentencePiece model (default: spm.model next to the checkpoint)")
    b.add_argument("--extra-ids", type=int, help="sentinels after the SentencePiece pieces (default: counted in "
                   "dict.txt next to the checkpoint, else 100)")
    b.add_argument("--expert-capacity", type=int, help="transformers' expert_capacity for Switch models (default: "
                   "the value recorded when the checkpoint was converted from transformers, else 64)")
    b.add_argument("--max-shard-size", help="split weight files above this size, e.g. 2GB (default: one "
                   "safetensors file per fairseq file)")
    b.add_argument("--overwrite", action="store_true", help="replace an earlier conversion in OUT")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """scripts/convert_checkpoint.py: exit status 0, or 2 with a one-line error."""
    args = parse_args(argv)
    if os.path.lexists(args.out) and not os.path.isdir(args.out):  # found before minutes of reading the model
        print(f"convert_checkpoint: error: {args.out} is a file, not a folder: give a folder for the outputs (the "
              f"file was left untouched)", file=sys.stderr)
        return 2
    try:
        if args.direction == "to-fairseq":
            transformers_to_fairseq(args.src, args.out, world_size=args.world_size, spm_model=args.spm_model,
                                    capacity_factor=args.moe_capacity_factor,
                                    eval_capacity_factor=args.moe_eval_capacity_factor,
                                    capacity_per_sequence=args.moe_capacity_per_sequence, overwrite=args.overwrite)
        else:
            fairseq_to_transformers(args.checkpoint, args.out, spm_model=args.spm_model,
                                    expert_capacity=args.expert_capacity, max_shard_size=args.max_shard_size,
                                    extra_ids=args.extra_ids, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError) as e:
        print(f"convert_checkpoint: error: {e}", file=sys.stderr)
        return 2
    return 0
