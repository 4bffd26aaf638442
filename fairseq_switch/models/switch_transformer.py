"""`switch_transformer`: fairseq's encoder-decoder transformer with Switch FFNs (paper Sec. 2).

fairseq's encoder, decoder and layers are reused as they are. In every `--moe-freq`-th layer
the FFN block (fc1 -> activation -> dropout -> fc2) is swapped for a `SwitchFFN`; the layer's
own forward, layer norms, dropout and residual stay fairseq's. `--moe-expert-count 0` is the
dense twin: the very same model with no swap.
"""

import argparse
import logging
from dataclasses import dataclass, field
from contextlib import AbstractContextManager
from typing import Any, Dict, List, Optional, Tuple, Union

import torch.distributed as dist
import torch.nn as nn
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import FairseqEncoder, FairseqIncrementalDecoder, register_model
from fairseq.models.transformer import (
    TransformerConfig,
    TransformerDecoderBase,
    TransformerEncoderBase,
    TransformerModel,
)
from omegaconf import OmegaConf
from torch import Tensor

from .. import optim  # noqa: F401  (registers --optimizer t5_adafactor, the paper's Adafactor)
from ..distributed import SUPPORTED_DDP_BACKENDS, check_expert_count
from ..modules.routing import DISPATCH_CHOICES, RouterConfig, RoutingMode
from ..modules.switch_layer import SwitchFFN, switch_layer_ids
from .hub import HubMixin
from .student_init import FFN_INIT_CHOICES
from .switch_host import SwitchHostMixin, build_switch_ffn, is_t5_layout, routing_mode
from .t5_layout import T5Decoder, T5Encoder, build_t5_embedding

logger = logging.getLogger(__name__)


LAYOUT_CHOICES = ("fairseq", "t5")


