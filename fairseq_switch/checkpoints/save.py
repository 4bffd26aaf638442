"""Writing a save: each rank's file, the save's record (id, parent, dictionary), and its manifest once
every file is in place.

One save of a Switch model with W expert-parallel ranks, G = min(N, W) of them holding distinct experts
(Fedus, Zoph & Shazeer 2021, Sec. 5), is G files: rank 0's main file (everything fairseq saves, and its
experts) and `-experts-rank{r}.pt` for r = 1..G-1 (its experts and their optimizer state only); replicas
write nothing. Rank 0 writes the manifest after a barrier of the saving ranks.
"""

import logging
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence

import torch.distributed as dist

from .. import file_io
from ..distributed import ExpertLayout, plan_layout
from ..modules.switch_layer import SwitchFFN
from .fingerprint import dictionary_of
from .manifest import write_manifest
from .names import (FORMAT_VERSION, META_KEY, RECORD_KEY, derive_param_order, files_of, main_of, model_param_names,
                    shard_path, shard_suffix, shift_expert_id, split_expert_name, switch_layers_of)
from .sharding import SavedCheckpoint, optimizer_state_by_name

if TYPE_CHECKING:  # fairseq is imported when its functions call ours
    from fairseq.trainer import Trainer

logger = logging.getLogger(__name__)


def _meta(num_experts: int, world_size: int, rank: int, switch_layers: Iterable[str], save_id: str,
          param_names: Optional[Iterable[str]]) -> dict:
    return {"version": FORMAT_VERSION, "world_size": world_size, "rank": rank, "num_experts": num_experts,
            "switch_layers": list(switch_layers), "save_id": save_id,
            "param_names": None if param_names is None else list(param_names)}


def rank_file(state: dict, meta: dict, param_names: Optional[Sequence[str]]) -> dict:
    """What rank meta['rank'] writes, from its full fairseq state (experts under global names)."""
    opt = state.get("last_optimizer_state")
    named = optimizer_state_by_name(opt, param_names) if (opt and param_names is not None) else {}
    if meta["rank"] == 0:
        return {**state, META_KEY: meta}
    experts = {k: v for k, v in state["model"].items() if split_expert_name(k) is not None}
    return {META_KEY: {**meta, "param_names": None}, "model": experts,
            "optimizer_state": {k: v for k, v in named.items() if split_expert_name(k) is not None}}


def write_resharded(saved: SavedCheckpoint, out_path: str, world_size: int) -> List[str]:
    """Write `saved` as a `world_size`-rank save at out_path (+ shards), then its manifest. Returns the
    files written."""
    n = saved.num_experts
    save_id = uuid.uuid4().hex
    written = []
    # shards first, main file last: until the main file is replaced, nothing new is reachable
    for r in reversed(range(files_of(n, world_size) if n else 1)):
        layout = plan_layout(n, world_size, r) if n else plan_layout(1, 1, 0)
        state = saved.state_for(layout)
        names = (derive_param_order(saved.param_names, layout.local_expert_ids)
                 if saved.param_names is not None else None)
        state["model"] = {shift_expert_id(k, layout.first_local_expert): v for k, v in state["model"].items()}
        if "extra_state" in state:
            state["extra_state"] = {**state["extra_state"],
                                    RECORD_KEY: {**(state["extra_state"].get(RECORD_KEY) or {}), "save_id": save_id,
                                                 "parent": saved.meta.get("save_id")}}
        meta = _meta(n, world_size, r, saved.switch_layers, save_id, names)
        path = out_path if r == 0 else shard_path(out_path, r)
        file_io.save_torch(rank_file(state, meta, names), path)
        written.append(path)
    write_manifest(out_path, {"save_id": save_id, "parent": saved.meta.get("save_id"),
                              "num_updates": saved.num_updates, "epoch": saved.epoch}, written[::-1])
    return written[::-1]


def _ffns(trainer: "Trainer") -> List[SwitchFFN]:
    return [m for m in trainer.get_model().modules() if isinstance(m, SwitchFFN)]


def layout_of(trainer: "Trainer") -> Optional[ExpertLayout]:
    ffns = _ffns(trainer)
    return ffns[0].layout if ffns else None


