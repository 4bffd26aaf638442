"""The frozen teacher of distillation (Fedus et al. 2021, Sec. 4.2).

Any checkpoint of this plugin (Switch or dense, one file or an expert-parallel save with its
`-experts-rank{r}` files) is read whole into this process: every rank holds all experts and runs
the teacher alone, with no all-to-all, in eval mode, routing every token (no capacity drops).
"""

import logging
import os
from contextlib import nullcontext
from typing import Any, Optional

import torch
import torch.nn as nn
from fairseq import models
from fairseq.data import Dictionary
from omegaconf import OmegaConf, open_dict

from ..checkpoints import RECORD_KEY, check_dictionary, dictionary_record, load_checkpoint_whole
from ..checkpoints.options import checkpoint_checks
from ..modules.switch_layer import SwitchFFN
from .switch_host import routing_mode

logger = logging.getLogger(__name__)


def read_checkpoint(path: str, flag: str) -> dict:
    """A checkpoint's state with every expert in this process (`flag` names the option, for errors)."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path}: no such checkpoint file")
    return load_checkpoint_whole(path)


def _saved_dictionary(state: dict) -> Optional[str]:
    """The dict file of the data the checkpoint was trained on, if it is still there."""
    task = (state.get("cfg") or {}).get("task") or {}
    data = str(task.get("data") or "").split(os.pathsep)[0]
    names = ["dict.txt"] + [f"dict.{task.get(k)}.txt" for k in ("target_lang", "source_lang") if task.get(k)]
    roots = [data] + [os.path.join(data, m) for m in str(task.get("mixture") or "").split(",") if m]
    for root in roots:
        for name in names:
            if root and os.path.isfile(os.path.join(root, name)):
                return os.path.join(root, name)
    return None


def check_teacher_vocabulary(path: str, state: dict, dictionary: Dictionary, flag: str = "--teacher-path",
                             task: Optional[Any] = None) -> None:
    """Teacher and student must share one dictionary: distillation matches their distributions index by index.

    Compared by the fingerprint the checkpoint records, else (older checkpoints) with its training data's
    dict.txt, if still there, else by size."""
    emb = state["model"].get("decoder.embed_tokens.weight", state["model"].get("encoder.embed_tokens.weight"))
    fix = ("encode the student's data with the teacher's SentencePiece model and dict.txt "
           "(scripts/prepare_downstream_data.py --pretrained <the teacher's pretraining data folder>)")
    if emb is not None and emb.shape[0] != len(dictionary):
        raise ValueError(
            f"{flag} {path}: the teacher's vocabulary has {emb.shape[0]} symbols but the student's dictionary has "
            f"{len(dictionary)}; teacher and student must share one vocabulary: {fix}"
        )
    if ((state.get("extra_state") or {}).get(RECORD_KEY) or {}).get("dictionary") is not None:
        cfg = getattr(task, "cfg", None)
        source = str(getattr(cfg, "data", "") or "the student's data").split(os.pathsep)[0]
        check_dictionary(f"{flag} {path}", state, dictionary_record(dictionary, source),
                         checkpoint_checks(task).allow_dictionary_change)
        return
    saved = _saved_dictionary(state)
    if saved is None:
        logger.warning(f"{flag} {path}: its training data's dict.txt is gone, so only the vocabulary size was checked "
                       f"({len(dictionary)} symbols)")
        return
    theirs = Dictionary.load(saved)
    for i in range(min(len(theirs), len(dictionary))):
        if theirs[i] != dictionary[i]:
            raise ValueError(
                f"{flag} {path}: the teacher's dictionary ({saved}) and the student's differ at index {i} "
                f"({theirs[i]!r} vs {dictionary[i]!r}); teacher and student must share one vocabulary: {fix}"
            )


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no gradients. `teacher_logits` routes it as in generation: every token, none dropped."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_model(path: str, task: Any, flag: str = "--path") -> nn.Module:
    """Build the checkpoint's model for `task`'s dictionary and load it whole into this process, in eval mode."""
    state = read_checkpoint(path, flag)
    check_teacher_vocabulary(path, state, task.target_dictionary, flag, task)
    cfg = state["cfg"]
    # a Namespace for checkpoints of the argparse route, a DictConfig for Hydra's
    with open_dict(cfg.model) if OmegaConf.is_config(cfg.model) else nullcontext():
        cfg.model.moe_local_experts = True  # runs on each rank alone, no token exchange
        cfg.model.moe_gen_drop = False  # see teacher_logits
        cfg.model.moe_capacity_per_sequence = None  # a converted teacher too routes every token
    # fairseq's generic builder, not task.build_model: the task keeps per-model state (its
    # validation generator) that must stay the student's
    model = models.build_model(cfg.model, task, from_checkpoint=True)
    model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    model.num_updates = int(((state.get("optimizer_history") or [{}])[-1]).get("num_updates", 0))
    return model.eval()


def load_teacher(path: str, task: Any, flag: str = "--teacher-path") -> nn.Module:
    """The checkpoint's model (`load_model`), frozen (kept on CPU until used)."""
    model = load_model(path, task, flag)
    n_layers = sum(1 for m in model.modules() if isinstance(m, SwitchFFN))
    experts = max((m.num_experts for m in model.modules() if isinstance(m, SwitchFFN)), default=0)
    logger.info(
        f"teacher {path}: {sum(p.numel() for p in model.parameters()):,} params, "
        f"{n_layers} Switch layers x {experts} experts; frozen, eval mode, no token dropped"
    )
    return freeze(model)


def teacher_logits(teacher: nn.Module, net_input: dict, like: torch.Tensor) -> torch.Tensor:
    """The teacher's output logits (B x T x V) for a student's batch, on the student's device and dtype."""
    p = next(teacher.parameters())
    if p.device != like.device or (like.dtype != p.dtype and like.is_floating_point()):
        teacher.to(device=like.device, dtype=like.dtype if like.is_floating_point() else p.dtype)
    teacher.eval()
    with torch.no_grad(), routing_mode(teacher, "generate"):
        out = teacher(**net_input)
    return out[0].detach()
