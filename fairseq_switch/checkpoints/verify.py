"""fairseq-switch-verify / scripts/verify_checkpoint.py: which saves in a --save-dir are complete."""

import argparse
import os
import sys
from typing import List, Optional

from .manifest import leftover_temp_files, list_saves


VERIFY_DESCRIPTION = "List the saves in a checkpoint folder and say which are complete."


def main(argv: Optional[List[str]] = None) -> int:
    """scripts/verify_checkpoint.py FOLDER: for each save (a main file, its -experts-rank{r}.pt files and its
    manifest), newest first: the update, the epoch, its files and size, and `complete` or `BROKEN: <why>`.
    Only headers are read (tensors stay on disk), so it is quick on large saves. Exit status: 0 when the
    newest save is complete (what a plain resume reads, or falls back from), 1 when it is broken, 2 for
    a bad folder."""
    ap = argparse.ArgumentParser(description=VERIFY_DESCRIPTION)
    ap.add_argument("folder", help="a --save-dir of fairseq-train")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.folder):
        print(f"verify_checkpoint: error: {args.folder} is not a folder (give the run's --save-dir)", file=sys.stderr)
        return 2
    saves = list_saves(args.folder)
    if not saves:
        print(f"verify_checkpoint: error: {args.folder} holds no checkpoint*.pt", file=sys.stderr)
        return 2
    for s in saves:
        upd = "?" if s.num_updates is None else s.num_updates
        state = "complete" if s.complete else f"BROKEN: {s.problem}"
        print(f"{os.path.basename(s.path):40s} update {upd:>7}  epoch {s.epoch if s.epoch is not None else '?':>3}  "
              f"{len(s.files)} file(s) {s.bytes / 2**20:8.1f} MiB  {state}")
    for t in leftover_temp_files(args.folder):
        print(f"{os.path.basename(t):40s} an interrupted write (never a complete file; safe to delete)")
    good = [s for s in saves if s.complete]
    newest = saves[0]
    if newest.complete:
        print(f"newest save {os.path.basename(newest.path)} is complete")
        return 0
    tip = f"; resuming falls back to {good[0].path}" if good else "; no save here is complete"
    print(f"newest save {os.path.basename(newest.path)} is BROKEN{tip}")
    return 1
