"""The Switch FFN (paper Sec. 2.1, Fig. 2): route each token to one expert FFN.

Dispatch is index based: kept tokens are gathered by index, the experts run on exactly the
tokens routed to them, and outputs are scattered back multiplied by the gate value. A
dropped token outputs exactly 0, so the surrounding residual connection carries it (SPEC §1).
No tokens x experts x capacity tensor is ever built.

With W expert-parallel ranks the kept tokens are written into the [experts, capacity, d]
dispatch buffer and exchanged with fairscale's all-to-all (SPEC §4); where each expert lives
and how its gradient is reduced is `distributed.py`'s job. With one process that
exchange is the identity, so the buffer is skipped and the experts run on the compact
expert-sorted tokens (a grouped per-expert matmul, no padded slots).

`dispatch="einsum"` selects the reference path: fairscale's MOELayer unchanged, driven by
the same router through fairscale's gate interface.
"""

import socket
import time
from typing import Callable, List, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
from fairscale.nn.moe.moe_layer import MOELayer, _AllToAll

from ..distributed import ExpertLayout, expert_layout, note_layout, register_expert_grad_hooks
from .init import scaled_trunc_normal_
from .routing import RouterOutput, Top1Router, expert_capacity

DISPATCH_CHOICES = ("index", "einsum")


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


# Seconds spent in all-to-all exchanges (forward and backward) since the last `pop_a2a_seconds`.
_A2A_SECONDS = [0.0]


def pop_a2a_seconds() -> float:
    t, _A2A_SECONDS[0] = _A2A_SECONDS[0], 0.0
    return t


class _TimedAllToAll(_AllToAll):
    """fairscale's all-to-all, timed both ways (on GPU this is launch time unless synchronous)."""

    @staticmethod
    def forward(ctx, group, x):  # type: ignore[override]
        t0 = time.perf_counter()
        out = _AllToAll.forward(ctx, group, x)
        _A2A_SECONDS[0] += time.perf_counter() - t0
        return out

    @staticmethod
    def backward(ctx, *grad_output):  # type: ignore[override]
        t0 = time.perf_counter()
        out = _AllToAll.backward(ctx, *grad_output)
        _A2A_SECONDS[0] += time.perf_counter() - t0
        return out


def _init_experts(num_experts: int, local_ids, make) -> nn.ModuleList:
    """Expert e gets the same initial weights whatever the rank count: one base seed is drawn from
    the (rank-identical) global RNG, and expert e is built under seed base + e."""
    base = int(torch.randint(0, 2**31 - 1 - num_experts, (1,), device="cpu"))
    experts = []
    for e in local_ids:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(base + e)
            experts.append(make())
    return nn.ModuleList(experts)


class _ReferenceTop1Gate(nn.Module):
    """The Switch router in fairscale's gate interface: (l_aux, combine_weights, dispatch_mask).

    Builds the dense [S, E, C] tensors MOELayer expects; only used by the reference path.
    """

    def __init__(self, router: Top1Router):
        super().__init__()
        self.router = router
        self.padding_mask: Optional[torch.Tensor] = None
        self.capacity: Optional[int] = None
        self.last_routing: Optional[RouterOutput] = None

    def forward(self, x: torch.Tensor):
        r = self.router(x, self.padding_mask, capacity=self.capacity)
        self.last_routing = r
        S, E, C = x.shape[0], self.router.num_experts, r.capacity
        dispatch = torch.zeros(S, E, C, dtype=torch.bool, device=x.device)
        tok = r.kept.nonzero().squeeze(1)
        dispatch[tok, r.expert_index[tok], r.slot[tok]] = True
        combine = dispatch.to(x.dtype) * r.gate.to(x.dtype)[:, None, None]
        return r.balance_loss, combine, dispatch


def _single_process_group():
    """fairscale's MOELayer needs a process group even for one process; make a 1-rank gloo one."""
    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=1, rank=0)
    return dist.group.WORLD


