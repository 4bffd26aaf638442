"""Checkpoints: expert-sharded saves that load on any rank count, and saves that survive a crash.

Files of one save, with W expert-parallel ranks of which G = min(N, W) hold distinct experts (expert
parallelism as in Fedus, Zoph & Shazeer 2021, Sec. 5):

    checkpoint_X.pt                  rank 0: everything fairseq saves (shared weights, optimizer
                                     state, iterator, meters) and rank 0's experts
    checkpoint_X-experts-rank{r}.pt  rank r = 1..G-1: its experts and their optimizer state only
    checkpoint_X.manifest.json       written last, by rank 0, once every rank's file is in place

Replicas (ranks >= G) write nothing. One process writes fairseq's plain single file. Every file
carries the save's id (and the Switch files `expert_parallel` metadata: the layout and the
optimizer's parameter names). Every file is written atomically (`file_io`), last/best copies
included, so a crash leaves each file old or new; the manifest and the save ids tell a complete
save from an interrupted one. Every save also records its parent (the save its run continued), so a
plain resume continues checkpoint_last's branch (`save_lineage`) and falls back to the newest complete
save of it. A run holds the folder's lock (`checkpoint_lock`) from its first load on.

On disk experts are named by their global id (`...fc1.experts.5.fc2.weight`), and optimizer
state is tied to parameter names rather than positions, so one save can be cut for any rank
count: when loading (every rank reads the shared state and just the experts it holds) or
offline with `scripts/reshard_checkpoint.py`. Every save also records a fingerprint of the
dictionary it was trained with, which loading compares with the task's.
"""

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch.distributed as dist
import torch.nn as nn

from . import checkpoint_lock, file_io, save_lineage
from .distributed import ExpertLayout, expert_world, plan_layout
from .modules.switch_layer import SwitchFFN

if TYPE_CHECKING:  # fairseq is imported when its functions call ours
    from fairseq.tasks import FairseqTask
    from fairseq.trainer import Trainer

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_KEY = "expert_parallel"
_EXPERT = re.compile(r"^(.+)\.experts\.(\d+)\.(.+)$")


# -- names ---------------------------------------------------------------------------------
def split_expert_name(name: str) -> Optional[Tuple[str, int, str]]:
    """'encoder.layers.1.fc1.experts.3.fc2.weight' -> ('encoder.layers.1.fc1', 3, 'fc2.weight')."""
    m = _EXPERT.match(name)
    return None if m is None else (m.group(1), int(m.group(2)), m.group(3))


def shift_expert_id(name: str, offset: int) -> str:
    """Local <-> global expert names: add `offset` to the expert id (other names unchanged)."""
    parts = split_expert_name(name)
    if parts is None or offset == 0:
        return name
    layer, e, rest = parts
    return f"{layer}.experts.{e + offset}.{rest}"


def shard_path(main_path: str, rank: int) -> str:
    """The file of rank `rank` (>= 1) next to the main file `main_path`."""
    if not main_path.endswith(".pt"):
        raise ValueError(f"checkpoint paths must end in .pt, got {main_path}")
    return f"{main_path[:-3]}-experts-rank{rank}.pt"


def shard_suffix(rank: int) -> str:
    return f"-experts-rank{rank}"


def files_of(num_experts: int, world_size: int) -> int:
    """Files per save: one per rank holding distinct experts."""
    return min(num_experts, world_size)


def experts_in_file(num_experts: int, world_size: int, file_rank: int) -> List[int]:
    return plan_layout(num_experts, world_size, file_rank).local_expert_ids


def switch_layers_of(model: nn.Module) -> List[str]:
    return [name for name, m in model.named_modules() if isinstance(m, SwitchFFN)]


def model_param_names(model: nn.Module, criterion: Optional[nn.Module] = None) -> List[str]:
    """Global names of the parameters fairseq's optimizer holds, in its order (Trainer._build_optimizer:
    trainable model parameters, then the criterion's)."""
    ffns = [m for m in model.modules() if isinstance(m, SwitchFFN)]
    first = ffns[0].layout.first_local_expert if ffns else 0
    names = [shift_expert_id(n, first) for n, p in model.named_parameters() if p.requires_grad]
    if criterion is not None:
        names += [f"criterion.{n}" for n, p in criterion.named_parameters() if p.requires_grad]
    return names


