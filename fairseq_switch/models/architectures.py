"""Named architectures (paper Table 9). Each T5 name is the dense twin of its Switch name: the same
shapes with `--moe-expert-count 0`, so the pair is FLOP-matched (router aside).

By default they are built in T5 v1.0's layout (`--layout t5`, see `t5_layout.py`): relative position
bias, RMS norms, no biases, ReLU FFN, tied input/output embeddings (`--share-all-embeddings`, needs a
joined dictionary). `--layout fairseq` builds the same shapes from fairseq's transformer layers
(pre-norm, sinusoidal positions, biases), the layout of checkpoints from before the T5 layout.
"""

from typing import Any, Tuple

from fairseq.models import register_model_architecture
from fairseq.models.transformer import base_architecture

from .switch_transformer import SwitchConfig

# name: (d_model, d_ff, heads, layers per stack, experts of the Switch variant)
SHAPES = {
    "tiny": (128, 512, 4, 2, 8),
    "small": (512, 2048, 8, 6, 32),
    "base": (768, 3072, 12, 12, 128),
    "large": (1024, 4096, 16, 24, 128),
}


def set_switch_defaults(args: Any) -> None:
    """Fill every SwitchConfig option missing from `args` (old checkpoints, Hydra configs): the one place
    the Switch options get defaults, run by fairseq (through the architecture) before every build."""
    for name, f in SwitchConfig.__dataclass_fields__.items():
        if getattr(args, name, None) is None and f.default is not None:
            setattr(args, name, f.default)
        elif not hasattr(args, name):
            setattr(args, name, None)


def _t5_layout(args: Any, d_model: int, d_ff: int, heads: int, layers: int, experts: int) -> None:
    """Set the shapes unless given on the command line (fairseq's architecture convention)."""

    def default(name: str, value: Any) -> None:
        if getattr(args, name, None) is None:
            setattr(args, name, value)

    for side in ("encoder", "decoder"):
        default(f"{side}_embed_dim", d_model)
        default(f"{side}_ffn_embed_dim", d_ff)
        default(f"{side}_attention_heads", heads)
        default(f"{side}_layers", layers)
        default(f"{side}_normalize_before", True)
    default("layout", "t5")
    default("activation_fn", "relu")
    default("share_all_embeddings", True)
    default("dropout", 0.1)
    default("moe_expert_count", experts)
    default("moe_freq", 2)
    set_switch_defaults(args)
    base_architecture(args)


def _register(name: str, shape: Tuple[int, ...], experts: int) -> None:
    def arch(args: Any) -> None:
        _t5_layout(args, *shape[:4], experts)

    arch.__name__ = f"{name}_architecture"
    arch.__doc__ = (
        f"{name}: d_model={shape[0]}, d_ff={shape[1]}, heads={shape[2]}, layers={shape[3]}, experts={experts}"
    )
    register_model_architecture("switch_transformer", name)(arch)


@register_model_architecture("switch_transformer", "switch_transformer")
def switch_transformer_architecture(args: Any) -> None:
    """fairseq's transformer defaults plus the Switch options' defaults (dense unless --moe-expert-count)."""
    set_switch_defaults(args)
    base_architecture(args)


for _size, _shape in SHAPES.items():
    _register(f"t5_{_size}", _shape, 0)
    _register(f"switch_{_size}", _shape, _shape[4])
