"""Reading a save for any rank count: its files gathered, experts by global id, optimizer state by name.

A save of W expert-parallel ranks is cut for the W' ranks that read it (each reads the shared state and
just the experts it holds): when loading, and offline (`save.write_resharded`). Optimizer state is keyed
by parameter position in torch; tying it to names is what lets it follow an expert to another rank.
"""

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .. import file_io
from ..distributed import ExpertLayout, expert_world, plan_layout
from .names import (FORMAT_VERSION, META_KEY, derive_param_order, experts_in_file, files_of, shard_path,
                    split_expert_name)


# -- optimizer state by name ---------------------------------------------------------------
def optimizer_state_by_name(opt_state: Optional[dict], names: Sequence[str]) -> Dict[str, dict]:
    """fairseq/torch optimizer state is keyed by position; key it by parameter name."""
    if not opt_state or "state" not in opt_state:
        return {}
    n_params = sum(len(g["params"]) for g in opt_state["param_groups"])
    if n_params != len(names):
        raise ValueError(
            f"the optimizer state covers {n_params} parameters but the model lists {len(names)}: cannot tie "
            f"optimizer state to parameter names (reset it with --reset-optimizer)"
        )
    order = [i for g in opt_state["param_groups"] for i in g["params"]]
    return {names[k]: opt_state["state"][i] for k, i in enumerate(order) if i in opt_state["state"]}


def _group_of(name: str, groups_by_name: Dict[str, int]) -> int:
    if name in groups_by_name:
        return groups_by_name[name]
    parts = split_expert_name(name)  # an expert rank 0 did not hold: same group as expert 0
    if parts is not None:
        return groups_by_name.get(f"{parts[0]}.experts.0.{parts[2]}", 0)
    return 0


def positional_optimizer_state(template: dict, template_names: Sequence[str], named: Dict[str, dict],
                               names: Sequence[str]) -> dict:
    """Rebuild a positional optimizer state for a model whose optimizer holds `names` in that order.

    `template` (rank 0's saved state) gives the param groups' settings and the non-state keys
    (e.g. fp16 loss scale)."""
    order = [i for g in template["param_groups"] for i in g["params"]]
    groups_by_name: Dict[str, int] = {}
    pos = 0
    for gi, g in enumerate(template["param_groups"]):
        for _ in g["params"]:
            groups_by_name[template_names[pos]] = gi
            pos += 1
    assert pos == len(order)
    members: List[List[str]] = [[] for _ in template["param_groups"]]
    for n in names:
        members[_group_of(n, groups_by_name)].append(n)
    # torch maps saved positions to the optimizer's parameters group by group, in order
    out = {k: v for k, v in template.items() if k not in ("state", "param_groups")}
    groups, state, i = [], {}, 0
    for g, mem in zip(template["param_groups"], members):
        ids = []
        for n in mem:
            if n in named:
                state[i] = named[n]
            ids.append(i)
            i += 1
        groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
    out["state"], out["param_groups"] = state, groups
    return out