def derive_param_order(saved_names: Sequence[str], expert_ids: Sequence[int]) -> List[str]:
    """The optimizer order of a model holding `expert_ids`, from a saved order (rank 0's, which always
    includes expert 0 of each layer): a layer's experts are one contiguous block, expert by expert."""
    template: Dict[str, List[str]] = {}
    for n in saved_names:
        parts = split_expert_name(n)
        if parts is not None and parts[1] == 0:
            template.setdefault(parts[0], []).append(parts[2])
    out, done = [], set()
    for n in saved_names:
        parts = split_expert_name(n)
        if parts is None:
            out.append(n)
        elif parts[0] not in done:
            done.add(parts[0])
            out += [f"{parts[0]}.experts.{e}.{rest}" for e in expert_ids for rest in template[parts[0]]]
    return out


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


# -- reading a save ------------------------------------------------------------------------
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

        from .models import load_hints  # models import this module

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


# -- writing -------------------------------------------------------------------------------
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


# -- complete saves --------------------------------------------------------------------------
RECORD_KEY = "fairseq_switch"  # in extra_state: {"save_id", "parent", "dictionary"} of every save this plugin writes
MANIFEST_SUFFIX = ".manifest.json"
_SHARD_FILE = re.compile(r"^(.+)-experts-rank(\d+)\.pt$")
# the names fairseq-train saves under (a converted or resharded checkpoint.pt is not one of a run's saves)
_SAVE_FILE = re.compile(r"^checkpoint(_last|_best|\d+|_\d+_\d+|\.best_.+?)\.pt$")


def manifest_path(main_path: str) -> str:
    return main_path[:-3] + MANIFEST_SUFFIX


def main_of(path: str) -> str:
    """checkpoint_last-experts-rank1.pt -> checkpoint_last.pt (a main file: itself)."""
    m = _SHARD_FILE.match(path)
    return path if m is None else m.group(1) + ".pt"


def write_manifest(main_path: str, record: dict, files: Sequence[str], fault: file_io.Fault = None) -> None:
    """Written last: a save is complete once every file it lists is in place, with these sizes."""
    file_io.save_json({
        "format": FORMAT_VERSION, "save_id": record.get("save_id"), "parent": record.get("parent"),
        "num_updates": record.get("num_updates"), "epoch": record.get("epoch"),
        "files": {os.path.basename(f): os.path.getsize(f) for f in files},
    }, manifest_path(main_path), fault)


@dataclass
class SaveStatus:
    """What scripts/verify_checkpoint.py reports for one save (main file + its shards + manifest)."""

    path: str
    complete: bool
    problem: str = ""
    num_updates: Optional[int] = None
    epoch: Optional[int] = None
    files: List[str] = field(default_factory=list)
    manifest: bool = False
    save_id: Optional[str] = None
    parent: Optional[str] = None
    lineage: bool = False  # records its parent (saves written before parents were recorded do not)

    def learn(self, record: dict) -> None:
        """The save id and parent from a manifest or a file's record."""
        self.save_id = record.get("save_id") or self.save_id
        if "parent" in record:
            self.parent, self.lineage = record["parent"], True

    @property
    def bytes(self) -> int:
        return sum(os.path.getsize(f) for f in self.files if os.path.isfile(f))


def _updates_from_name(path: str) -> Optional[int]:
    m = re.match(r"^checkpoint_\d+_(\d+)\.pt$", os.path.basename(path))
    return int(m.group(1)) if m else None


