"""What the encoder and decoder of either layout share: which layers get a Switch FFN (from the model's
one `SwitchLayers`), and the routing context each stack sets before its layers run."""

from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Union

import torch
import torch.nn as nn

from ..modules.routing import RoutingContext, RoutingMode
from ..modules.switch_layer import SwitchFFN
from .switch_options import SwitchLayers


class SwitchHostMixin:
    """Shared by the encoders and decoders: which layers are Switch, and their routing context."""

    # Set only through `routing_mode` (and fairseq-generate's make_generation_fast_): the mode every
    # forward uses instead of the one its training flag and decoding state imply.
    routing_override: Optional[RoutingMode] = None

    def _init_switch_ids(self, switch: SwitchLayers, num_layers: int) -> None:
        self.switch_layers = switch  # the model's one copy, shared by both stacks
        self._switch_ids = switch.layer_ids(num_layers)
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