@dataclass
class SwitchConfig(FairseqDataclass):
    """Mixture-of-experts and T5-layout options; every other option is fairseq's transformer's."""

    layout: ChoiceEnum(list(LAYOUT_CHOICES)) = field(
        default="fairseq",
        metadata={
            "help": "t5: T5 v1.0's layout, which Switch keeps (relative position bias, RMS norm, no biases, no "
            "embedding or attention scaling; the t5_*/switch_* architectures' default, and what converted T5/Switch "
            "checkpoints use); fairseq: fairseq's transformer layers (sinusoidal positions, LayerNorm, biases), "
            "the layout of checkpoints trained before the T5 layout existed"
        },
    )
    attention_head_dim: Optional[int] = field(
        default=None, metadata={"help": "T5 layout: d_kv per head (default d_model / heads; T5-3B/11B differ)"}
    )
    ffn_gated: bool = field(
        default=False,
        metadata={"help": "T5 layout: T5 v1.1's gated FFN, activation(fc1 x) * fc1_linear(x) (with "
                          "--activation-fn gelu_accurate, transformers' gelu_new), in dense FFNs and experts"},
    )
    untied_lm_head: bool = field(
        default=False,
        metadata={"help": "T5 layout: an output projection of its own (T5 v1.1's lm_head) instead of the shared "
                          "embedding, and no d_model^-0.5 rescaling of the decoder output"},
    )
    relative_attention_num_buckets: int = field(
        default=32, metadata={"help": "T5 layout: relative position buckets per stack"}
    )
    relative_attention_max_distance: int = field(
        default=128, metadata={"help": "T5 layout: distance from which all offsets share the last bucket"}
    )
    layer_norm_eps: float = field(default=1e-6, metadata={"help": "T5 layout: RMS norm epsilon"})
    init_scale: float = field(
        default=0.1,
        metadata={"help": "T5 layout: every weight from a truncated normal with std sqrt(s / fan_in) (Sec. 2.4: "
                          "s = 0.1; 1.0 is T5's); queries also carry T5's 1/sqrt(d_kv), embeddings std sqrt(s)"},
    )
    embed_init_std: Optional[float] = field(
        default=None,
        metadata={"help": "T5 layout: std of the embedding's (and an untied head's) truncated normal; default "
                          "sqrt(init_scale), the Sec. 2.4 rule with fan-in 1; T5 uses 1.0"},
    )

    moe_expert_count: int = field(
        default=0, metadata={"help": "experts per Switch FFN layer (N); 0 builds the dense twin"}
    )
    moe_freq: int = field(
        default=2,
        metadata={"help": "every moe_freq-th FFN (encoder and decoder) is a Switch FFN; 2 = every other (paper)"},
    )
    moe_capacity_factor: float = field(
        default=1.25, metadata={"help": "training capacity factor: slots per expert = ceil(tokens/N * factor)"}
    )
    moe_eval_capacity_factor: float = field(
        default=2.0, metadata={"help": "capacity factor in eval mode (validation)"}
    )
    moe_eval_no_drop: bool = field(
        default=False, metadata={"help": "drop no token in eval mode (capacity = all tokens), ignoring the eval factor"}
    )
    moe_gen_drop: bool = field(
        default=False,
        metadata={
            "help": "let generation (fairseq-generate, incremental decoding) drop tokens at the eval capacity "
            "factor; by default generation routes every token"
        },
    )
    moe_capacity_per_sequence: Optional[int] = field(
        default=None,
        metadata={
            "help": "in eval mode and generation, each expert keeps at most this many tokens of each sequence "
            "(transformers' SwitchTransformers expert_capacity; converted checkpoints set it) instead of the eval "
            "capacity factor; training keeps --moe-capacity-factor; unset or 0: off"
        },
    )
    moe_min_capacity: int = field(default=4, metadata={"help": "minimum slots per expert, so tiny batches still route"})
    moe_jitter_eps: float = field(
        default=0.01, metadata={"help": "router input jitter U(1-eps, 1+eps), training only; 0 disables"}
    )
    moe_batch_prioritized: bool = field(
        default=False,
        metadata={"help": "keep the tokens with the highest router probability first (default: position order)"},
    )
    moe_router_init_scale: float = field(
        default=0.1, metadata={"help": "router init: truncated normal, std = sqrt(scale / d_model) (Sec. 2.4)"}
    )
    moe_gate_warmup_updates: int = field(
        default=0, metadata={"help": "upcycled start (docs/upcycling.md): the combine weight is p / stop_gradient(p) = "
                                     "1 at update 0 and reaches the router probability p at this update; 0: off"})
    moe_no_drop_updates: int = field(
        default=0, metadata={"help": "upcycled start: the first this many training updates drop no token; 0: off"})
    moe_expert_dropout: Optional[float] = field(
        default=None,
        metadata={
            "help": "dropout on the experts' hidden activation (paper fine-tuning: 0.4); default --activation-dropout"
        },
    )
    moe_dispatch: ChoiceEnum(list(DISPATCH_CHOICES)) = field(
        default="index",
        metadata={"help": "index: gather/scatter by index (fast); grouped: as index, each expert layer one grouped "
                          "GEMM (torch's grouped_mm; falls back to index where torch lacks it); einsum: fairscale "
                          "MOELayer reference path"},
    )
    moe_local_experts: bool = field(
        default=False,
        metadata={"help": "hold every expert in this process and exchange no tokens, even under torch.distributed "
                          "(set for a distillation teacher, which each rank runs alone)"},
    )
    student_init_from: Optional[str] = field(
        default=None,
        metadata={
            "help": "distillation (Sec. 4.2): when training starts, copy every weight of this (teacher) checkpoint "
            "whose name and shape match: embeddings, attention, norms, dense FFNs; experts and routers are not "
            "copied. A resumed run keeps its own weights; fairseq-generate ignores the option"
        },
    )
    student_ffn_init: ChoiceEnum(list(FFN_INIT_CHOICES)) = field(
        default="random",
        metadata={"help": "with --student-init-from, a dense FFN where the teacher has a Switch FFN starts: random "
                          "(paper), from one expert (--student-ffn-expert) or the mean of the experts"},
    )
    student_ffn_expert: int = field(
        default=0, metadata={"help": "which expert --student-ffn-init expert copies"}
    )


def _identity(x: Any) -> Any:
    return x


def _swap_in_switch_ffn(layer: nn.Module, cfg: Any, embed_dim: int, ffn_dim: int) -> SwitchFFN:
    """Replace a fairseq layer's fc1 -> act -> dropout -> fc2 by one SwitchFFN, keeping its forward."""
    if getattr(layer, "ffn_layernorm", None) is not None:
        raise ValueError("--scale-fc puts a LayerNorm inside the FFN; it is not supported with Switch FFNs")
    if cfg.quant_noise.pq > 0:
        raise ValueError("--quant-noise-pq is not supported on Switch FFN layers; set it to 0")
    ffn = build_switch_ffn(cfg, embed_dim, ffn_dim)
    layer.fc1 = ffn
    layer.fc2 = nn.Identity()
    layer.activation_fn = _identity
    layer.activation_dropout_module = nn.Identity()
    return ffn