def inspect_save(path: str) -> SaveStatus:
    """Is the save whose main file is `path` complete? Reads the manifest and every file's header
    (tensors stay on disk): all files readable, of one save (save ids), at the manifest's sizes.

    A save written by this plugin is complete only with a manifest that agrees; one written before
    manifests existed (or by plain fairseq) only needs readable, consistent files."""
    st = SaveStatus(path, False, files=[path], num_updates=_updates_from_name(path))
    man, name = None, os.path.basename(manifest_path(path))
    missing = (f"{name} is missing: the save was interrupted before it completed, or {os.path.basename(path)} was "
               f"copied without it")
    if os.path.isfile(manifest_path(path)):
        try:
            with open(manifest_path(path), encoding="utf-8") as f:
                man = json.load(f)
            if not isinstance(man, dict):
                raise ValueError(f"a JSON {type(man).__name__}, not an object")
            st.manifest = True
            st.num_updates, st.epoch = man.get("num_updates", st.num_updates), man.get("epoch")
            st.learn(man)
        except (OSError, ValueError) as e:
            man = None
            missing = f"{name} is corrupt ({e}), so the save cannot be checked"
    try:
        state = file_io.load_torch(path, mmap=True)
    except (ValueError, FileNotFoundError) as e:
        st.problem = str(e)
        return st
    history = state.get("optimizer_history") or [{}]
    st.num_updates = history[-1].get("num_updates", st.num_updates)
    record = (state.get("extra_state") or {}).get(RECORD_KEY) or {}
    st.learn(record)
    st.epoch = ((state.get("extra_state") or {}).get("train_iterator") or {}).get("epoch", st.epoch)
    meta = state.get(META_KEY) or {}
    if meta.get("num_experts"):
        st.files = [path] + [shard_path(path, r) for r in range(1, files_of(meta["num_experts"], meta["world_size"]))]
    try:
        saved = SavedCheckpoint(path, state, mmap=True) if "model" in state else None
    except (ValueError, FileNotFoundError) as e:
        st.problem = str(e)
        return st
    if saved is not None:
        st.files = saved.files()
    if man is None and (record or os.path.isfile(manifest_path(path))):
        st.problem = missing
        return st
    if man is not None:
        if man.get("save_id") != record.get("save_id"):
            st.problem = (f"{os.path.basename(path)} is not the save its manifest describes: it was interrupted "
                          f"while being replaced")
            return st
        for f in st.files:
            want = man.get("files", {}).get(os.path.basename(f))
            if want is None or os.path.getsize(f) != want:
                st.problem = f"{f} has {os.path.getsize(f):,} bytes, its manifest says {want}"
                return st
    st.complete = True
    return st


def list_saves(folder: str) -> List[SaveStatus]:
    """Every save in `folder`, newest first (by update, then modification time); unknown updates (an
    unreadable file without a manifest) first."""
    mains = [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if _SAVE_FILE.match(f)]
    found = [inspect_save(p) for p in mains]
    inf = float("inf")
    # among copies of one save (same update), checkpoint_last first (what a resume reads), then the numbered one
    def name_rank(s: SaveStatus) -> int:
        base = os.path.basename(s.path)
        return 2 if base.startswith("checkpoint_last") else int(_updates_from_name(base) is not None)

    return sorted(found, key=lambda s: (inf if s.num_updates is None else s.num_updates, name_rank(s),
                                        os.path.getmtime(s.path)), reverse=True)


def leftover_temp_files(folder: str) -> List[str]:
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if file_io.is_temp_file(f)]


def refuse_restart_over_saves(save_dir: str, start: str) -> None:
    """fairseq starts from `start` (--finetune-from-model) whenever checkpoint_last is missing: with saves in the
    folder (a first save killed before its copy to checkpoint_last) that would overwrite them."""
    saves = sorted(f for f in os.listdir(save_dir) if _SAVE_FILE.match(f)) if os.path.isdir(save_dir) else []
    if saves:
        raise ValueError(f"{start}: {save_dir} holds saves ({', '.join(saves)}) but no checkpoint_last.pt, so fairseq "
                         f"would start over and overwrite them; continue them with --restore-file "
                         f"{os.path.join(save_dir, saves[-1])} (`python scripts/verify_checkpoint.py {save_dir}` lists "
                         f"the complete ones), or give another --save-dir")


def _on_branch_of(here: Optional[SaveStatus], saves: List[SaveStatus]) -> Optional[List[SaveStatus]]:
    """The saves of checkpoint_last's branch (save_lineage), newest first; None when its branch is unknown
    (no save id, or saved before parents were recorded)."""
    if here is None or not here.save_id or not here.lineage:
        return None
    line = save_lineage.branch_of(here.save_id, {s.save_id: s.parent for s in saves if s.save_id and s.lineage})
    return [s for s in saves if s.save_id in line]


