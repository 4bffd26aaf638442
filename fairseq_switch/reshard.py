"""Convert an expert-parallel checkpoint written by W ranks into one for W' ranks (any W, W' whose
expert count divides), optimizer state included, so training resumes after resharding.

    python scripts/reshard_checkpoint.py checkpoints/checkpoint_last.pt consolidated.pt --world-size 1
    python scripts/reshard_checkpoint.py checkpoints/checkpoint_last.pt ep4/checkpoint_last.pt --world-size 4

--world-size 1 writes one plain fairseq checkpoint with every expert, which fairseq-generate and
fine-tuning load on one device. For W' > 1 it writes OUT.pt (shared state and rank 0's experts) and
OUT-experts-rank{r}.pt for the other ranks holding distinct experts. Training and fairseq-generate also
reshard on load; this script is for moving checkpoints around (one file for sharing, fewer files for
archiving) and for checking a save is complete.
"""

import argparse
import os
import sys
from typing import List, Optional

from .checkpoints import SavedCheckpoint, files_of, write_resharded
from .distributed import check_expert_count
from .file_io import load_torch


def main(argv: Optional[List[str]] = None) -> int:
    """scripts/reshard_checkpoint.py: exit status 0, or 2 with a one-line error."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="main checkpoint file (checkpoint_X.pt; its -experts-rank*.pt files are found "
                                  "next to it)")
    ap.add_argument("output", help="main output file (must end in .pt); shards are written next to it")
    ap.add_argument("--world-size", type=int, required=True, help="number of ranks the output is for (1: one file)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = ap.parse_args(argv)

    def fail(msg: str) -> int:
        print(f"reshard_checkpoint: error: {msg}", file=sys.stderr)
        return 2

    if not os.path.isfile(args.input):
        return fail(f"{args.input} does not exist")
    if not args.output.endswith(".pt"):
        return fail(f"the output path must end in .pt, got {args.output}")
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        return fail("write to a new path: resharding in place could leave a mix of old and new files")
    if args.world_size < 1:
        return fail(f"--world-size must be >= 1, got {args.world_size}")
    try:
        saved = SavedCheckpoint(args.input, load_torch(args.input))
    except (ValueError, FileNotFoundError) as e:
        return fail(str(e))
    n = saved.num_experts
    if not n:
        return fail(f"{args.input} has no Switch layers (a dense model): there is nothing to reshard")
    try:
        check_expert_count(n, args.world_size)
    except ValueError:
        ok = sorted({d for d in range(1, n + 1) if n % d == 0} | {n * k for k in (2, 4)})
        return fail(f"cannot split {n} experts over {args.world_size} ranks: --world-size must divide the expert "
                    f"count or be a multiple of it, e.g. {', '.join(map(str, ok))}")
    n_out = files_of(saved.num_experts, args.world_size)
    outputs = [args.output] + [f"{args.output[:-3]}-experts-rank{r}.pt" for r in range(1, n_out)]
    existing = [p for p in outputs if os.path.exists(p)]
    if existing and not args.overwrite:
        return fail(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    written = write_resharded(saved, args.output, args.world_size)
    optim = "with" if saved.optimizer_template is not None and saved.param_names is not None else "WITHOUT"
    print(
        f"{args.input}: {saved.num_experts} experts x {len(saved.switch_layers)} Switch layers, "
        f"{saved.world_size} rank(s), {len(saved.files())} file(s)"
    )
    per = max(saved.num_experts // args.world_size, 1)
    print(f"wrote {len(written)} file(s) for {args.world_size} rank(s), {per} expert(s) per rank per layer, "
          f"{optim} optimizer state:")
    for p in written:
        print(f"  {p}  ({os.path.getsize(p) / 2**20:.1f} MiB)")
    return 0
