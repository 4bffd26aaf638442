"""What to tell a user whose model does not fit the checkpoint it loads: the flags that build the saved model.

fairseq only says "Cannot load model parameters from checkpoint X; please ensure that the architectures
match", and the cause is rarely --arch: a converted checkpoint needs the flags its conversion printed (kept in
conversion.json next to it), a T5-layout save needs --layout t5, a Switch save its expert count. The flags
come from conversion.json when there is one, else from the model options saved in the checkpoint.
"""

import json
import os
import shlex
from typing import Any, Iterable, List, Optional

# the options that decide which weights a model has and their shapes
SHAPE_OPTIONS = (
    "layout", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_layers", "encoder_attention_heads",
    "decoder_embed_dim", "decoder_ffn_embed_dim", "decoder_layers", "decoder_attention_heads", "attention_head_dim",
    "ffn_gated", "untied_lm_head", "share_all_embeddings", "share_decoder_input_output_embed",
    "relative_attention_num_buckets", "moe_expert_count", "moe_freq",
)
EXPERT_LAYOUT_OPTIONS = ("encoder_layers", "decoder_layers", "moe_expert_count", "moe_freq")


def option(cfg: Any, name: str) -> Any:
    """An option of a model config saved as a dict, an argparse Namespace or a DictConfig (None if absent)."""
    if cfg is None:
        return None
    return cfg.get(name) if hasattr(cfg, "get") else getattr(cfg, name, None)


def _flag(name: str, value: Any) -> str:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else f"no {flag}"
    return f"{flag} {value}"


def conversion_flags(path: str) -> Optional[str]:
    """The fine-tuning flags scripts/convert_checkpoint.py printed for the checkpoint at `path`, if it made it."""
    record = os.path.join(os.path.dirname(os.path.abspath(path)), "conversion.json")
    try:
        with open(record, encoding="utf-8") as f:
            flags = json.load(f)["fairseq_flags"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return f"--arch switch_transformer {shlex.join(flags)} (from {record})"


def saved_flags(path: str, saved: Any, current: Any = None, names: Iterable[str] = SHAPE_OPTIONS) -> str:
    """The flags that build the model saved at `path` (`saved`: its cfg.model): conversion.json's when there is
    one; else --arch and the options among `names` whose saved value differs from `current` (all of them when
    `current` is None)."""
    converted = conversion_flags(path)
    if converted:
        return converted
    parts: List[str] = []
    arch = option(saved, "arch") or option(saved, "_name")
    if arch and (current is None or arch != (option(current, "arch") or option(current, "_name"))):
        parts.append(f"--arch {arch}")
    for name in names:
        value = option(saved, name)
        if value is not None and (current is None or value != option(current, name)):
            parts.append(_flag(name, value))
    return " ".join(parts) or "(the checkpoint records no model options)"


def differences(saved: Any, current: Any) -> List[str]:
    """'--layout t5 (this model: fairseq)' for each shape option where the two configs differ."""
    out = []
    for name in ("arch",) + SHAPE_OPTIONS:
        a, b = option(saved, name), option(current, name)
        if a is not None and b is not None and a != b:
            out.append(f"{_flag(name, a)} (this model: {b})")
    return out


def mismatch_message(path: str, saved: Any, current: Any, error: Optional[BaseException] = None) -> str:
    """One line for a checkpoint whose weights do not fit the model built from `current` (cfg.model)."""
    diff = differences(saved, current)
    detail = f"it was saved with {', '.join(diff)}" if diff else (
        f"its weights differ ({str(error).strip().splitlines()[0][:200]})" if error else "its weights differ")
    return (f"{path} does not fit this model: {detail}; build the model with the checkpoint's flags: "
            f"{saved_flags(path, saved, current)}")


def read_saved_model_cfg(path: str) -> Any:
    """cfg.model (or the legacy args) of the checkpoint at `path`, read without loading its tensors."""
    from .. import file_io

    state = file_io.load_torch(path, mmap=True)
    cfg = state.get("cfg") or {}
    return option(cfg, "model") or state.get("args")