class _FairseqLayoutHost(SwitchHostMixin):
    def _maybe_swap(self, layer: nn.Module, cfg: Any, embed_dim: int, ffn_dim: int) -> nn.Module:
        if self._next_is_switch():
            _swap_in_switch_ffn(layer, cfg, embed_dim, ffn_dim)
        return layer


class SwitchTransformerEncoder(_FairseqLayoutHost, TransformerEncoderBase):
    def __init__(self, cfg: Any, dictionary: Any, embed_tokens: nn.Module, return_fc: bool = False):
        self._init_switch_ids(cfg, cfg.encoder.layers)
        TransformerEncoderBase.__init__(self, cfg, dictionary, embed_tokens, return_fc=return_fc)

    def build_encoder_layer(self, cfg: Any) -> nn.Module:
        layer = super().build_encoder_layer(cfg)
        return self._maybe_swap(layer, cfg, cfg.encoder.embed_dim, cfg.encoder.ffn_embed_dim)

    def forward(
        self,
        src_tokens: Tensor,
        src_lengths: Optional[Tensor] = None,
        return_all_hiddens: bool = False,
        token_embeddings: Optional[Tensor] = None,
    ) -> Dict[str, List[Tensor]]:
        self._set_routing_context(src_tokens)
        return super().forward(src_tokens, src_lengths, return_all_hiddens, token_embeddings)


class SwitchTransformerDecoder(_FairseqLayoutHost, TransformerDecoderBase):
    def __init__(
        self,
        cfg: Any,
        dictionary: Any,
        embed_tokens: nn.Module,
        no_encoder_attn: bool = False,
        output_projection: Optional[nn.Module] = None,
    ):
        self._init_switch_ids(cfg, cfg.decoder.layers)
        TransformerDecoderBase.__init__(
            self, cfg, dictionary, embed_tokens, no_encoder_attn=no_encoder_attn, output_projection=output_projection
        )

    def build_decoder_layer(self, cfg: Any, no_encoder_attn: bool = False) -> nn.Module:
        layer = super().build_decoder_layer(cfg, no_encoder_attn)
        return self._maybe_swap(layer, cfg, cfg.decoder.embed_dim, cfg.decoder.ffn_embed_dim)

    def extract_features(
        self,
        prev_output_tokens: Tensor,
        encoder_out: Optional[Dict[str, List[Tensor]]] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        **kwargs: Any,
    ) -> Tuple[Tensor, Dict[str, Any]]:
        tokens = prev_output_tokens[:, -1:] if incremental_state is not None else prev_output_tokens
        self._set_routing_context(tokens, incremental=incremental_state is not None)
        return super().extract_features(prev_output_tokens, encoder_out, incremental_state, **kwargs)


