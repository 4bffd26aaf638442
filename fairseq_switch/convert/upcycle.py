"""Sparse upcycling (Komatsuzaki et al. 2022, "Sparse Upcycling: Training Mixture-of-Experts from Dense
Checkpoints", Sec. 3): a dense fairseq-switch checkpoint becomes a Switch checkpoint.

    fairseq-switch-upcycle runs/dense/checkpoints/checkpoint_last.pt upcycled/ --experts 8
    fairseq-switch-upcycle fs-t5-small/ fs-t5-small-8e/ --experts 8 --world-size 2   # a converted T5 folder

Every --moe-freq-th FFN (the model's own rule, `switch_layer_ids`) becomes a Switch FFN whose experts
are copies of that dense FFN (plus optional noise) and whose router starts at the paper's init
(Fedus et al. 2021, Sec. 2.4, `Top1Router.reset_parameters`). Every other tensor is copied as it is.
The optimizer state is not carried (Adam's moments would not match the new parameters) and the
update count restarts at 0; the dictionary fingerprint is kept. The output is read by
`fairseq-train --finetune-from-model` / `--restore-file` and `fairseq-generate`.

A top-1 Switch layer outputs p * expert(x); with identical experts that is p * FFN(x), and p is about
1/N at the router's init, so a plain copy does not start as the dense function. docs/upcycling.md
compares starts; the default (--gate-warmup-updates 100 --no-drop-updates 100, model options decided in
routing.py) starts exactly as the dense model in training and measured best.
"""

import argparse
import copy
import json
import os
import shlex
import sys
import uuid
from typing import Any, Callable, Dict, List, Optional

import torch

from .. import file_io as io
from ..modules.routing import RouterConfig, Top1Router
from ..modules.switch_layer import switch_layer_ids

MAIN = "checkpoint.pt"
VOCABULARY = ("dict.txt", "dict.input.txt", "dict.target.txt", "spm.model")  # a converted folder's
FFN_PARTS = ("fc1", "fc1_linear", "fc2")  # dense FFN linears, named the same inside an ExpertFFN
UPCYCLE_KEY = "upcycled_from"  # in extra_state
# The default start: gate 1 (p / stop_gradient(p)) moving to p, and no drops, over the first 100 updates;
# the best of the starts measured in docs/upcycling.md (0.015 behind dense after 300 updates, plain copy 0.066)
START_UPDATES = 100


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    v = cfg.get(name, default) if isinstance(cfg, dict) else getattr(cfg, name, default)
    return default if v is None else v


def _set(cfg: Any, name: str, value: Any) -> None:
    if isinstance(cfg, dict):
        cfg[name] = value
    else:
        setattr(cfg, name, value)


def read_dense(src: str) -> tuple:
    """(checkpoint path, state, source folder or None) of a dense checkpoint file or a converted folder."""
    folder = src if os.path.isdir(src) else None
    path = os.path.join(src, MAIN) if folder else src
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: give a dense checkpoint file or a converted T5 folder "
                                f"(one with {MAIN})")
    state = io.load_torch(path)
    if not isinstance(state, dict) or "model" not in state or not (state.get("cfg") or {}).get("model"):
        raise ValueError(f"{path} is not a fairseq-switch checkpoint (no model or no cfg.model in it)")
    return path, state, folder


def sparse_layers(model_cfg: Any, moe_freq: int) -> Dict[str, List[int]]:
    """The layers of each stack that become Switch FFNs, by the model's own rule."""
    t5 = str(_get(model_cfg, "layout", "fairseq")) == "t5"
    out = {}
    for side in ("encoder", "decoder"):
        n = int(_get(model_cfg, f"{side}_layers"))
        try:
            out[side] = switch_layer_ids(n, moe_freq, t5)
        except ValueError:
            raise ValueError(f"--moe-freq {moe_freq} does not fit the {side}'s {n} layers: no FFN would become a "
                             f"Switch FFN; use --moe-freq between 1 and {n}") from None
    return out


