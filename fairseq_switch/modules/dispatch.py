"""Moving routed tokens to their experts and back: three paths, one chosen when the layer is built.

- `IndexDispatch` (one process): kept tokens are gathered by index, grouped by expert, each expert
  runs on exactly its tokens, and outputs are scattered back times the gate. A dropped token
  outputs exactly 0, so the residual connection around the layer carries it (Fedus et al. 2021,
  Sec. 2.2). No tokens x experts x capacity tensor is built.
- `ExpertParallelDispatch` (W ranks): the kept tokens fill the [experts, capacity, d] buffer, which
  fairscale's all-to-all sends to the experts' ranks and back (Sec. 5).
- `EinsumDispatch`: the reference path, fairscale's `MOELayer` unchanged (dense einsum dispatch),
  driven by the same router through fairscale's gate interface; on one rank or many.

Every path takes the tokens, their padding mask and a `route` function (the router with the
capacity and mode the layer decided), and returns the output and the router's decision.
"""

import time
from datetime import timedelta
from typing import Any, Callable, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from fairscale.nn.moe.moe_layer import MOELayer, _AllToAll

from ..distributed import ExpertLayout
from .routing import RouterOutput

Route = Callable[[torch.Tensor, Optional[torch.Tensor]], RouterOutput]


def _combine(tokens: torch.Tensor, tok: torch.Tensor, y: torch.Tensor, r: RouterOutput) -> torch.Tensor:
    """Scatter expert outputs back to their token positions, times the gate; others stay exactly 0."""
    y = y * r.gate[tok].to(y.dtype)[:, None]
    return tokens.new_zeros(tokens.shape).index_copy_(0, tok, y)


class IndexDispatch:
    """One process: the experts run on the compact expert-sorted tokens (no padded slots)."""

    a2a_seconds = 0.0

    def __call__(self, tokens: torch.Tensor, mask: Optional[torch.Tensor], route: Route,
                 experts: nn.ModuleList) -> Tuple[torch.Tensor, RouterOutput]:
        r = route(tokens, mask)
        tok = r.dispatch_order  # grouped by expert, so each expert's tokens are one contiguous slice
        chunks = tokens[tok].split(r.kept_counts.tolist())
        # Every expert runs, even on 0 tokens, so every expert parameter gets a (zero) gradient.
        outs = [expert(chunk) for expert, chunk in zip(experts, chunks)]
        y = outs[0] if len(outs) == 1 else torch.cat(outs)
        return _combine(tokens, tok, y, r), r