def _saver_group(layout: ExpertLayout) -> Optional[object]:
    return layout.a2a_group if layout.rank < layout.group_size else None


def save_checkpoint(trainer: "Trainer", filename: str, extra_state: dict) -> Optional[str]:
    """Trainer.save_checkpoint for Switch models, called on every rank holding distinct experts.
    `filename` is the main file's name or this rank's; the save id is extra_state's record."""
    from fairseq import utils

    if trainer.cfg.checkpoint.write_checkpoints_asynchronously:
        raise ValueError("--write-checkpoints-asynchronously is not supported for Switch models (sharded saves "
                         "must be complete before the next one starts); drop the flag")
    layout = layout_of(trainer)
    model = trainer.get_model()
    if layout.rank >= layout.group_size:
        return None  # a replica: rank (rank mod G) writes these experts
    if layout.rank > 0 and not filename.endswith(shard_suffix(layout.rank) + ".pt"):
        filename = shard_path(filename, layout.rank)  # called directly with the main file's name
    names = model_param_names(model, trainer.get_criterion())
    logger.info(f"Saving checkpoint to {os.path.abspath(filename)}")
    state = utils.move_to_cpu(trainer.state_dict())
    state["extra_state"].update(extra_state)
    state["model"] = {shift_expert_id(k, layout.first_local_expert): v for k, v in state["model"].items()}
    meta = _meta(layout.num_experts, layout.world_size, layout.rank, switch_layers_of(model),
                 extra_state[RECORD_KEY]["save_id"], names)
    os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
    from fairseq.checkpoint_utils import torch_persistent_save  # atomic (hooks.torch_persistent_save)

    torch_persistent_save(rank_file(state, meta, names), filename)
    logger.info(f"Finished saving checkpoint to {os.path.abspath(filename)}")
    return os.path.abspath(filename)


@dataclass
class PendingSave:
    """One save being written: its record, this rank's layout and the test-only fault points (its files and
    copies find it in `hooks.SaveCall`)."""

    record: dict
    layout: Optional[ExpertLayout]
    fault: Optional[file_io.FaultPlan]

    @property
    def rank(self) -> int:
        return self.layout.rank if self.layout is not None else 0

    def at(self, phase: str) -> file_io.Fault:
        if self.fault is None:
            return None
        return lambda tmp: self.fault.hit(phase, self.record["num_updates"], self.rank, tmp)

    def files_of(self, main_path: str) -> List[str]:
        lay = self.layout
        if lay is None or not lay.distributed or not lay.num_experts:
            return [main_path]
        return [main_path] + [shard_path(main_path, r) for r in range(1, files_of(lay.num_experts, lay.world_size))]

    def commit(self, path: str) -> None:
        """Once every saving rank has written its file of `path`'s save: rank 0 writes the manifest."""
        hit = self.at("between-shards")
        if hit is not None:
            hit(None)
        lay = self.layout
        if lay is not None and lay.distributed:
            dist.barrier(group=_saver_group(lay))
        if self.rank == 0:
            main = main_of(path)
            write_manifest(main, self.record, self.files_of(main), self.at("manifest"))


PARENT_ATTR = "_fairseq_switch_parent"  # on the Trainer: the save id its model state continues (resume.branch_of)
CRASH_DUMP = "crash.pt"  # fairseq's Trainer.train_step saves one after a failed step


def new_save(trainer: "Trainer", extra_state: dict) -> PendingSave:
    """One record for all files of this save: an id drawn by rank 0 and agreed by every saving rank."""
    layout = layout_of(trainer)
    save_id = [uuid.uuid4().hex]
    if layout is not None and layout.distributed and layout.rank < layout.group_size:
        dist.broadcast_object_list(save_id, src=0, group=_saver_group(layout))
    record = {"save_id": save_id[0], "parent": getattr(trainer, PARENT_ATTR, None),
              "num_updates": trainer.get_num_updates(),
              "epoch": (extra_state.get("train_iterator") or {}).get("epoch"),
              "dictionary": dictionary_of(trainer.task)}
    extra_state[RECORD_KEY] = {k: record[k] for k in ("save_id", "parent", "dictionary")}
    return PendingSave(record, layout, file_io.FaultPlan.from_env())