def upcycle_model(model: Dict[str, torch.Tensor], layers: Dict[str, List[int]], num_experts: int,
                  router_init_scale: float, expert_noise: float = 0.0, seed: int = 1) -> Dict[str, torch.Tensor]:
    """The Switch model's state dict: experts as copies of each sparse layer's dense FFN, a fresh router,
    every other tensor the same object as in `model` (tied embeddings stay tied)."""
    out = dict(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for side, ids in layers.items():
            for i in ids:
                prefix = f"{side}.layers.{i}."
                dense = {k[len(prefix):]: v for k, v in model.items()
                         if k.startswith(prefix) and k[len(prefix):].split(".")[0] in FFN_PARTS}
                if not any(k.startswith("fc1.") for k in dense):
                    raise ValueError(f"{prefix}fc1.weight is missing: the checkpoint's layers do not match its cfg")
                for k in dense:
                    del out[prefix + k]
                for e in range(num_experts):
                    for k, v in dense.items():
                        w = v.clone()
                        if expert_noise > 0 and w.dim() > 1:  # weight matrices; biases stay copies
                            noise = torch.randn(w.shape, generator=gen, dtype=torch.float32)
                            w.add_((noise * expert_noise * w.float().std()).to(w.dtype))
                        out[f"{prefix}fc1.experts.{e}.{k}"] = w
                d = dense["fc1.weight"].shape[1]
                router = Top1Router(d, RouterConfig(num_experts, init_scale=router_init_scale))
                out[prefix + "fc1.router.weight"] = router.weight.detach()  # fp32, as the model keeps it
    return out


def upcycle(src: str, out: str, num_experts: int, moe_freq: Optional[int] = None, world_size: int = 1,
            expert_noise: float = 0.0, seed: int = 1, gate_warmup_updates: int = START_UPDATES,
            no_drop_updates: int = START_UPDATES, log: Callable[[str], None] = print) -> dict:
    """Write the upcycled checkpoint of `src` at `out` (a .pt file, or a folder: out/checkpoint.pt with a
    converted folder's vocabulary). Returns the record kept in its extra_state."""
    from ..checkpoints import RECORD_KEY, SavedCheckpoint, files_of, shard_path, write_resharded
    from ..distributed import check_expert_count

    if num_experts < 2:
        raise ValueError(f"--experts must be >= 2 (a Switch layer with one expert is the dense FFN), got {num_experts}")
    if world_size < 1:
        raise ValueError(f"--world-size must be >= 1, got {world_size}")
    if world_size > 1:
        check_expert_count(num_experts, world_size)
    if expert_noise < 0:
        raise ValueError(f"--expert-noise must be >= 0, got {expert_noise}")
    main = out if out.endswith(".pt") else os.path.join(out, MAIN)
    outputs = [main] + [shard_path(main, r) for r in range(1, files_of(num_experts, world_size))]
    existing = [p for p in outputs + [main[:-3] + ".manifest.json"] if os.path.lexists(p)]
    if existing:
        raise ValueError(f"{existing[0]} already exists: give a new output path (nothing was written)")

    path, state, folder = read_dense(src)
    cfg = state["cfg"]
    model_cfg = cfg["model"]
    experts_in = int(_get(model_cfg, "moe_expert_count", 0))
    has_experts = any(".experts." in k or k.endswith(".router.weight") for k in state["model"])
    if experts_in > 0 or has_experts:
        raise ValueError(f"{path} is already sparse (--moe-expert-count {experts_in}): upcycle a dense checkpoint "
                         f"(--moe-expert-count 0)")
    freq = int(moe_freq or _get(model_cfg, "moe_freq", 2))
    layers = sparse_layers(model_cfg, freq)
    model = upcycle_model(state["model"], layers, num_experts, float(_get(model_cfg, "moe_router_init_scale", 0.1)),
                          expert_noise, seed)

    new_cfg = dict(cfg)
    new_model_cfg = dict(model_cfg) if isinstance(model_cfg, dict) else copy.copy(model_cfg)  # or a Namespace
    options = {"moe_expert_count": num_experts, "moe_freq": freq, "moe_gate_warmup_updates": gate_warmup_updates,
               "moe_no_drop_updates": no_drop_updates}
    for k, v in options.items():
        _set(new_model_cfg, k, v)
    for key in ("_name", "arch"):  # t5_small -> switch_small: the name says what it is (shapes come from cfg)
        name = _get(new_model_cfg, key)
        if isinstance(name, str) and name.startswith("t5_"):
            _set(new_model_cfg, key, "switch_" + name[3:])
    new_cfg["model"] = new_model_cfg
    out_folder = os.path.dirname(os.path.abspath(main))
    copy_vocab = folder is not None and not out.endswith(".pt")
    if copy_vocab and isinstance(new_cfg.get("task"), dict):
        new_cfg["task"] = {**new_cfg["task"], "data": out_folder}  # the folder is its own data folder, as converted

    source_record = (state.get("extra_state") or {}).get(RECORD_KEY) or {}
    updates = ((state.get("optimizer_history") or [{}])[-1]).get("num_updates")
    record = {"source": os.path.abspath(path), "source_updates": updates,
              "source_save_id": source_record.get("save_id"),
              "experts": num_experts, "moe_freq": freq, "sparse_layers": layers, "expert_noise": expert_noise,
              "seed": seed, "world_size": world_size,
              "fairseq_flags": _flags(folder, options)}
    criterion = ((state.get("optimizer_history") or [{}])[-1]).get("criterion_name", "SwitchCrossEntropyCriterion")
    upcycled = {
        **{k: v for k, v in state.items() if k not in ("model", "cfg", "last_optimizer_state", "extra_state")},
        "cfg": new_cfg, "model": model, "last_optimizer_state": None,
        # num_updates 0: --restore-file starts a new schedule (Adam's moments are fresh), and the model's
        # warm-up options count from the first update
        "optimizer_history": [{"criterion_name": criterion, "optimizer_name": None, "lr_scheduler_state": {},
                               "num_updates": 0}],
        "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True, "version": 2},
                        "previous_training_time": 0.0, UPCYCLE_KEY: record,
                        RECORD_KEY: {"save_id": uuid.uuid4().hex, "dictionary": source_record.get("dictionary")}},
    }
    if source_record.get("dictionary") is None:
        log(f"[upcycle] {path} records no dictionary fingerprint (an older save): fine-tuning checks the size only")

    log(f"[upcycle] {path}: {_get(model_cfg, 'layout', 'fairseq')} layout, {layers['encoder']} (encoder) and "
        f"{layers['decoder']} (decoder) become Switch FFNs of {num_experts} experts (--moe-freq {freq})")
    os.makedirs(out_folder, exist_ok=True)
    if copy_vocab:
        for name in VOCABULARY:
            if os.path.isfile(os.path.join(folder, name)):
                io.copy_file(os.path.join(folder, name), os.path.join(out_folder, name))
    if not out.endswith(".pt"):
        io.save_json(record, os.path.join(out_folder, "upcycle.json"))
    written = write_resharded(SavedCheckpoint(main, upcycled), main, world_size)
    for p in written:
        log(f"[upcycle] wrote {p} ({os.path.getsize(p) / 2**20:.1f} MiB)")
    log(f"[upcycle] train with: --finetune-from-model {main} {shlex.join(record['fairseq_flags'])}")
    return record