class SavedCheckpoint:
    """All files of one save: shared state from the main file, experts and their optimizer state by
    global name (only the experts asked for are read)."""

    def __init__(self, path: str, main: dict, expert_ids: Optional[Sequence[int]] = None, mmap: bool = False):
        self.path, self.main, self.mmap = path, main, mmap
        meta = main.get(META_KEY)
        model = main["model"]
        expert_keys = [k for k in model if split_expert_name(k) is not None]
        if meta is None:  # a plain fairseq checkpoint: one file, every expert in it
            layers = sorted({split_expert_name(k)[0] for k in expert_keys})
            n = 1 + max((split_expert_name(k)[1] for k in expert_keys), default=-1)
            meta = {"version": FORMAT_VERSION, "world_size": 1, "rank": 0, "num_experts": n,
                    "switch_layers": layers, "save_id": None, "param_names": None}
        self.meta = meta
        self.num_updates = ((main.get("optimizer_history") or [{}])[-1]).get("num_updates")
        self.epoch = ((main.get("extra_state") or {}).get("train_iterator") or {}).get("epoch")
        self.num_experts, self.world_size = meta["num_experts"], meta["world_size"]
        self.switch_layers = list(meta["switch_layers"])
        self.shared = {k: v for k, v in model.items() if split_expert_name(k) is None}
        self.experts = {k: v for k, v in model.items() if k not in self.shared}
        names = meta.get("param_names")
        opt = main.get("last_optimizer_state")
        self.optimizer_template = opt
        self.param_names = names
        self.optim_named = optimizer_state_by_name(opt, names) if (opt and names is not None) else {}
        wanted = range(self.num_experts) if expert_ids is None else expert_ids
        self._read_shards(set(wanted))

    def _read_shards(self, wanted: set) -> None:
        n, w = self.num_experts, self.world_size
        for r in range(1, files_of(n, w) if n else 1):
            if not wanted & set(experts_in_file(n, w, r)):
                continue
            p = shard_path(self.path, r)
            if not os.path.isfile(p):
                raise FileNotFoundError(
                    f"{p} is missing: {self.path} was saved by {w} expert-parallel ranks and its experts are split "
                    f"over {files_of(n, w)} files ({os.path.basename(self.path)} and "
                    f"{os.path.basename(shard_path(self.path, 1))}..); copy them together"
                )
            shard = file_io.load_torch(p, "expert shard", mmap=self.mmap)
            got = shard.get(META_KEY, {}).get("save_id")
            if got != self.meta["save_id"]:
                raise ValueError(
                    f"{p} belongs to a different save than {self.path} (save ids {str(got)[:8]} vs "
                    f"{str(self.meta['save_id'])[:8]}): the save was interrupted or files of two saves were mixed; "
                    f"resume from a complete save (scripts/verify_checkpoint.py lists them)"
                )
            held = shard.get(META_KEY, {}).get("rank", r)
            if held != r and wanted != set(range(n)):
                raise ValueError(
                    f"{p} holds the experts of rank {held} ({experts_in_file(n, w, held)}), not rank {r}'s "
                    f"({experts_in_file(n, w, r)}): the files of this {w}-rank save were renamed or swapped; give each "
                    f"file its rank's name, or make one file with scripts/reshard_checkpoint.py (it reads experts by "
                    f"id)"
                )
            self.experts.update(shard["model"])
            self.optim_named.update(shard.get("optimizer_state", {}))

    def check_layout(self, num_experts: int, switch_layers: Sequence[str]) -> None:
        """A checkpoint with another expert count or other Switch layers (--moe-freq) cannot be loaded."""
        # as sets: a plain checkpoint's layers are inferred from its keys, in another order than the model's
        if num_experts == self.num_experts and sorted(switch_layers) == sorted(self.switch_layers):
            return
        cfg = (self.main.get("cfg") or {}).get("model") or {}

        def opt(name: str) -> Any:
            v = cfg.get(name) if hasattr(cfg, "get") else getattr(cfg, name, None)  # dict or legacy Namespace
            return "?" if v is None else v

        from ..models import load_hints  # models import this module

        # the layers may differ (another --arch), not only the expert options: name what built the saved model
        flags = load_hints.saved_flags(self.path, cfg, names=load_hints.EXPERT_LAYOUT_OPTIONS)
        raise ValueError(
            f"{self.path} has a different expert layout: it has {self.num_experts} experts in "
            f"{len(self.switch_layers)} Switch layers {self.switch_layers} (--moe-expert-count "
            f"{opt('moe_expert_count')} --moe-freq {opt('moe_freq')}), this model has {num_experts} experts in "
            f"{len(switch_layers)} Switch layers {list(switch_layers)}; build the model with the checkpoint's "
            f"flags: {flags} (changing the expert count of a trained model is not supported)"
        )

    def state_for(self, layout: ExpertLayout, param_names: Optional[Sequence[str]] = None,
                  optimizer: bool = True) -> dict:
        """A fairseq checkpoint state for the rank described by `layout`: shared weights, its experts under
        their local names and, if `optimizer`, the optimizer state in the order of `param_names`
        (default: derived from the saved order)."""
        if layout.num_experts != self.num_experts and self.num_experts:
            self.check_layout(layout.num_experts, self.switch_layers)
        state = {k: v for k, v in self.main.items() if k not in ("model", META_KEY, "last_optimizer_state")}
        first = layout.first_local_expert
        model = dict(self.shared)
        for k, v in self.experts.items():
            layer, e, rest = split_expert_name(k)
            if e in layout.local_expert_ids:
                model[f"{layer}.experts.{e - first}.{rest}"] = v
        state["model"] = model
        opt = self.optimizer_template
        if opt is None or not optimizer:
            return state
        if self.param_names is None:  # written before optimizer state was named: usable as is only
            if self.world_size == layout.world_size == 1:
                state["last_optimizer_state"] = opt
                return state
            raise ValueError(
                f"the optimizer state in {self.path} is not tied to parameter names (a checkpoint from before "
                f"expert-sharded saves), so it cannot be cut for {layout.world_size} ranks: resume it on one "
                f"process, or load the weights only with --reset-optimizer"
            )
        if param_names is None:
            param_names = derive_param_order(self.param_names, layout.local_expert_ids)
        state["last_optimizer_state"] = positional_optimizer_state(opt, self.param_names, self.optim_named, param_names)
        return state

    def files(self) -> List[str]:
        n, w = self.num_experts, self.world_size
        return [self.path] + [shard_path(self.path, r) for r in range(1, files_of(n, w) if n else 1)]