@register_model("switch_transformer")
class SwitchTransformerModel(HubMixin, TransformerModel):
    """fairseq's transformer with a Switch FFN in every `--moe-freq`-th layer.

    The decoder's extra output carries `moe_routing`: one RouterOutput per Switch FFN
    (encoder layers first), which `switch_cross_entropy` turns into losses and metrics.
    """

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        super().add_args(parser)
        gen_parser_from_dataclass(parser, SwitchConfig(), delete_default=True)

    @classmethod
    def build_model(cls, args: Any, task: Any) -> "SwitchTransformerModel":
        if OmegaConf.is_config(args):
            # Hydra hands legacy models a DictConfig; TransformerConfig.from_namespace would drop
            # every key it does not declare (all the moe_* options), so flatten it to a Namespace.
            args = argparse.Namespace(**OmegaConf.to_container(args, resolve=True))
        validate_switch_args(args)
        model = super().build_model(args, task)
        n = len(model.switch_ffns)
        if n and model.switch_ffns[0].layout.distributed:
            layout = model.switch_ffns[0].layout
            # c10d: DDP must neither average nor broadcast the experts (each rank holds its own).
            model._ddp_params_and_buffers_to_ignore = [
                name for name, p in model.named_parameters() if hasattr(p, "expert")
            ]
            logger.info(
                f"expert parallelism: {layout.world_size} ranks, {layout.num_local_experts} expert(s) per rank per "
                f"layer, each expert on {layout.replicas} rank(s), all-to-all groups of {layout.group_size}"
            )
        if n:
            logger.info(
                f"Switch FFNs: {n} layers x {args.moe_expert_count} experts "
                f"({model.switch_ffns[0].num_local_experts} on this rank), dispatch={args.moe_dispatch}"
            )
        return model

    @classmethod
    def build_embedding(cls, args: Any, dictionary: Any, embed_dim: int, path: Optional[str] = None) -> nn.Embedding:
        if is_t5_layout(args):
            if path:
                raise ValueError("--encoder-embed-path/--decoder-embed-path are not supported with --layout t5")
            return build_t5_embedding(args, dictionary, embed_dim)
        return super().build_embedding(args, dictionary, embed_dim, path)

    @classmethod
    def build_encoder(cls, args: Any, src_dict: Any, embed_tokens: nn.Module) -> FairseqEncoder:
        if is_t5_layout(args):
            return T5Encoder(TransformerConfig.from_namespace(args), src_dict, embed_tokens)
        return SwitchTransformerEncoder(TransformerConfig.from_namespace(args), src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, args: Any, tgt_dict: Any, embed_tokens: nn.Module) -> FairseqIncrementalDecoder:
        if is_t5_layout(args):
            return T5Decoder(TransformerConfig.from_namespace(args), tgt_dict, embed_tokens)
        return SwitchTransformerDecoder(
            TransformerConfig.from_namespace(args),
            tgt_dict,
            embed_tokens,
            no_encoder_attn=getattr(args, "no_cross_attention", False),
        )

    @property
    def switch_ffns(self) -> List[SwitchFFN]:
        return self.encoder.switch_ffns + self.decoder.switch_ffns

    def routing_mode(self, mode: Union[RoutingMode, str]) -> AbstractContextManager:
        """Context manager: route in `mode` (e.g. "generate", "dummy") instead of the training flag's."""
        return routing_mode(self, mode)

    def forward(
        self, src_tokens: Tensor, src_lengths: Tensor, prev_output_tokens: Tensor, **kwargs: Any
    ) -> Tuple[Tensor, Dict[str, Any]]:
        x, extra = super().forward(src_tokens, src_lengths, prev_output_tokens, **kwargs)
        ffns = self.switch_ffns
        # what the criterion turns into losses and metrics
        extra["moe_routing"] = [ffn.last_routing for ffn in ffns]
        extra["moe_dummy_batch"] = self.encoder.routing_override is RoutingMode.DUMMY
        # this forward's exchanges and the previous backward's
        extra["moe_a2a_seconds"] = sum(ffn.pop_a2a_seconds() for ffn in ffns)
        return x, extra


def validate_switch_args(args: Any) -> None:
    """Clear errors for bad MoE settings, before anything is built."""
    set_switch_defaults(args)
    if is_t5_layout(args):
        validate_t5_args(args)
    n = args.moe_expert_count
    if n is None or n < 0:
        raise ValueError(f"--moe-expert-count must be >= 1 for a Switch model (or 0 for the dense twin), got {n}")
    if n == 0:
        return
    RouterConfig.from_args(args)  # validates the routing options
    if args.moe_expert_dropout is not None and not 0 <= args.moe_expert_dropout <= 1:
        raise ValueError(f"--moe-expert-dropout must be in [0, 1], got {args.moe_expert_dropout}; fine-tuning uses 0.4")
    # Raises for --moe-freq < 1 or larger than the number of layers.
    switch_layer_ids(min(args.encoder_layers, args.decoder_layers), args.moe_freq, is_t5_layout(args))
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        check_expert_parallel_args(args, dist.get_world_size())


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


def set_switch_defaults(args: Any) -> None:
    """Fill every SwitchConfig option missing from `args` (old checkpoints, plain --arch transformer args)."""
    for name, f in SwitchConfig.__dataclass_fields__.items():
        if getattr(args, name, None) is None and f.default is not None:
            setattr(args, name, f.default)
        elif not hasattr(args, name):
            setattr(args, name, None)