def _flags(folder: Optional[str], options: Dict[str, int]) -> List[str]:
    """The model flags to train the upcycled model with: a converted folder's (conversion.json), with the
    Switch options in place of its --moe-expert-count 0; else the Switch options alone."""
    base: List[str] = []
    conversion = os.path.join(folder, "conversion.json") if folder else None
    if conversion and os.path.isfile(conversion):
        with open(conversion) as f:
            flags = json.load(f).get("fairseq_flags") or []
        skip = {"--" + k.replace("_", "-") for k in options}
        i = 0
        while i < len(flags):
            if flags[i] in skip:
                i += 2
                continue
            base.append(flags[i])
            i += 1
    for k, v in options.items():
        if v or k in ("moe_expert_count", "moe_freq"):
            base += ["--" + k.replace("_", "-"), str(v)]
    return base


def main(argv: Optional[List[str]] = None) -> int:
    """fairseq-switch-upcycle / scripts/upcycle_checkpoint.py: exit status 0, or 2 with a one-line error."""
    p = argparse.ArgumentParser(prog="fairseq-switch-upcycle", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("src", help="a dense checkpoint file (either layout) or a converted T5 folder (its checkpoint.pt)")
    p.add_argument("out", help="output: a .pt file, or a folder (OUT/checkpoint.pt; a converted folder's "
                               "dict.txt and spm.model are copied along)")
    p.add_argument("--experts", type=int, required=True, help="experts per Switch FFN (N)")
    p.add_argument("--moe-freq", type=int, help="every moe_freq-th FFN becomes a Switch FFN (default: the "
                                                "checkpoint's --moe-freq, else 2)")
    p.add_argument("--expert-noise", type=float, default=0.0,
                   help="add Gaussian noise of this many times each weight matrix's std to every expert (default 0: "
                        "exact copies)")
    p.add_argument("--seed", type=int, default=1, help="seed of the router init and the noise")
    p.add_argument("--world-size", type=int, default=1, help="write the expert-sharded save of this many ranks")
    p.add_argument("--gate-warmup-updates", type=int, default=START_UPDATES,
                   help="--moe-gate-warmup-updates for the checkpoint's cfg and the printed flags (docs/upcycling.md; "
                        "default %(default)s; 0: Switch's gate p from the start)")
    p.add_argument("--no-drop-updates", type=int, default=START_UPDATES,
                   help="--moe-no-drop-updates for the checkpoint's cfg and the printed flags (default %(default)s)")
    a = p.parse_args(argv)
    try:
        upcycle(a.src, a.out, a.experts, a.moe_freq, a.world_size, a.expert_noise, a.seed,
                a.gate_warmup_updates, a.no_drop_updates)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"fairseq-switch-upcycle: error: {e}", file=sys.stderr)
        return 2
    return 0