def resume_path(save_dir: str, last: str, refuse: bool, announce: bool = True) -> str:
    """The file a plain resume reads: the newest complete save of checkpoint_last's branch (the saves it
    continues and that continue it, `save_lineage`), which is checkpoint_last itself unless a later save of
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


# -- dictionaries --------------------------------------------------------------------------
def dictionary_record(dictionary: Any, source: str) -> dict:
    """What a checkpoint records of the dictionary it was trained with (a fairseq Dictionary, or its symbols):
    its symbols in order, hashed."""
    symbols = list(dictionary.symbols) if hasattr(dictionary, "symbols") else list(dictionary)
    digest = hashlib.sha256("\n".join(symbols).encode("utf-8")).hexdigest()[:16]
    return {"sha256": digest, "size": len(symbols), "source": source}


def check_dictionary(path: str, state: dict, expected: dict, allow_change: bool) -> None:
    """Refuse a checkpoint trained with another dictionary (same size or not); `expected` is
    `dictionary_record` of the task's dictionary."""
    saved = ((state.get("extra_state") or {}).get(RECORD_KEY) or {}).get("dictionary")
    if saved is None:
        logger.warning(f"{path} records no dictionary fingerprint (saved by an older version): only its vocabulary "
                       f"size was checked")
        return
    if saved["sha256"] == expected["sha256"]:
        return
    what = (f"{path} was trained with the dictionary of {saved['source']} ({saved['size']} symbols, "
            f"fingerprint {saved['sha256']}), but this task's dictionary, of {expected['source']} "
            f"({expected['size']} symbols, fingerprint {expected['sha256']}), is a different one")
    if allow_change:
        logger.warning(f"{what}; going on because of --allow-dictionary-change")
        return
    raise ValueError(
        f"{what}: token ids would mean other pieces and outputs would be garbage. Encode the data with the "
        f"checkpoint's own spm.model and dict.txt (scripts/prepare_downstream_data.py --pretrained <its data folder>), "
        f"or pass --allow-dictionary-change if the change is deliberate"
    )


# -- fairseq Trainer integration -----------------------------------------------------------
def _ffns(trainer: "Trainer") -> List[SwitchFFN]:
    return [m for m in trainer.get_model().modules() if isinstance(m, SwitchFFN)]


def _layout(trainer: "Trainer") -> Optional[ExpertLayout]:
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
    layout = _layout(trainer)
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
    from fairseq.checkpoint_utils import torch_persistent_save  # atomic (CheckpointHooks)

    torch_persistent_save(rank_file(state, meta, names), filename)
    logger.info(f"Finished saving checkpoint to {os.path.abspath(filename)}")
    return os.path.abspath(filename)


@dataclass
class _Save:
    """The save in progress in this process (set by Trainer.save_checkpoint, read by file writes)."""

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


def _read_named(read: Callable[..., dict], path: str, *args: Any) -> dict:
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
        state = _read_named(read, path)
    return localize(path, state, world=(1, 0))


def _vocab_sizes(model: nn.Module) -> Dict[str, int]:
    """Rows of the embedding tables: the vocabulary the model was built for."""
    return {n: p.shape[0] for n, p in model.named_parameters() if n.endswith("embed_tokens.weight")}


def check_vocabulary(path: str, model_state: dict, sizes: Dict[str, int]) -> None:
    """fairseq would report a size mismatch deep inside load_state_dict; say what it means instead."""
    for name, rows in sizes.items():
        saved = model_state.get(name)
        if saved is not None and saved.shape[0] != rows:
            raise ValueError(
                f"{path} was trained with a vocabulary of {saved.shape[0]} symbols ({name}), but this task's "
                f"dictionary has {rows}: fine-tune on data encoded with the checkpoint's own SentencePiece model "
                f"and dict.txt (scripts/prepare_downstream_data.py --pretrained <its pretraining data folder, or the "
                f"folder scripts/convert_checkpoint.py wrote>)"
            )


