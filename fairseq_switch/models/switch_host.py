"""What the encoder and decoder of either layout share: building a Switch FFN from the model options,
which layers get one, and the routing context each stack sets before its layers run."""

from typing import List

import torch
from fairseq import utils

from ..modules.switch_layer import SwitchFFN, switch_layer_ids


def is_t5_layout(cfg) -> bool:
    return str(getattr(cfg, "layout", "fairseq")) == "t5"


def build_switch_ffn(cfg, embed_dim: int, ffn_dim: int) -> SwitchFFN:
    expert_dropout = cfg.moe_expert_dropout
    if expert_dropout is None:
        expert_dropout = cfg.activation_dropout or getattr(cfg, "relu_dropout", 0.0) or 0.0
    t5 = is_t5_layout(cfg)
    return SwitchFFN(
        embed_dim,
        ffn_dim,
        cfg.moe_expert_count,
        activation_fn=utils.get_activation_fn(activation=cfg.activation_fn),
        expert_dropout=float(expert_dropout),
        bias=not t5,  # T5 has no biases (Raffel et al. 2019)
        capacity_factor=cfg.moe_capacity_factor,
        eval_capacity_factor=None if cfg.moe_eval_no_drop else cfg.moe_eval_capacity_factor,
        min_capacity=cfg.moe_min_capacity,
        jitter_eps=cfg.moe_jitter_eps,
        batch_prioritized=cfg.moe_batch_prioritized,
        router_init_scale=cfg.moe_router_init_scale,
        dispatch=str(cfg.moe_dispatch),
        generation_no_drop=not cfg.moe_gen_drop,
        gated=t5 and bool(cfg.ffn_gated),
        expert_init_scale=cfg.init_scale if t5 else None,
    )


class SwitchHostMixin:
    """Shared by the encoders and decoders: which layers are Switch, and their routing context."""

    def _init_switch_ids(self, cfg, num_layers: int) -> None:
        self._switch_ids = (
            set(switch_layer_ids(num_layers, cfg.moe_freq, is_t5_layout(cfg))) if cfg.moe_expert_count > 0 else set()
        )
        self._layers_built = 0

    def _next_is_switch(self) -> bool:
        i = self._layers_built
        self._layers_built += 1
        return i in self._switch_ids

    @property
    def switch_ffns(self) -> List[SwitchFFN]:
        return [m for m in self.modules() if isinstance(m, SwitchFFN)]

    def _set_routing_context(self, tokens: torch.Tensor, no_drop: bool) -> None:
        # the layers see T x B x C; tokens are B x T.
        mask = tokens.eq(self.padding_idx).t()
        for ffn in self.switch_ffns:
            ffn.last_routing = None  # a layer skipped by LayerDrop must not report a stale routing
            ffn.padding_mask = mask
            ffn.set_no_drop(no_drop or (ffn.generating and ffn.generation_no_drop))
