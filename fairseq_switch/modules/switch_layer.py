"""The Switch FFN (Fedus et al. 2021, Sec. 2.1, Fig. 2): a router and N expert FFNs in place of one FFN.

The layer decides how to route (the capacity and the mode, from its `RouterConfig` and the
`RoutingContext` its host encoder/decoder sets); the router routes; the dispatch chosen when the
layer is built (`dispatch.py`) moves tokens to the experts and back.
"""

from functools import partial
from typing import Callable, Iterable, List, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from ..distributed import ExpertLayout, expert_layout, mark_expert_params
from .dispatch import make_dispatch
from .init import scaled_trunc_normal_
from .routing import (RouterConfig, RouterOutput, RoutingContext, RoutingMode, SequenceCapacity, Top1Router,
                      expert_capacity, route_plan)


class ExpertFFN(nn.Module):
    """One expert: fc1 -> activation -> expert dropout -> fc2 (same shapes as the dense FFN).

    `gated` is T5 v1.1's gated FFN: activation(fc1 x) * fc1_linear(x). `init_scale` s draws every
    weight from the paper's truncated normal, std sqrt(s / fan_in) (Sec. 2.4); None keeps torch's.
    """

    def __init__(self, embed_dim: int, ffn_dim: int, activation_fn: Callable, dropout: float, bias: bool = True,
                 gated: bool = False, init_scale: Optional[float] = None):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, ffn_dim, bias=bias)
        self.fc1_linear = nn.Linear(embed_dim, ffn_dim, bias=bias) if gated else None
        self.fc2 = nn.Linear(ffn_dim, embed_dim, bias=bias)
        self.activation_fn = activation_fn
        self.dropout = nn.Dropout(dropout)
        if init_scale is not None:
            for lin in (self.fc1, self.fc1_linear, self.fc2):
                if lin is not None:
                    scaled_trunc_normal_(lin.weight, init_scale, fan_in=lin.in_features)
                    if lin.bias is not None:
                        nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.activation_fn(self.fc1(x))
        if self.fc1_linear is not None:
            h = h * self.fc1_linear(x)
        return self.fc2(self.dropout(h))



def _init_experts(num_experts: int, local_ids: Iterable[int], make: Callable[[], nn.Module]) -> nn.ModuleList:
    """Expert e gets the same initial weights whatever the rank count: one base seed is drawn from
    the (rank-identical) global RNG, and expert e is built under seed base + e."""
    base = int(torch.randint(0, 2**31 - 1 - num_experts, (1,), device="cpu"))
    experts = []
    for e in local_ids:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(base + e)
            experts.append(make())
    return nn.ModuleList(experts)



