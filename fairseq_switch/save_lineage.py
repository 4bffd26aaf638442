"""Which save a resume reads: an explicit --restore-file, and which saves in a folder continue one another.

Every save records its parent: the save id of the checkpoint its run continued (the one it resumed from,
or this run's previous save; None for a fresh start). Rolling back (`--restore-file checkpoint_1_6.pt`)
and training on starts a branch: its saves have checkpoint_1_6's id as an ancestor, and the abandoned
checkpoint_1_9, checkpoint_1_12 do not descend from the new checkpoint_last. A plain resume follows the
branch of checkpoint_last (`branch_of`), never a newer save of another branch.
"""

import logging
import os
from typing import Dict, Optional, Set

logger = logging.getLogger(__name__)


def _ancestors(save_id: str, parents: Dict[str, Optional[str]]) -> Set[str]:
    out: Set[str] = set()
    cur = parents.get(save_id)
    while cur is not None and cur not in out:
        out.add(cur)
        cur = parents.get(cur)  # a pruned save ends the walk
    return out


def branch_of(save_id: str, parents: Dict[str, Optional[str]]) -> Set[str]:
    """The ids on `save_id`'s line: its ancestors, itself and its descendants. `parents`: save id -> parent id
    of every save whose parent is known."""
    line = _ancestors(save_id, parents) | {save_id}
    for other in parents:
        if save_id in _ancestors(other, parents):
            line.add(other)
    return line


def resolve_restore_file(restore_file: str, filename: str, save_dir: str) -> str:
    """A --restore-file other than the default must exist: as given, or inside --save-dir (fairseq looks there
    only for the default checkpoint_last.pt, and starting afresh would overwrite the folder's saves)."""
    tried = [filename] + ([os.path.join(save_dir, filename)] if not os.path.isabs(filename) else [])
    for path in tried:
        if os.path.isfile(path):
            if path != filename:
                logger.info(f"--restore-file {restore_file}: reading {path} (inside --save-dir)")
            return path
    folder = next((p for p in tried if os.path.isdir(p)), None)
    what = f"{folder} is a folder, not a checkpoint file" if folder else f"no such file: tried {' and '.join(tried)}"
    raise ValueError(f"--restore-file {restore_file}: {what}; give a checkpoint file (`python "
                     f"scripts/verify_checkpoint.py {save_dir}` lists the saves there), or leave --restore-file out "
                     f"to resume from {os.path.join(save_dir, 'checkpoint_last.pt')}")
