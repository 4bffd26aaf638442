"""Checks of the options a plugin task is handed, before they can fail deep inside fairseq or be ignored.

Each raises a ValueError that names the bad option and the fix (printed as one line by cli_errors);
none changes what it checks.
"""

import argparse
import difflib
from typing import Any, Iterable, Optional

import numpy as np
import torch
from omegaconf import OmegaConf


def refuse_unknown_keys(given: Iterable[str], valid: Iterable[str], section: str) -> None:
    """Hydra lets `+model.moe_expert_cont=2` add a key no option reads: it would be ignored without a word."""
    valid = sorted(set(valid))
    unknown = sorted(set(given) - set(valid))
    if not unknown:
        return
    key = unknown[0]
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"did you mean {section}.{near[0]}?" if near else f"valid keys: {', '.join(valid)}"
    others = f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
    raise ValueError(f"unknown option {section}.{key}{others}: nothing reads it, so it would be ignored; {hint}")


def model_option_names(model_name: str) -> Optional[set]:
    """The options a legacy (argparse) fairseq model reads, by architecture or model name; None for a
    model fairseq builds from a dataclass (fairseq itself refuses unknown keys there)."""
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_DATACLASS_REGISTRY

    if model_name in MODEL_DATACLASS_REGISTRY or model_name not in ARCH_MODEL_REGISTRY:
        return None
    parser = argparse.ArgumentParser(add_help=False)
    ARCH_MODEL_REGISTRY[model_name].add_args(parser)
    return {a.dest for a in parser._actions} | {"_name", "arch"}


# once model options, now the task's (it initialises the student it builds)
MOVED_TO_TASK = ("student_init_from", "student_ffn_init", "student_ffn_expert")


def check_model_cfg(cfg: Any) -> None:
    """A model config from Hydra (a DictConfig): refuse keys that no option of its model reads. An argparse
    Namespace has passed fairseq's parser, which refuses unknown flags itself."""
    if not OmegaConf.is_config(cfg):
        return
    name = cfg.get("_name") or cfg.get("arch")
    valid = model_option_names(str(name)) if name else None
    moved = [k for k in cfg.keys() if k in MOVED_TO_TASK and k not in (valid or ())]
    if moved:
        raise ValueError(f"model.{moved[0]} is a task option: set task.{moved[0]} instead")
    if valid is not None:
        refuse_unknown_keys(cfg.keys(), valid, "model")


def check_precision(model_cfg: Any) -> None:
    """--fp16 keeps fairseq's fp32 master copy on the current CUDA device: without one (or with --cpu) it stops
    with "Torch not compiled with CUDA enabled". The common options sit in the argparse Namespace that
    fairseq hands a legacy model, or at the root of the Hydra config."""
    common = model_cfg._get_root().get("common", {}) if OmegaConf.is_config(model_cfg) else model_cfg

    def opt(name: str) -> bool:
        return bool(common.get(name, False) if hasattr(common, "get") else getattr(common, name, False))

    other_half = any(opt(n) for n in ("memory_efficient_fp16", "memory_efficient_bf16", "amp", "bf16"))
    if opt("fp16") and not other_half and (opt("cpu") or not torch.cuda.is_available()):
        where = "--cpu" if opt("cpu") else "this machine has no CUDA GPU"
        raise ValueError(f"--fp16 needs a CUDA GPU (fairseq keeps its fp32 master weights there), but {where}: "
                         f"train on CPU with --bf16 (bfloat16, fp32 router) or --memory-efficient-fp16, or drop --fp16")


def check_max_tokens(dataset: Any, max_tokens: Optional[int], split: str, whole: bool, hint: str = "") -> None:
    """fairseq never splits an example across batches, and it counts --max-tokens in the max positions: an
    example longer than it is dropped from training with a warning, refused in validation, and when none fits
    the batcher fails (IndexError, or 'Sentences lengths should not exceed max_tokens'). Refuse a --max-tokens
    under the shortest example, or with `whole` (every example counts: span corruption's are one length) under
    the longest."""
    if not max_tokens or len(dataset) == 0:
        return
    indices = np.arange(len(dataset), dtype=np.int64)
    try:
        sizes = np.asarray(dataset.num_tokens_vec(indices))
    except NotImplementedError:
        sizes = np.array([dataset.num_tokens(int(i)) for i in indices])
    size = int(sizes.max() if whole else sizes.min())
    if size <= max_tokens:
        return
    option = "--max-tokens" if split.startswith("train") else "--max-tokens-valid (default: --max-tokens)"
    raise ValueError(
        f"{option} {max_tokens} is smaller than the {'' if whole else 'shortest '}examples of the {split} split "
        f"({size} tokens, the larger of input and target with </s>), and a batch holds whole examples: use "
        f"{option.split()[0]} {int(sizes.max())} or more{hint}"
    )
