"""Moving routed tokens to their experts and back: three paths, one chosen when the layer is built.

- `IndexDispatch` (one process): kept tokens are gathered by index, grouped by expert, each expert
  runs on exactly its tokens, and outputs are scattered back times the gate. A dropped token
  outputs exactly 0, so the residual connection around the layer carries it (Fedus et al. 2021,
  Sec. 2.2). No tokens x experts x capacity tensor is built.
- `ExpertParallelDispatch` (W ranks): the kept tokens fill the [experts, capacity, d] buffer, which
  fairscale's all-to-all sends to the experts' ranks and back (Sec. 5).
- `GroupedDispatch` (one process, `--moe-dispatch grouped`): the same compact tokens, but each expert
  linear layer is one grouped GEMM over all experts (torch's `grouped_mm`) instead of a loop of small
  ones, and the group sizes stay on the device (no host sync). Where torch lacks the op for the
  device and dtype, it runs the index path.
- `EinsumDispatch`: the reference path, fairscale's `MOELayer` unchanged (dense einsum dispatch),
  driven by the same router through fairscale's gate interface; on one rank or many.

Every path takes the tokens, their padding mask and a `route` function (the router with the
capacity and mode the layer decided), and returns the output and the router's decision.
"""

import time
from datetime import timedelta
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
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
        return self.run_experts(tokens, r, experts), r

    @staticmethod
    def run_experts(tokens: torch.Tensor, r: RouterOutput, experts: nn.ModuleList) -> torch.Tensor:
        tok = r.dispatch_order  # grouped by expert, so each expert's tokens are one contiguous slice
        chunks = tokens[tok].split(r.kept_counts.tolist())
        # Every expert runs, even on 0 tokens, so every expert parameter gets a (zero) gradient.
        outs = [expert(chunk) for expert, chunk in zip(experts, chunks)]
        y = outs[0] if len(outs) == 1 else torch.cat(outs)
        return _combine(tokens, tok, y, r)


def grouped_mm_op() -> Optional[Callable]:
    """torch's grouped GEMM (public `F.grouped_mm` from torch 2.10, `torch._grouped_mm` before), or None."""
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


_GROUPED_SUPPORT: Dict[Tuple[str, torch.dtype], Optional[str]] = {}


