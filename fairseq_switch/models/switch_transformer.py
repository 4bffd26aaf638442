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
from ..modules.routing import DISPATCH_CHOICES, RoutingMode
from ..modules.switch_layer import SwitchFFN
from .hub import HubMixin
from .switch_host import SwitchHostMixin, routing_mode
from .switch_options import SwitchLayers, is_t5_layout, validate_switch_args
from .switch_options import check_expert_parallel_args  # noqa: F401  (imported from here)
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


def _identity(x: Any) -> Any:
    return x


def _swap_in_switch_ffn(layer: nn.Module, cfg: Any, switch: SwitchLayers, embed_dim: int, ffn_dim: int) -> SwitchFFN:
    """Replace a fairseq layer's fc1 -> act -> dropout -> fc2 by one SwitchFFN, keeping its forward."""
    if getattr(layer, "ffn_layernorm", None) is not None:
        raise ValueError("--scale-fc puts a LayerNorm inside the FFN; it is not supported with Switch FFNs")
    if cfg.quant_noise.pq > 0:
        raise ValueError("--quant-noise-pq is not supported on Switch FFN layers; set it to 0")
    ffn = switch.build_ffn(embed_dim, ffn_dim)
    layer.fc1 = ffn
    layer.fc2 = nn.Identity()
    layer.activation_fn = _identity
    layer.activation_dropout_module = nn.Identity()
    return ffn


class _FairseqLayoutHost(SwitchHostMixin):
    def _maybe_swap(self, layer: nn.Module, cfg: Any, embed_dim: int, ffn_dim: int) -> nn.Module:
        if self._next_is_switch():
            _swap_in_switch_ffn(layer, cfg, self.switch_layers, embed_dim, ffn_dim)
        return layer


class SwitchTransformerEncoder(_FairseqLayoutHost, TransformerEncoderBase):
    def __init__(self, cfg: Any, dictionary: Any, embed_tokens: nn.Module, switch: SwitchLayers,
                 return_fc: bool = False):
        self._init_switch_ids(switch, cfg.encoder.layers)
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
        switch: SwitchLayers,
        no_encoder_attn: bool = False,
        output_projection: Optional[nn.Module] = None,
    ):
        self._init_switch_ids(switch, cfg.decoder.layers)
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
        # Built once, the args only read; it rides on args into the TransformerConfig that fairseq's build
        # makes from them and hands both stacks, and leaves args after (a saved cfg must not pickle it).
        args.switch_layers = validate_switch_args(args)
        try:
            model = super().build_model(args, task)
        finally:
            del args.switch_layers
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
        cfg = TransformerConfig.from_namespace(args)
        stack = T5Encoder if is_t5_layout(args) else SwitchTransformerEncoder
        return stack(cfg, src_dict, embed_tokens, cfg.switch_layers)

    @classmethod
    def build_decoder(cls, args: Any, tgt_dict: Any, embed_tokens: nn.Module) -> FairseqIncrementalDecoder:
        cfg = TransformerConfig.from_namespace(args)
        if is_t5_layout(args):
            return T5Decoder(cfg, tgt_dict, embed_tokens, cfg.switch_layers)
        return SwitchTransformerDecoder(
            cfg, tgt_dict, embed_tokens, cfg.switch_layers, no_encoder_attn=getattr(args, "no_cross_attention", False)
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