def _task_option(task: "FairseqTask", name: str, default: Any) -> Any:
    return getattr(getattr(task, "cfg", None), name, default)


def _dictionary_of(task: "FairseqTask") -> Optional[dict]:
    d = getattr(task, "target_dictionary", None)
    if d is None:
        return None
    data = str(_task_option(task, "data", "") or "").split(os.pathsep)[0]
    return dictionary_record(d, data or "the task's data")


PARENT_ATTR = "_fairseq_switch_parent"  # on the Trainer: the save id its model state continues (save_lineage)
CRASH_DUMP = "crash.pt"  # fairseq's Trainer.train_step saves one after a failed step


def _new_save(trainer: "Trainer", extra_state: dict) -> _Save:
    """One record for all files of this save: an id drawn by rank 0 and agreed by every saving rank."""
    layout = _layout(trainer)
    save_id = [uuid.uuid4().hex]
    if layout is not None and layout.distributed and layout.rank < layout.group_size:
        dist.broadcast_object_list(save_id, src=0, group=_saver_group(layout))
    record = {"save_id": save_id[0], "parent": getattr(trainer, PARENT_ATTR, None),
              "num_updates": trainer.get_num_updates(),
              "epoch": (extra_state.get("train_iterator") or {}).get("epoch"),
              "dictionary": _dictionary_of(trainer.task)}
    extra_state[RECORD_KEY] = {k: record[k] for k in ("save_id", "parent", "dictionary")}
    return _Save(record, layout, file_io.FaultPlan.from_env())