def grouped_mm_unsupported(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Why torch's grouped GEMM cannot run forward and backward on this device and dtype (None: it can).

    Kernels differ by torch version, device and dtype (e.g. bf16-only on some GPUs), so this asks
    once per (device type, dtype) with a tiny call rather than keeping a table."""
    key = (device.type, dtype)
    if key not in _GROUPED_SUPPORT:
        op = grouped_mm_op()
        if op is None:
            _GROUPED_SUPPORT[key] = f"torch {torch.__version__} has no grouped_mm"
        else:
            try:
                a = torch.ones(8, 16, device=device, dtype=dtype, requires_grad=True)
                b = torch.ones(2, 16, 16, device=device, dtype=dtype, requires_grad=True)
                offs = torch.tensor([3, 8], device=device, dtype=torch.int32)
                y = op(a, b, offs=offs)
                y.backward(torch.ones_like(y))
                ok = bool(torch.allclose(y.float(), torch.full_like(y.float(), 16.0)))
                _GROUPED_SUPPORT[key] = None if ok else "grouped_mm gave wrong results in the probe"
            except (RuntimeError, NotImplementedError, TypeError) as e:
                _GROUPED_SUPPORT[key] = f"grouped_mm on {device.type} {dtype}: {str(e).splitlines()[0]}"
    return _GROUPED_SUPPORT[key]


class GroupedDispatch:
    """One process: fc1 (and a gated FFN's fc1_linear) and fc2 each run as one grouped GEMM over the
    expert-sorted kept tokens. The experts' weights are stacked on every call (the checkpoint layout
    stays one module per expert); biases are added per token. `last_path` says which path ran."""

    a2a_seconds = 0.0

    def __init__(self) -> None:
        self.last_path: Optional[str] = None
        self.fallback_reason: Optional[str] = None

    def unsupported(self, tokens: torch.Tensor, experts: nn.ModuleList) -> Optional[str]:
        first = experts[0]
        if not all(hasattr(first, a) for a in ("fc1", "fc1_linear", "fc2", "activation_fn", "dropout")):
            return f"experts of type {type(first).__name__} (not ExpertFFN)"  # switch_layer imports this module
        width = (first.fc1.in_features, first.fc1.out_features)
        if any(n * tokens.element_size() % 16 for n in width):  # the kernels need 16-byte aligned rows
            return f"d_model/d_ff {width} not multiples of {16 // tokens.element_size()} in {tokens.dtype}"
        if first.fc1.weight.dtype != tokens.dtype:
            return f"weights in {first.fc1.weight.dtype}, tokens in {tokens.dtype}"
        return grouped_mm_unsupported(tokens.device, tokens.dtype)

    def __call__(self, tokens: torch.Tensor, mask: Optional[torch.Tensor], route: Route,
                 experts: nn.ModuleList) -> Tuple[torch.Tensor, RouterOutput]:
        r = route(tokens, mask)
        tok = r.dispatch_order
        reason = self.unsupported(tokens, experts)
        if reason is not None or tok.numel() == 0:  # nothing kept: the index path still gives zero grads
            self.last_path, self.fallback_reason = "index", reason
            return IndexDispatch.run_experts(tokens, r, experts), r
        self.last_path, self.fallback_reason = "grouped", None
        op = grouped_mm_op()
        offs = torch.cumsum(r.kept_counts, 0).to(torch.int32)
        expert_of = r.expert_index[tok]
        first = experts[0]

        def linear(x: torch.Tensor, name: str) -> torch.Tensor:
            layers = [getattr(e, name) for e in experts]
            w = torch.stack([lin.weight for lin in layers])  # [E, out, in]
            y = op(x, w.transpose(-2, -1), offs=offs)
            if layers[0].bias is not None:  # gathered in fp32: its backward then sums the bias gradients in fp32
                y = y + torch.stack([lin.bias for lin in layers]).float()[expert_of].to(y.dtype)
            return y

        x = tokens[tok]
        h = first.activation_fn(linear(x, "fc1"))
        if first.fc1_linear is not None:
            h = h * linear(x, "fc1_linear")
        y = linear(first.dropout(h), "fc2")  # every expert's dropout has the same rate
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


def _one_rank_group(device: torch.device) -> Any:
    """fairscale's MOELayer needs a process group even on one rank: torch.distributed's own when it is one
    rank, else a private 1-rank gloo group. Never the global default group, which would tell the rest of
    the process (fairseq, torch) that it runs distributed."""
    if dist.is_initialized() and dist.get_world_size() == 1:
        return dist.group.WORLD
    if device.type != "cpu":  # gloo has no all-to-all for accelerator tensors
        raise ValueError(f"--moe-dispatch einsum on one {device.type} process needs a 1-rank process group of "
                         f"torch.distributed (e.g. NCCL) initialized first: use --moe-dispatch index or grouped")
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
            group = self.layout.a2a_group if self.layout.distributed else _one_rank_group(tokens.device)
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
    """The path for `--moe-dispatch` (index, grouped or einsum) and this process's expert layout.
    Under expert parallelism index and grouped both take the all-to-all path."""
    if kind == "einsum":
        return EinsumDispatch(layout)
    if layout.distributed:
        return ExpertParallelDispatch(layout)
    return GroupedDispatch() if kind == "grouped" else IndexDispatch()


__all__: List[str] = ["Dispatch", "EinsumDispatch", "ExpertParallelDispatch", "GroupedDispatch", "IndexDispatch",
                      "grouped_mm_op", "grouped_mm_unsupported", "make_dispatch"]
