"""The checkpoint files of a pretraining run, for the tools that score every checkpoint of a sweep.

A command-line argument is a checkpoint file or a run folder; a run folder stands for every
checkpoint_<epoch>_<update>.pt and checkpoint_last.pt in it or in its checkpoints/ subfolder.
"""

import argparse
import glob
import os
import re
from typing import List

_UPDATE_RE = re.compile(r"checkpoint_\d+_(\d+)\.pt$")


def checkpoints_of(target: str) -> List[str]:
    """The checkpoint files a command-line argument stands for, sorted by update (from the file name)."""
    if os.path.isfile(target):
        return [target]
    if not os.path.isdir(target):
        raise SystemExit(f"error: {target}: no such checkpoint file or run folder")
    folder = os.path.join(target, "checkpoints") if os.path.isdir(os.path.join(target, "checkpoints")) else target
    found = sorted(glob.glob(os.path.join(folder, "checkpoint_*_*.pt")),
                   key=lambda p: int(_UPDATE_RE.search(p).group(1)) if _UPDATE_RE.search(p) else -1)
    found = [p for p in found if _UPDATE_RE.search(p)]
    last = os.path.join(folder, "checkpoint_last.pt")
    if os.path.isfile(last):
        found.append(last)  # skipped later if an interval checkpoint holds the same update
    if not found:
        raise SystemExit(f"error: {folder} holds no checkpoint_<epoch>_<update>.pt or checkpoint_last.pt; save "
                         f"interval checkpoints with checkpoint.save_interval_updates and keep_interval_updates=-1")
    return found


def run_dir_of(ckpt: str) -> str:
    """The run a checkpoint belongs to: the folder above checkpoints/, else the checkpoint's folder."""
    folder = os.path.dirname(os.path.abspath(ckpt))
    return os.path.dirname(folder) if os.path.basename(folder) == "checkpoints" else folder


def checkpoints_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose positional arguments are checkpoint files or run folders (see `checkpoints_of`);
    its description is the first paragraph of `doc`."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoint files or run folders")
    return p