class CheckpointHooks:
    """Replacements for fairseq's Trainer and checkpoint_utils functions that route saves and loads
    through this module (expert-sharded saves of Switch models, atomic files and manifests for every
    save, fallback to the newest complete save on resume, named errors for unreadable files, checks of
    the dictionary), and the state they share. `compat` makes one per process and installs what its
    methods return (each takes fairseq's original). fairseq calls them nested
    (checkpoint_utils.save_checkpoint -> Trainer.save_checkpoint -> torch_persistent_save and
    PathManager.copy; Trainer.load_checkpoint or load_model_ensemble_and_task -> load_checkpoint_to_cpu):
    the outer call tells the inner ones, through this object, what they are part of."""

    def __init__(self) -> None:
        self.saving = False  # inside checkpoint_utils.save_checkpoint: ranks >= 1 name their own files
        self.save: Optional[_Save] = None  # the save being written
        self.target: Optional[LoadTarget] = None  # the Trainer's model, while the Trainer loads
        # (embedding rows, dictionary record, --allow-dictionary-change) while a Trainer or an ensemble loads
        self.vocab: Optional[Tuple[Dict[str, int], Optional[dict], bool]] = None

    @contextmanager
    def _loading_for(self, trainer: "Trainer", reset_optimizer: bool) -> Iterator[None]:
        """Every rank reads the checkpoint itself (it needs its own experts), for this model's layout."""
        from omegaconf import open_dict

        model = trainer.get_model()
        layout = _layout(trainer)
        self.target = LoadTarget(layout, switch_layers_of(model), model_param_names(model, trainer.get_criterion()),
                                 not reset_optimizer)
        ck = trainer.cfg.checkpoint
        before = ck.load_checkpoint_on_all_dp_ranks
        with open_dict(ck):
            ck.load_checkpoint_on_all_dp_ranks = before or layout.distributed
        try:
            yield
        finally:
            self.target = None
            with open_dict(ck):
                ck.load_checkpoint_on_all_dp_ranks = before

    def trainer_save(self, orig_save: Callable) -> Callable:
        """Trainer.save_checkpoint: Switch models through `save_checkpoint`; every save gets its record."""

        def trainer_save(trainer: "Trainer", filename: str, extra_state: dict) -> Optional[str]:
            crash = os.path.basename(filename) == CRASH_DUMP
            if crash and trainer.cfg.checkpoint.no_save:  # fairseq would write it into ./checkpoints
                logger.info(f"not writing {filename} after the failed step: --no-save")
                return None
            save = _new_save(trainer, extra_state)
            self.save = save
            try:
                if _layout(trainer) is None:
                    out = orig_save(trainer, filename, extra_state)
                else:
                    out = save_checkpoint(trainer, filename, extra_state)
                if out is not None or _layout(trainer) is None:
                    save.commit(filename)
                if not crash:  # the next save continues this one
                    setattr(trainer, PARENT_ATTR, save.record["save_id"])
                return out
            finally:
                if not self.saving:  # inside checkpoint_utils.save_checkpoint, its copies belong to this save
                    self.save = None

        return trainer_save

    def trainer_load(self, orig_load: Callable) -> Callable:
        """Trainer.load_checkpoint: resume fallback, vocabulary checks, every rank reads its experts."""

        def trainer_load(trainer: "Trainer", filename: str, reset_optimizer: bool = False, *args: Any,
                         **kwargs: Any) -> Optional[dict]:
            ck = trainer.cfg.checkpoint
            if not ck.no_save:  # one run per --save-dir, for the run's whole life
                checkpoint_lock.lock_for_run(ck.save_dir)
            if ck.restore_file != "checkpoint_last.pt" and not os.path.isfile(filename):
                filename = save_lineage.resolve_restore_file(ck.restore_file, filename, ck.save_dir)
            elif ck.finetune_from_model and filename == ck.finetune_from_model:
                refuse_restart_over_saves(ck.save_dir, f"--finetune-from-model {filename}")
            elif ck.restore_file == "checkpoint_last.pt" and os.path.basename(filename).startswith("checkpoint_last"):
                # a plain resume: fall back to the newest complete save if checkpoint_last's is broken
                filename = resume_path(ck.save_dir, filename,
                                       bool(_task_option(trainer.task, "no_resume_fallback", False)),
                                       announce=trainer.data_parallel_rank == 0)
                if trainer.data_parallel_rank == 0 and os.path.isdir(ck.save_dir):
                    for tmp in leftover_temp_files(ck.save_dir):
                        logger.info(f"removing {tmp}, left by an interrupted write")
                        os.remove(tmp)
            self.vocab = (_vocab_sizes(trainer.get_model()), _dictionary_of(trainer.task),
                          bool(_task_option(trainer.task, "allow_dictionary_change", False)))
            try:
                if _layout(trainer) is None:
                    extra = orig_load(trainer, filename, reset_optimizer, *args, **kwargs)
                else:
                    with self._loading_for(trainer, reset_optimizer):
                        extra = orig_load(trainer, filename, reset_optimizer, *args, **kwargs)
            except Exception as e:
                # fairseq's "Cannot load model parameters ...; please ensure that the architectures match"
                if not str(e).startswith("Cannot load model parameters") or not os.path.isfile(filename):
                    raise
                from .models import load_hints  # models import this module

                saved = load_hints.read_saved_model_cfg(filename)
                raise ValueError(load_hints.mismatch_message(filename, saved, trainer.cfg.model, e.__context__)) from e
            finally:
                self.vocab = None
            # the saves of this run continue the one read (none: a fresh start)
            setattr(trainer, PARENT_ATTR, ((extra or {}).get(RECORD_KEY) or {}).get("save_id"))
            return extra

        return trainer_load

    def trainer_should_save(self, orig: property) -> property:
        """Trainer.should_save_checkpoint_on_current_rank: every rank holding distinct experts saves."""
        orig_should = orig.fget

        def should_save(trainer: "Trainer") -> bool:
            layout = _layout(trainer)
            if layout is None or not layout.distributed:
                return orig_should(trainer)
            return layout.rank < layout.group_size  # replicas hold copies of rank r mod G's experts

        return property(should_save)

    def trainer_suffix(self, orig: property) -> property:
        """Trainer.checkpoint_suffix: while saving, ranks >= 1 name their own files."""
        orig_suffix = orig.fget

        def suffix(trainer: "Trainer") -> str:
            base = orig_suffix(trainer)
            layout = _layout(trainer) if self.saving else None
            if layout is None or not layout.distributed or layout.rank == 0:
                return base
            return base + shard_suffix(layout.rank)

        return property(suffix)

    def checkpoint_utils_save(self, orig_cu_save: Callable) -> Callable:
        """checkpoint_utils.save_checkpoint: marks one save's files; drops the manifests of pruned saves."""

        def cu_save(cfg: Any, trainer: "Trainer", epoch_itr: Any, val_loss: Optional[float]) -> Any:
            # while saving, ranks >= 1 name (copy, prune) their own files: checkpoint_X-experts-rank{r}.pt
            self.saving = True
            try:
                return orig_cu_save(cfg, trainer, epoch_itr, val_loss)
            finally:
                self.saving, self.save = False, None
                if trainer.data_parallel_rank == 0 and os.path.isdir(cfg.save_dir):
                    for f in os.listdir(cfg.save_dir):  # manifests of the saves fairseq pruned
                        if f.endswith(MANIFEST_SUFFIX) and not os.path.exists(
                                os.path.join(cfg.save_dir, f[: -len(MANIFEST_SUFFIX)] + ".pt")):
                            os.remove(os.path.join(cfg.save_dir, f))

        return cu_save

    def torch_persistent_save(self, orig: Callable) -> Callable:
        """checkpoint_utils.torch_persistent_save: every file written atomically, at the save's fault points."""

        def persistent_save(obj: Any, filename: str, async_write: bool = False) -> None:
            save = self.save
            phase = "main-file" if main_of(filename) == filename else "shard-file"
            file_io.save_torch(obj, filename, save.at(phase) if save is not None else None)

        return persistent_save

    def path_manager(self, path_manager: type) -> type:
        """checkpoint_utils.PathManager with atomic copies of a save."""
        hooks = self

        class AtomicCopies(path_manager):
            """fairseq copies a save to checkpoint_last/best byte by byte, in place: a kill mid-copy left a
            truncated checkpoint_last.pt. Here each copy is atomic and an independent file (never a hard link:
            `cp checkpoint_1_6.pt checkpoint_last.pt` must not rewrite the others), and the copied save gets its
            manifest."""

            @staticmethod
            def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
                save = hooks.save
                if save is None or path_manager.path_requires_pathmanager(dst_path):
                    return path_manager.copy(src_path, dst_path, overwrite)
                base = os.path.basename(dst_path)
                phase = "copy-last" if base.startswith("checkpoint_last") else (
                    "copy-best" if base.startswith("checkpoint_best") else "copy")
                file_io.copy_file(src_path, dst_path, save.at(phase))
                save.commit(dst_path)
                return True

        return AtomicCopies

    def load_checkpoint_to_cpu(self, orig_to_cpu: Callable) -> Callable:
        """checkpoint_utils.load_checkpoint_to_cpu: named errors, checks, the save cut for this process."""

        def to_cpu(path: str, arg_overrides: Optional[dict] = None, load_on_all_ranks: bool = False) -> dict:
            state = _read_named(orig_to_cpu, path, arg_overrides, load_on_all_ranks)
            if self.vocab and "model" in state:
                sizes, expected, allow = self.vocab
                check_vocabulary(path, state["model"], sizes)
                if expected is not None:
                    check_dictionary(path, state, expected, allow)
            return localize(path, state, self.target)

        return to_cpu

    def load_model_ensemble_and_task(self, orig_ensemble: Callable) -> Callable:
        """checkpoint_utils.load_model_ensemble_and_task: the task's dictionary must be the checkpoint's."""

        def ensemble(filenames: List[str], arg_overrides: Optional[dict] = None, task: Optional["FairseqTask"] = None,
                     *args: Any, **kwargs: Any) -> Any:
            # fairseq-generate and friends: the task's dictionary must be the one the checkpoint was trained with
            if task is None or self.vocab is not None:
                return orig_ensemble(filenames, arg_overrides, task, *args, **kwargs)
            self.vocab = ({}, _dictionary_of(task), bool(_task_option(task, "allow_dictionary_change", False)))
            try:
                return orig_ensemble(filenames, arg_overrides, task, *args, **kwargs)
            finally:
                self.vocab = None

        return ensemble


# -- command line: scripts/verify_checkpoint.py ----------------------------------------------
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
