"""The Switch options of one model as one frozen object, `SwitchLayers`.

`validate_switch_args` checks the model options and builds it once; `SwitchTransformerModel.build_model`
hands it whole to both stacks, whose Switch FFNs all share its `RouterConfig`. Checking only reads the
options: missing ones are filled by the architecture functions (`architectures.py`), which fairseq runs
before every build.
"""

from dataclasses import dataclass
from typing import Any, FrozenSet, Optional

import torch.distributed as dist
from fairseq import utils

from ..distributed import SUPPORTED_DDP_BACKENDS, check_expert_count
from ..modules.routing import RouterConfig
from ..modules.switch_layer import SwitchFFN, switch_layer_ids


def is_t5_layout(cfg: Any) -> bool:
    return str(getattr(cfg, "layout", "fairseq")) == "t5"


@dataclass(frozen=True)
class SwitchLayers:
    """Which layers of a stack are Switch FFNs and how each is built."""

    router: Optional[RouterConfig] = None  # None: the dense twin (--moe-expert-count 0)
    moe_freq: int = 2
    t5_layout: bool = False  # T5 layout: no biases, the paper's init, gated experts with --ffn-gated
    activation_fn: str = "relu"
    expert_dropout: float = 0.0
    gated: bool = False
    expert_init_scale: Optional[float] = None  # None keeps torch's init (fairseq layout)
    local_experts: bool = False  # every expert in this process (a distillation teacher)

    def layer_ids(self, num_layers: int) -> FrozenSet[int]:
        if self.router is None:
            return frozenset()
        return frozenset(switch_layer_ids(num_layers, self.moe_freq, self.t5_layout))

    def build_ffn(self, embed_dim: int, ffn_dim: int) -> SwitchFFN:
        if self.router is None:
            raise ValueError("a dense model (--moe-expert-count 0) has no Switch FFN")
        return SwitchFFN(
            embed_dim,
            ffn_dim,
            self.router,
            activation_fn=utils.get_activation_fn(activation=self.activation_fn),
            expert_dropout=self.expert_dropout,
            bias=not self.t5_layout,  # T5 has no biases (Raffel et al. 2019)
            gated=self.gated,
            expert_init_scale=self.expert_init_scale,
            local_experts=self.local_experts,
        )


def validate_switch_args(args: Any) -> SwitchLayers:
    """Clear errors for bad MoE settings, before anything is built; `args` is only read."""
    t5 = is_t5_layout(args)
    if t5:
        validate_t5_args(args)
    n = args.moe_expert_count
    if n is None or n < 0:
        raise ValueError(f"--moe-expert-count must be >= 1 for a Switch model (or 0 for the dense twin), got {n}")
    if n == 0:
        return SwitchLayers()
    router = RouterConfig.from_args(args)  # checks the routing options
    expert_dropout = args.moe_expert_dropout
    if expert_dropout is not None and not 0 <= expert_dropout <= 1:
        raise ValueError(f"--moe-expert-dropout must be in [0, 1], got {expert_dropout}; fine-tuning uses 0.4")
    # Raises for --moe-freq < 1 or larger than the number of layers.
    switch_layer_ids(min(args.encoder_layers, args.decoder_layers), args.moe_freq, t5)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        check_expert_parallel_args(args, dist.get_world_size())
    if expert_dropout is None:
        expert_dropout = args.activation_dropout or getattr(args, "relu_dropout", 0.0) or 0.0
    return SwitchLayers(
        router=router,
        moe_freq=int(args.moe_freq),
        t5_layout=t5,
        activation_fn=str(args.activation_fn),
        expert_dropout=float(expert_dropout),
        gated=t5 and bool(args.ffn_gated),
        expert_init_scale=args.init_scale if t5 else None,
        local_experts=bool(getattr(args, "moe_local_experts", False)),
    )


def validate_t5_args(args: Any) -> None:
    if args.attention_head_dim is not None and args.attention_head_dim < 1:
        raise ValueError(f"--attention-head-dim must be >= 1, got {args.attention_head_dim}")
    if args.relative_attention_num_buckets < 4 or args.relative_attention_num_buckets % 2:
        raise ValueError(f"--relative-attention-num-buckets must be an even number >= 4 (T5: 32), got "
                         f"{args.relative_attention_num_buckets}")
    if args.relative_attention_max_distance <= args.relative_attention_num_buckets // 4:
        raise ValueError(f"--relative-attention-max-distance must exceed a quarter of the buckets (T5: 128), got "
                         f"{args.relative_attention_max_distance}")
    if getattr(args, "embed_init_std", None) is not None and not args.embed_init_std > 0:
        raise ValueError(f"--embed-init-std must be > 0, got {args.embed_init_std}; T5 uses 1.0")
    if not args.init_scale > 0:
        raise ValueError(f"--init-scale must be > 0, got {args.init_scale}; the paper uses 0.1 (Sec. 2.4)")
    if not args.layer_norm_eps > 0:
        raise ValueError(f"--layer-norm-eps must be > 0, got {args.layer_norm_eps}; T5 uses 1e-6")


def check_expert_parallel_args(args: Any, world_size: int) -> None:
    """Settings under which expert-parallel training would silently compute wrong numbers."""
    check_expert_count(args.moe_expert_count, world_size)
    backend = getattr(args, "ddp_backend", "pytorch_ddp")
    if backend not in SUPPORTED_DDP_BACKENDS:
        raise ValueError(
            f"--ddp-backend {backend} would average (or shard) the expert weights across ranks; expert parallelism "
            f"supports {', '.join(SUPPORTED_DDP_BACKENDS)}: use --ddp-backend c10d or legacy_ddp"
        )
    half = getattr(args, "fp16", False) or getattr(args, "bf16", False)
    mem_eff = getattr(args, "memory_efficient_fp16", False) or getattr(args, "memory_efficient_bf16", False)
    if half and not mem_eff and not getattr(args, "fp16_no_flatten_grads", False):
        raise ValueError(
            "--fp16/--bf16 with expert parallelism needs --fp16-no-flatten-grads: the flat fp32 copy loses the "
            "mark that keeps the experts' gradients apart from the shared ones (or use --memory-efficient-fp16)"
        )
    if getattr(args, "store_ema", False):
        raise ValueError("--store-ema keeps a copy of rank 0's model only, which misses the other ranks' experts; "
                         "drop --store-ema with expert parallelism")
    if getattr(args, "encoder_layerdrop", 0) or getattr(args, "decoder_layerdrop", 0):
        raise ValueError(
            "--encoder-layerdrop/--decoder-layerdrop skip layers at random per rank, so ranks would miss each "
            "other's all-to-all; set them to 0 with expert parallelism"
        )
