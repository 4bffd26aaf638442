"""What the encoder and decoder of either layout share: building a Switch FFN from the model options,
which layers get one, and the routing context each stack sets before its layers run."""

from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Union

import torch
import torch.nn as nn
from fairseq import utils

from ..modules.routing import RouterConfig, RoutingContext, RoutingMode
from ..modules.switch_layer import SwitchFFN, switch_layer_ids


def is_t5_layout(cfg: Any) -> bool:
    return str(getattr(cfg, "layout", "fairseq")) == "t5"


def build_switch_ffn(cfg: Any, embed_dim: int, ffn_dim: int) -> SwitchFFN:
    expert_dropout = cfg.moe_expert_dropout
    if expert_dropout is None:
        expert_dropout = cfg.activation_dropout or getattr(cfg, "relu_dropout", 0.0) or 0.0
    t5 = is_t5_layout(cfg)
    return SwitchFFN(
        embed_dim,
        ffn_dim,
        RouterConfig.from_args(cfg),
        activation_fn=utils.get_activation_fn(activation=cfg.activation_fn),
        expert_dropout=float(expert_dropout),
        bias=not t5,  # T5 has no biases (Raffel et al. 2019)
        gated=t5 and bool(cfg.ffn_gated),
        expert_init_scale=cfg.init_scale if t5 else None,
        local_experts=bool(getattr(cfg, "moe_local_experts", False)),
    )


class SwitchHostMixin:
    """Shared by the encoders and decoders: which layers are Switch, and their routing context."""

    # Set only through `routing_mode` (and fairseq-generate's make_generation_fast_): the mode every
    # forward uses instead of the one its training flag and decoding state imply.
    routing_override: Optional[RoutingMode] = None

    def _init_switch_ids(self, cfg: Any, num_layers: int) -> None:
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

    def make_generation_fast_(self, **kwargs: Any) -> None:
        """fairseq-generate calls this (via prepare_for_inference_) on every module: route as generation."""
        self.routing_override = RoutingMode.GENERATE

    def _set_routing_context(self, tokens: torch.Tensor, incremental: bool = False) -> None:
        """Before the layers run: the padding mask of `tokens` (B x T) and the mode, for every Switch FFN.
        Incremental decoding is generation."""
        mode = self.routing_override or RoutingMode.of(self.training, generating=incremental)
        ctx = RoutingContext(mode, tokens.eq(self.padding_idx).t())  # the layers see T x B
        for ffn in self.switch_ffns:
            ffn.last_routing = None  # a layer skipped by LayerDrop must not report a stale routing
            ffn.context = ctx


@contextmanager
def routing_mode(model: nn.Module, mode: Union[RoutingMode, str]) -> Iterator[None]:
    """Run every Switch encoder/decoder inside `model` (any wrapper too) in `mode`: the one way code
    outside the model changes how it routes (validation generation, fairseq's dummy batch)."""
    mode = RoutingMode(mode)
    hosts = [m for m in model.modules() if isinstance(m, SwitchHostMixin)]
    before = [h.routing_override for h in hosts]
    for h in hosts:
        h.routing_override = mode
    try:
        yield
    finally:
        for h, b in zip(hosts, before):
            h.routing_override = b