class SwitchFFN(nn.Module):
    """Drop-in replacement for a transformer FFN block: router + N expert FFNs.

    Input x is [..., d] (fairseq's T x B x C works as is). After each call `last_routing` holds the
    router's decision, losses and statistics.

    Args:
        embed_dim, ffn_dim: d_model and d_ff of each expert.
        config: the routing options.
        activation_fn, expert_dropout, bias, gated, expert_init_scale: see `ExpertFFN`.
        local_experts: hold every expert in this process, even under torch.distributed (a teacher).
    """

    def __init__(
        self,
        embed_dim: int,
        ffn_dim: int,
        config: RouterConfig,
        activation_fn: Callable,
        expert_dropout: float = 0.0,
        bias: bool = True,
        gated: bool = False,
        expert_init_scale: Optional[float] = None,
        local_experts: bool = False,
    ):
        super().__init__()
        self.config = config
        self.router = Top1Router(embed_dim, config)
        self.layout: ExpertLayout = expert_layout(config.num_experts, local=local_experts)
        self.experts = _init_experts(
            config.num_experts,
            self.layout.local_expert_ids,
            lambda: ExpertFFN(embed_dim, ffn_dim, activation_fn, expert_dropout, bias, gated, expert_init_scale),
        )
        mark_expert_params(self.experts.parameters(), self.layout)
        self.dispatch = make_dispatch(config.dispatch, self.layout)
        # Set by the host encoder/decoder before its layers run: fairseq's layers pass the FFN only x.
        self.context: Optional[RoutingContext] = None
        self.last_routing: Optional[RouterOutput] = None
        self.num_updates = 0  # fairseq's trainer and checkpoint loading set it (set_num_updates)

    def set_num_updates(self, num_updates: int) -> None:
        self.num_updates = int(num_updates)

    @property
    def num_experts(self) -> int:
        return self.config.num_experts

    @property
    def num_local_experts(self) -> int:
        return self.layout.num_local_experts

    @property
    def world_size(self) -> int:
        return self.layout.world_size

    def forward(
        self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None, mode: Optional[RoutingMode] = None
    ) -> torch.Tensor:
        """x: [..., d]. `padding_mask` (bool, x's leading shape, True at padding) and `mode` default to the
        host's `context`, else no padding and train/eval from `self.training`. A per-sequence capacity
        reads x as T x B x d (fairseq's layers), or [T, d] as one sequence."""
        ctx = self.context
        if padding_mask is None and ctx is not None:
            padding_mask = ctx.padding_mask
        if mode is None:
            mode = ctx.mode if ctx is not None else RoutingMode.of(self.training)
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        mask = None if padding_mask is None else padding_mask.reshape(-1)
        if mask is not None and mask.numel() != tokens.shape[0]:
            raise ValueError(f"padding mask of shape {tuple(padding_mask.shape)} does not match input {tuple(shape)}")
        plan = route_plan(self.config, mode, self.num_updates)
        if not plan.route_tokens:
            # fairseq's dummy batch: its tokens take no slot and stay out of the aux-loss statistics,
            # but the exchanges still run so the other ranks do not hang
            mask = torch.ones(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        per_sequence = None
        if plan.per_sequence is not None:
            if x.dim() > 3:
                raise ValueError(f"a per-sequence capacity needs T x B x d input, got shape {tuple(shape)}")
            per_sequence = SequenceCapacity(plan.per_sequence, shape[1] if x.dim() == 3 else 1)
        capacity = self._capacity(tokens, mask, plan.capacity_factor, per_sequence)
        route = partial(self.router, capacity=capacity, jitter=plan.jitter, world_size=self.layout.world_size,
                        per_sequence=per_sequence, gate_power=plan.gate_power)
        out, self.last_routing = self.dispatch(tokens, mask, route, self.experts)
        return out.reshape(shape)

    def _capacity(self, tokens: torch.Tensor, mask: Optional[torch.Tensor], factor: Optional[float],
                  per_sequence: Optional[SequenceCapacity]) -> int:
        """Slots per expert; under expert parallelism every rank must exchange equally shaped buffers,
        so the ranks agree on the largest."""
        n = tokens.shape[0] if mask is None else int((~mask).sum().item())
        cap = expert_capacity(n, self.num_experts, factor, self.config.min_capacity, per_sequence)
        if self.layout.distributed:
            t = torch.tensor([cap], device=tokens.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.layout.a2a_group)
            cap = int(t.item())
        return cap

    def pop_a2a_seconds(self) -> float:
        """Seconds this layer spent in all-to-all exchanges since the last call."""
        t = self.dispatch.a2a_seconds
        if t:
            self.dispatch.a2a_seconds = 0.0
        return t

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, local={self.num_local_experts}, dispatch={self.config.dispatch}"


def switch_layer_ids(num_layers: int, moe_freq: int, t5_layout: bool = False) -> List[int]:
    """0-based indices of the layers whose FFN is a Switch FFN, every moe_freq-th (paper: every 2nd).

    The fairseq layout counts from the first layer (layers f-1, 2f-1, ..); the T5 layout uses
    transformers' SwitchTransformers rule (layers 1, 1+f, 1+2f, ..; every layer for f = 1), so that
    converted checkpoints keep their sparse layers. For f <= 2 the two agree.
    """
    if moe_freq < 1:
        raise ValueError(f"--moe-freq must be >= 1, got {moe_freq}")
    if moe_freq > num_layers:
        raise ValueError(
            f"--moe-freq {moe_freq} is larger than the number of layers ({num_layers}): no FFN would be a "
            f"Switch FFN; use --moe-freq <= {num_layers}, or --moe-expert-count 0 for a dense model"
        )
    first = 1 % moe_freq if t5_layout else moe_freq - 1
    return [i for i in range(num_layers) if i % moe_freq == first]