@dataclass(frozen=True)
class LoadTarget:
    """The model a Trainer loads a checkpoint into."""

    layout: ExpertLayout
    switch_layers: List[str]
    param_names: List[str]  # its optimizer's order
    keep_optimizer: bool  # False with --reset-optimizer


def localize(path: str, state: dict, target: Optional[LoadTarget] = None,
             world: Optional[Tuple[int, int]] = None) -> dict:
    """After fairseq read `path`: cut the save for this process: for `target` (the Trainer's model), else
    for a model holding the experts that rank `world[1]` of `world[0]` holds (default: torch.distributed's
    world; (1, 0): every expert)."""
    world, rank = expert_world() if world is None else world
    in_dist = world > 1
    if target is None and META_KEY not in state and not in_dist:
        return state  # plain one-process checkpoint, read outside training: nothing to cut
    if "model" not in state:
        return state
    if target is not None:
        layout = target.layout
        saved = SavedCheckpoint(path, state, layout.local_expert_ids)
        saved.check_layout(layout.num_experts, target.switch_layers)
        return saved.state_for(layout, target.param_names, optimizer=target.keep_optimizer)
    probe = SavedCheckpoint(path, state, expert_ids=[])
    if not probe.num_experts:
        return state
    layout = plan_layout(probe.num_experts, world, rank)
    # no trainer: weights only (fairseq-generate, load_model_ensemble)
    return SavedCheckpoint(path, state, layout.local_expert_ids).state_for(layout, optimizer=False)


def read_named(read: Callable[..., dict], path: str, *args: Any) -> dict:
    """fairseq's load_checkpoint_to_cpu (`read`), with a named error for a file torch cannot read."""
    try:
        return read(path, *args)
    except file_io.READ_ERRORS as e:
        if "Weights only load failed" in str(e):
            raise
        folder = path if os.path.isdir(path) else (os.path.dirname(path) or ".")
        raise ValueError(f"{file_io.unreadable(path, e)}; `python scripts/verify_checkpoint.py {folder}` lists the "
                         f"complete saves {'in it' if folder == path else 'next to it'}") from e


def load_checkpoint_whole(path: str) -> dict:
    """A checkpoint's state with every expert in this process, whatever torch.distributed says (a
    distillation teacher, a student's initialisation, offline tools): read as fairseq reads it (its
    upgrades of older states included), with the named errors of unreadable files and missing shards;
    a Switch save comes without optimizer state."""
    from fairseq import checkpoint_utils

    # fairseq's own loader: the plugin's replacement (which keeps it as __wrapped__) cuts the save for this rank
    read = getattr(checkpoint_utils.load_checkpoint_to_cpu, "__wrapped__", checkpoint_utils.load_checkpoint_to_cpu)
    with file_io.fairseq_checkpoint_types():
        state = read_named(read, path)
    return localize(path, state, world=(1, 0))