class _TimedAllToAll(torch.autograd.Function):
    """fairscale's all-to-all, timed both ways into `clock` (on GPU this is launch time unless synchronous)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, clock: "ExpertParallelDispatch", group: Any, x: torch.Tensor
    ) -> torch.Tensor:
        ctx.clock = clock
        t0 = time.perf_counter()
        out = _AllToAll.forward(ctx, group, x)
        clock.a2a_seconds += time.perf_counter() - t0
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[None, None, torch.Tensor]:  # type: ignore[override]
        t0 = time.perf_counter()
        _, out = _AllToAll.backward(ctx, grad)
        ctx.clock.a2a_seconds += time.perf_counter() - t0
        return None, None, out


class ExpertParallelDispatch:
    """W ranks: expert e lives on its group's rank e // num_local_experts, so the [E, C, d] buffer is
    already rank-major for the all-to-all."""

    def __init__(self, layout: ExpertLayout):
        self.layout = layout
        self.a2a_seconds = 0.0  # seconds in exchanges since the model last reported them

    def __call__(self, tokens: torch.Tensor, mask: Optional[torch.Tensor], route: Route,
                 experts: nn.ModuleList) -> Tuple[torch.Tensor, RouterOutput]:
        r = route(tokens, mask)
        E, C, d = self.layout.num_experts, r.capacity, tokens.shape[1]
        local, G, group = self.layout.num_local_experts, self.layout.group_size, self.layout.a2a_group
        tok = r.dispatch_order
        dest = r.expert_index[tok] * C + r.slot[tok]
        buf = tokens.new_zeros(E * C, d).index_copy(0, dest, tokens[tok]).view(E, C, d)
        recv = _TimedAllToAll.apply(self, group, buf).view(G, local, C, d)
        outs = [expert(recv[:, j].reshape(-1, d)) for j, expert in enumerate(experts)]
        sent = torch.stack(outs, 0).view(local, G, C, d).transpose(0, 1)
        back = _TimedAllToAll.apply(self, group, sent.contiguous()).view(E * C, d)
        return _combine(tokens, tok, back[dest], r), r


class _ReferenceTop1Gate(nn.Module):
    """The Switch router in fairscale's gate interface: (l_aux, combine_weights, dispatch_mask).

    Builds the dense [S, E, C] tensors MOELayer expects. MOELayer calls it with the tokens only, so
    the dispatch hands it the mask and the route for the call in progress."""

    def __init__(self, num_experts: int):
        super().__init__()
        self.num_experts = num_experts
        self.call: Optional[Tuple[Optional[torch.Tensor], Route]] = None
        self.routing: Optional[RouterOutput] = None

    def forward(self, x: torch.Tensor):
        mask, route = self.call
        r = self.routing = route(x, mask)
        S, E, C = x.shape[0], self.num_experts, r.capacity
        dispatch = torch.zeros(S, E, C, dtype=torch.bool, device=x.device)
        tok = r.kept.nonzero().squeeze(1)
        dispatch[tok, r.expert_index[tok], r.slot[tok]] = True
        combine = dispatch.to(x.dtype) * r.gate.to(x.dtype)[:, None, None]
        return r.balance_loss, combine, dispatch


def _one_rank_group() -> Any:
    """fairscale's MOELayer needs a process group even on one rank: torch.distributed's own when it is one
    rank, else a private 1-rank gloo group. Never the global default group, which would tell the rest of
    the process (fairseq, torch) that it runs distributed."""
    if dist.is_initialized() and dist.get_world_size() == 1:
        return dist.group.WORLD
    try:  # torch has no public constructor for a group outside the global registry
        store = dist.HashStore()
        group = dist.ProcessGroup(store, 0, 1)
        gloo = dist.ProcessGroup.BackendType.GLOO
        group._register_backend(torch.device("cpu"), gloo, dist.ProcessGroupGloo(store, 0, 1, timedelta(seconds=60)))
        group._set_default_backend(gloo)
    except (AttributeError, TypeError, RuntimeError) as e:
        raise RuntimeError(f"--moe-dispatch einsum on one process needs a 1-rank process group, which torch "
                           f"{torch.__version__} cannot build privately ({e}): use --moe-dispatch index, or "
                           f"initialize torch.distributed first") from e
    return group


class EinsumDispatch:
    """fairscale's MOELayer (built on first use: it needs a process group) over the layer's experts."""

    a2a_seconds = 0.0  # MOELayer's exchanges are not timed

    def __init__(self, layout: ExpertLayout):
        self.layout = layout
        self.moe: Optional[MOELayer] = None

    def __call__(self, tokens: torch.Tensor, mask: Optional[torch.Tensor], route: Route,
                 experts: nn.ModuleList) -> Tuple[torch.Tensor, RouterOutput]:
        if self.moe is None:
            group = self.layout.a2a_group if self.layout.distributed else _one_rank_group()
            self.moe = MOELayer(_ReferenceTop1Gate(self.layout.num_experts), experts, group)
        T, d = tokens.shape
        # MOELayer wants the token count divisible by the local expert count: pad with masked rows.
        pad = (-T) % self.layout.num_local_experts
        if mask is None:
            mask = torch.zeros(T, dtype=torch.bool, device=tokens.device)
        if pad:
            tokens = torch.cat([tokens, tokens.new_zeros(pad, d)])
            mask = torch.cat([mask, mask.new_ones(pad)])
        gate = self.moe.gate
        gate.call = (mask, route)
        try:
            out = self.moe(tokens[:, None, :])[:, 0, :]
        finally:
            gate.call = None
        return out[:T], gate.routing


Dispatch = Callable[[torch.Tensor, Optional[torch.Tensor], Route, nn.ModuleList], Tuple[torch.Tensor, RouterOutput]]


def make_dispatch(kind: str, layout: ExpertLayout) -> Dispatch:
    """The path for `--moe-dispatch` (index or einsum) and this process's expert layout."""
    if kind == "einsum":
        return EinsumDispatch(layout)
    return ExpertParallelDispatch(layout) if layout.distributed else IndexDispatch()


__all__: List[str] = ["Dispatch", "EinsumDispatch", "ExpertParallelDispatch", "IndexDispatch", "make_dispatch"]