class SwitchFFN(nn.Module):
    """Drop-in replacement for a transformer FFN block: router + N expert FFNs.

    Input x is [..., d] (fairseq's T x B x C works as is); `padding_mask` has x's leading shape
    (or its transpose for fairseq's B x T masks, see `forward`). After each call
    `last_routing` holds the router's decision, losses and statistics.
    """

    def __init__(
        self,
        embed_dim: int,
        ffn_dim: int,
        num_experts: int,
        activation_fn: Callable,
        expert_dropout: float = 0.0,
        bias: bool = True,
        capacity_factor: float = 1.25,
        eval_capacity_factor: Optional[float] = 2.0,
        min_capacity: int = 4,
        jitter_eps: float = 1e-2,
        batch_prioritized: bool = False,
        router_init_scale: float = 0.1,
        dispatch: str = "index",
        generation_no_drop: bool = True,
        gated: bool = False,
        expert_init_scale: Optional[float] = None,
    ):
        super().__init__()
        if dispatch not in DISPATCH_CHOICES:
            raise ValueError(f"dispatch must be one of {DISPATCH_CHOICES}, got {dispatch!r}")
        self.router = Top1Router(
            embed_dim,
            num_experts,
            capacity_factor=capacity_factor,
            eval_capacity_factor=eval_capacity_factor,
            min_capacity=min_capacity,
            jitter_eps=jitter_eps,
            batch_prioritized=batch_prioritized,
            init_scale=router_init_scale,
        )
        self.num_experts = num_experts
        self.layout: ExpertLayout = expert_layout(num_experts)
        note_layout(self.layout)
        self.router.stats_world_size = self.layout.world_size
        self.num_local_experts = self.layout.num_local_experts
        self.experts = _init_experts(
            num_experts,
            self.layout.local_expert_ids,
            lambda: ExpertFFN(embed_dim, ffn_dim, activation_fn, expert_dropout, bias, gated, expert_init_scale),
        )
        for p in self.experts.parameters():
            p.expert = True  # excluded from the data-parallel all-reduce (SPEC §4)
        register_expert_grad_hooks(self.experts.parameters(), self.layout)
        self.dispatch = dispatch
        self._reference: Optional[MOELayer] = None
        self.last_routing: Optional[RouterOutput] = None
        # Routing context set by the host encoder/decoder before each call (fairseq's layers
        # only pass x to the FFN): T x B padding mask, and whether we are generating.
        self.padding_mask: Optional[torch.Tensor] = None
        self.generation_no_drop = generation_no_drop
        self.generating = False
        # fairseq's dummy batch (a rank with no data left still runs forward/backward, times 0):
        # route nothing, so its tokens neither take slots nor count in the aux-loss statistics,
        # but still join every all-to-all so the other ranks do not hang.
        self.ignore_tokens = False

    # -- public -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: [..., d]; padding_mask: bool with x's leading shape, True at padding
        (default: the mask the host set in `self.padding_mask`)."""
        if padding_mask is None:
            padding_mask = self.padding_mask
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        mask = None if padding_mask is None else padding_mask.reshape(-1)
        if mask is not None and mask.numel() != tokens.shape[0]:
            raise ValueError(f"padding mask of shape {tuple(padding_mask.shape)} does not match input {tuple(shape)}")
        if self.ignore_tokens:
            mask = torch.ones(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        if self.dispatch == "einsum":
            out = self._forward_reference(tokens, mask)
        else:
            capacity = self._agreed_capacity(tokens, mask) if self.layout.distributed else None
            r = self.router(tokens, mask, capacity=capacity)
            self.last_routing = r
            if not self.layout.distributed:
                out = self._forward_local(tokens, r)
            else:
                out = self._forward_expert_parallel(tokens, r)
        return out.reshape(shape)

    @property
    def world_size(self) -> int:
        return self.layout.world_size

    def set_no_drop(self, value: bool) -> None:
        """Route every token regardless of capacity (generation)."""
        self.router.no_drop = value

    def make_generation_fast_(self, **kwargs) -> None:
        """fairseq-generate calls this (via prepare_for_inference_) on every module."""
        self.generating = True

    # -- index dispatch ---------------------------------------------------------------------
    def _combine(self, tokens: torch.Tensor, tok: torch.Tensor, y: torch.Tensor, r: RouterOutput) -> torch.Tensor:
        """Scatter expert outputs back to their token positions, times the gate; others stay exactly 0."""
        y = y * r.gate[tok].to(y.dtype)[:, None]
        return tokens.new_zeros(tokens.shape).index_copy_(0, tok, y)

    def _forward_local(self, tokens: torch.Tensor, r: RouterOutput) -> torch.Tensor:
        tok = r.dispatch_order  # grouped by expert, so each expert's tokens are one contiguous slice
        chunks = tokens[tok].split(r.kept_counts.tolist())
        # Every expert runs, even on 0 tokens, so every expert parameter gets a (zero) gradient.
        outs = [expert(chunk) for expert, chunk in zip(self.experts, chunks)]
        y = outs[0] if len(outs) == 1 else torch.cat(outs)
        return self._combine(tokens, tok, y, r)

    def _agreed_capacity(self, tokens: torch.Tensor, mask: Optional[torch.Tensor]) -> int:
        """All ranks must exchange equally shaped buffers: use the largest local capacity."""
        n = tokens.shape[0] if mask is None else int((~mask).sum().item())
        cap = expert_capacity(n, self.num_experts, self.router.current_capacity_factor(), self.router.min_capacity)
        t = torch.tensor([cap], device=tokens.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.layout.a2a_group)
        return int(t.item())

    def _forward_expert_parallel(self, tokens: torch.Tensor, r: RouterOutput) -> torch.Tensor:
        E, C, d = self.num_experts, r.capacity, tokens.shape[1]
        tok = r.dispatch_order
        dest = r.expert_index[tok] * C + r.slot[tok]
        G, group = self.layout.group_size, self.layout.a2a_group
        # Expert e lives on the group's rank e // num_local_experts, so [E, C, d] is already rank-major.
        buf = tokens.new_zeros(E * C, d).index_copy(0, dest, tokens[tok]).view(E, C, d)
        recv = _TimedAllToAll.apply(group, buf).view(G, self.num_local_experts, C, d)
        outs = [expert(recv[:, j].reshape(-1, d)) for j, expert in enumerate(self.experts)]
        sent = torch.stack(outs, 0).view(self.num_local_experts, G, C, d).transpose(0, 1)
        back = _TimedAllToAll.apply(group, sent.contiguous()).view(E * C, d)
        return self._combine(tokens, tok, back[dest], r)

    # -- reference path (fairscale MOELayer, dense einsum dispatch) --------------------------
    def _forward_reference(self, tokens: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        if self._reference is None:
            group = self.layout.a2a_group if self.layout.distributed else _single_process_group()
            # Not registered as a submodule: it shares this layer's router and experts.
            object.__setattr__(self, "_reference", MOELayer(_ReferenceTop1Gate(self.router), self.experts, group))
        moe = self._reference
        T, d = tokens.shape
        # MOELayer wants the token count divisible by the local expert count: pad with masked rows.
        pad = (-T) % self.num_local_experts
        if mask is None:
            mask = torch.zeros(T, dtype=torch.bool, device=tokens.device)
        if pad:
            tokens = torch.cat([tokens, tokens.new_zeros(pad, d)])
            mask = torch.cat([mask, mask.new_ones(pad)])
        moe.gate.padding_mask = mask
        moe.gate.capacity = self._agreed_capacity(tokens, mask) if self.layout.distributed else None
        out = moe(tokens[:, None, :])[:, 0, :]
        self.last_routing = moe.gate.last_routing
        return out[:T]

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, local={self.num_local_experts}, dispatch={self.dispatch}"


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
