"""Which save a resume reads: an explicit --restore-file, the saves of checkpoint_last's branch, and the
newest complete one of them.

Every save records its parent: the save id of the checkpoint its run continued (the one it resumed from,
or this run's previous save; None for a fresh start). Rolling back (`--restore-file checkpoint_1_6.pt`)
and training on starts a branch: its saves have checkpoint_1_6's id as an ancestor, and the abandoned
checkpoint_1_9, checkpoint_1_12 do not descend from the new checkpoint_last. A plain resume follows the
branch of checkpoint_last (`branch_of`), never a newer save of another branch, and falls back to the
newest complete save of it (`resume_path`) when checkpoint_last's save is broken.
"""

import logging
import os
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Set

from .manifest import SaveStatus, list_saves
from .names import SAVE_FILE

if TYPE_CHECKING:
    from fairseq.trainer import Trainer

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


def refuse_restart_over_saves(save_dir: str, start: str) -> None:
    """fairseq starts from `start` (--finetune-from-model) whenever checkpoint_last is missing: with saves in the
    folder (a first save killed before its copy to checkpoint_last) that would overwrite them."""
    saves = sorted(f for f in os.listdir(save_dir) if SAVE_FILE.match(f)) if os.path.isdir(save_dir) else []
    if saves:
        raise ValueError(f"{start}: {save_dir} holds saves ({', '.join(saves)}) but no checkpoint_last.pt, so fairseq "
                         f"would start over and overwrite them; continue them with --restore-file "
                         f"{os.path.join(save_dir, saves[-1])} (`python scripts/verify_checkpoint.py {save_dir}` lists "
                         f"the complete ones), or give another --save-dir")


def _on_branch_of(here: Optional[SaveStatus], saves: List[SaveStatus]) -> Optional[List[SaveStatus]]:
    """The saves of checkpoint_last's branch (`branch_of`), newest first; None when its branch is unknown
    (no save id, or saved before parents were recorded)."""
    if here is None or not here.save_id or not here.lineage:
        return None
    line = branch_of(here.save_id, {s.save_id: s.parent for s in saves if s.save_id and s.lineage})
    return [s for s in saves if s.save_id in line]


def resume_path(save_dir: str, last: str, refuse: bool, announce: bool = True) -> str:
    """The file a plain resume reads: the newest complete save of checkpoint_last's branch (the saves it
    continues and that continue it, `branch_of`), which is checkpoint_last itself unless a later save of
    the branch was interrupted before its copy to checkpoint_last; when the branch has no complete save or
    is unknown, the newest complete save. Anything but checkpoint_last gets one warning line; `refuse`:
    raise instead."""
    saves = list_saves(save_dir) if os.path.isdir(save_dir) else []
    if not saves:
        return last  # a fresh start
    ok = [s for s in saves if s.complete]
    here = next((s for s in saves if os.path.abspath(s.path) == os.path.abspath(last)), None)
    branch = [s for s in _on_branch_of(here, saves) or [] if s.complete]
    if branch:
        newer = [s for s in ok if s not in branch and (s.num_updates or 0) > (branch[0].num_updates or 0)]
        if newer and announce:
            names = ", ".join(f"{os.path.basename(s.path)} (update {s.num_updates})" for s in newer)
            logger.info(f"not resuming {names}: {'they do' if len(newer) > 1 else 'it does'} not continue {last} "
                        f"(another branch, e.g. from before a rollback); saves of this run under the same names will "
                        f"replace them")
        ok = branch
    if here is not None and here.complete and here.num_updates == ok[0].num_updates:
        return last
    if here is None:
        bad = f"{last} is missing but {save_dir} holds saves"
    elif not here.complete:
        bad = f"{last} is broken ({here.problem})"
    else:
        bad = f"{last} (update {here.num_updates}) is older than a complete save (a save was interrupted)"
    fix = f"check the folder with `python scripts/verify_checkpoint.py {save_dir}`"
    if not ok:
        trust = "" if here is None else (f", or, if {last} is a checkpoint you trust (e.g. copied here without its "
                                         f"manifest), start from it with --restore-file {last}")
        raise ValueError(f"{bad}, and no save in {save_dir} is complete: nothing to resume from; {fix}{trust}, or "
                         f"start afresh in another --save-dir")
    best = ok[0]
    if refuse:
        raise ValueError(f"{bad}; the newest complete save is {best.path} (update {best.num_updates}): resume from it "
                         f"with --restore-file {best.path}, or drop --no-resume-fallback to do so automatically")
    if announce:
        logger.warning(f"{bad}; resuming from {best.path} (update {best.num_updates}), the newest complete save")
    return best.path


def continue_wall_clock(trainer: "Trainer") -> None:
    """A resumed run's logged `wall` goes on from its training time at the save (fairseq's own
    `cumulative_training_time`, kept in the save) instead of reading 0 ever after.

    fairseq 0.12 restores the `wall` stopwatch from the save's metrics without a start time
    (StopwatchMeter.load_state_dict), and its elapsed time is 0 until the process ends; the reset of
    time meters beside it skips stopwatches. After a resume at an epoch's end (metrics not restored)
    `wall` started again from 0. Either way wall-clock curves broke at every resume.
    """
    from fairseq.logging import metrics

    wall = metrics.get_meter("default", "wall")
    if wall is not None and hasattr(wall, "start_time"):
        # float(): after an expert-parallel load the saved time can come back as a tensor
        wall.start_time = time.perf_counter() - float(trainer.cumulative_training_time())
