"""Top-1 ("switch") routing (Fedus et al. 2021, Sec. 2.1-2.2 and 2.4).

Three small pieces, in the spirit of flaxformer's routers:
- `RouterConfig`: every routing option, validated once and handed whole to the layer and its router.
- `RoutingMode` and `route_plan`: what each mode (train, eval, generate, dummy batch) means for
  capacity, jitter and which tokens are routed. That decision is made in `route_plan` alone.
  Capacity is per batch (a factor, Sec. 2.2 Eq. 3) or, outside training with
  `capacity_per_sequence`, a fixed number of slots per expert in each sequence: transformers'
  SwitchTransformers `expert_capacity` (Mesh TensorFlow's groups of one sequence each), so a
  converted model keeps and drops the same tokens as its source.
- `Top1Router`: only routes. The layer decides the capacity and the mode and passes them in; the
  router picks each token's expert and gate, assigns capacity slots and computes the auxiliary
  losses. Moving tokens to experts is `dispatch.py`'s job.
"""

import enum
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..distributed import world_sum
from .init import scaled_trunc_normal_

DISPATCH_CHOICES = ("index", "grouped", "einsum")


def _flag(name: str) -> str:
    return "--moe-" + name.replace("_", "-")


@dataclass(frozen=True)
class RouterConfig:
    """A Switch layer's routing options (one per model; the `--moe-*` options of `SwitchConfig`)."""

    num_experts: int  # N, experts of the whole layer across all ranks
    capacity_factor: float = 1.25  # training: slots per expert = ceil(tokens / N * factor)
    eval_capacity_factor: Optional[float] = 2.0  # eval mode; None drops nothing
    generation_drop: bool = False  # generation uses the eval capacity instead of routing every token
    min_capacity: int = 4  # lower bound on slots per expert, so tiny batches still route
    jitter_eps: float = 1e-2  # training-only multiplicative noise U(1-eps, 1+eps) on the router input
    batch_prioritized: bool = False  # keep the highest-probability tokens first, not position order
    init_scale: float = 0.1  # s in the truncated-normal init std sqrt(s / d) (Sec. 2.4)
    dispatch: str = "index"  # index: gather/scatter by index; grouped: grouped GEMM; einsum: fairscale's MOELayer
    capacity_per_sequence: Optional[int] = None  # eval/generate: slots per expert per sequence (not a factor)
    # An upcycled start (docs/upcycling.md): the combine weight moves from 1 to the router probability over
    # the first gate_warmup_updates updates, and the first no_drop_updates training updates drop no token.
    gate_warmup_updates: int = 0
    no_drop_updates: int = 0

    def __post_init__(self) -> None:
        if self.num_experts < 1:
            raise ValueError(f"--moe-expert-count must be >= 1 for a Switch layer, got {self.num_experts}")
        for name in ("capacity_factor", "eval_capacity_factor"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{_flag(name)} must be > 0, got {value}; typical values are 1.25 (train) and "
                                 "2.0 (eval), or --moe-eval-no-drop to drop nothing in eval mode")
        if self.capacity_per_sequence is not None and self.capacity_per_sequence < 1:
            raise ValueError(f"--moe-capacity-per-sequence must be >= 1 (transformers' expert_capacity, e.g. 64), "
                             f"got {self.capacity_per_sequence}")
        for name in ("gate_warmup_updates", "no_drop_updates"):
            if getattr(self, name) < 0:
                raise ValueError(f"{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if self.min_capacity < 1:
            raise ValueError(f"--moe-min-capacity must be >= 1, got {self.min_capacity}")
        if not 0 <= self.jitter_eps < 1:
            raise ValueError(f"--moe-jitter-eps must be in [0, 1), got {self.jitter_eps}; the paper uses 0.01")
        if not self.init_scale > 0:
            raise ValueError(f"--moe-router-init-scale must be > 0, got {self.init_scale}; the paper uses 0.1")
        if self.dispatch not in DISPATCH_CHOICES:
            raise ValueError(f"--moe-dispatch must be one of {DISPATCH_CHOICES}, got {self.dispatch!r}")

    @classmethod
    def from_args(cls, args: Any) -> "RouterConfig":
        """From the model options (`SwitchConfig` fields on an argparse Namespace or a config)."""
        return cls(
            num_experts=int(args.moe_expert_count),
            capacity_factor=args.moe_capacity_factor,
            eval_capacity_factor=None if args.moe_eval_no_drop else args.moe_eval_capacity_factor,
            generation_drop=bool(args.moe_gen_drop),
            min_capacity=args.moe_min_capacity,
            jitter_eps=args.moe_jitter_eps,
            batch_prioritized=bool(args.moe_batch_prioritized),
            init_scale=args.moe_router_init_scale,
            dispatch=str(args.moe_dispatch),
            capacity_per_sequence=getattr(args, "moe_capacity_per_sequence", None) or None,  # 0: off
            gate_warmup_updates=int(getattr(args, "moe_gate_warmup_updates", 0) or 0),
            no_drop_updates=int(getattr(args, "moe_no_drop_updates", 0) or 0),
        )


class RoutingMode(enum.Enum):
    TRAIN = "train"  # training capacity factor, jitter
    EVAL = "eval"  # validation: eval capacity factor, no jitter
    GENERATE = "generate"  # decoding: every token routed (unless generation_drop)
    DUMMY = "dummy"  # fairseq's dummy batch: no token routed, the exchanges still run

    @staticmethod
    def of(training: bool, generating: bool = False, dummy: bool = False) -> "RoutingMode":
        if dummy:
            return RoutingMode.DUMMY
        if generating:
            return RoutingMode.GENERATE
        return RoutingMode.TRAIN if training else RoutingMode.EVAL


@dataclass(frozen=True)
class RoutingContext:
    """What a Switch FFN needs besides its input: the mode and the padding mask (True at padding,
    in the input's leading shape: fairseq's layers see T x B)."""

    mode: RoutingMode
    padding_mask: Optional[torch.Tensor] = None


class RoutePlan(NamedTuple):
    capacity_factor: Optional[float]  # None (and no per_sequence): capacity for every token, nothing dropped
    jitter: bool
    route_tokens: bool  # False: every token counts as padding (dummy batch)
    per_sequence: Optional[int] = None  # slots per expert in each sequence, instead of the factor
    gate_power: float = 1.0  # combine weight p ** gate_power in value (1: Switch's p; 0: 1, see gate_warmup)


def gate_warmup(cfg: RouterConfig, num_updates: int) -> float:
    """Where the combine weight stands after `num_updates` updates: 0 (weight 1) rising to 1 (weight p)."""
    if not cfg.gate_warmup_updates:
        return 1.0
    return min(max(num_updates, 0) / cfg.gate_warmup_updates, 1.0)


def route_plan(cfg: RouterConfig, mode: RoutingMode, num_updates: int = 0) -> RoutePlan:
    """The one place that says what a routing mode means (`num_updates`: the model's, for the warm-up of
    an upcycled start; validation and generation use the gate of the update they follow)."""
    plan = _mode_plan(cfg, mode)
    if mode is RoutingMode.TRAIN and num_updates < cfg.no_drop_updates:
        plan = plan._replace(capacity_factor=None)
    return plan._replace(gate_power=gate_warmup(cfg, num_updates))


def _mode_plan(cfg: RouterConfig, mode: RoutingMode) -> RoutePlan:
    if mode is RoutingMode.TRAIN:
        return RoutePlan(cfg.capacity_factor, cfg.jitter_eps > 0, True)
    # Outside training a per-sequence capacity replaces the factors, unless eval drops nothing
    # (--moe-eval-no-drop). In incremental decoding each sequence brings one token: none is dropped.
    if mode is not RoutingMode.DUMMY and cfg.capacity_per_sequence and cfg.eval_capacity_factor is not None:
        return RoutePlan(None, False, True, cfg.capacity_per_sequence)
    if mode is RoutingMode.EVAL:
        return RoutePlan(cfg.eval_capacity_factor, False, True)
    if mode is RoutingMode.GENERATE:
        return RoutePlan(cfg.eval_capacity_factor if cfg.generation_drop else None, False, True)
    # A dummy batch only happens in training; its tokens take no slot and stay out of the statistics.
    return RoutePlan(cfg.capacity_factor, cfg.jitter_eps > 0, False)


@dataclass
class RouterStats:
    """Per-call statistics over the non-padding tokens (detached)."""

    expert_counts: torch.Tensor  # [E] tokens whose argmax is each expert, before capacity drops
    num_tokens: torch.Tensor  # scalar: non-padding tokens routed
    num_dropped: torch.Tensor  # scalar: non-padding tokens that found their expert full
    entropy_sum: torch.Tensor  # scalar: sum over tokens of the router distribution's entropy (nats)

    @property
    def expert_fraction(self) -> torch.Tensor:
        return self.expert_counts.float() / self.num_tokens.clamp(min=1)

    @property
    def dropped_fraction(self) -> torch.Tensor:
        return self.num_dropped.float() / self.num_tokens.clamp(min=1)

    @property
    def entropy(self) -> torch.Tensor:
        return self.entropy_sum / self.num_tokens.clamp(min=1)


class RouterOutput(NamedTuple):
    """What the router decided for each of the T flattened tokens.

    A NamedTuple, not a dataclass: module hooks look into tensors, tuples and dicts only, so fairseq's
    NanDetector (which reruns a step that went non-finite) can name the router. `gate` comes first:
    torch's legacy backward hooks walk to the first output and hook its grad_fn.
    """

    gate: torch.Tensor  # [T] fp32 p_{i*}(x), carries the router gradient; 0 where not kept
    expert_index: torch.Tensor  # [T] long, argmax expert (meaningless where padding)
    kept: torch.Tensor  # [T] bool, token holds a capacity slot (False for padding and drops)
    slot: torch.Tensor  # [T] long, slot inside its expert's capacity buffer (-1 if not kept)
    capacity: int  # slots per expert (buffer size; per-sequence mode: at most per_sequence x sequences)
    balance_loss: torch.Tensor  # scalar N * sum_i f_i P_i (Eq. 4); 1.0 when balanced (this rank's share)
    z_loss: torch.Tensor  # scalar mean_x logsumexp(h(x))^2 (ST-MoE) (this rank's share)
    stats: RouterStats
    dispatch_order: torch.Tensor  # kept token ids grouped by expert, in slot order inside each group
    kept_counts: torch.Tensor  # [E] kept tokens per expert (<= capacity)
    world_size: int = 1  # ranks whose tokens the aux-loss statistics cover (losses are this rank's share)


class SequenceCapacity(NamedTuple):
    """Per-sequence capacity: the T routed tokens are time-major (fairseq's T x B flattened), so token t
    belongs to sequence t % sequences, and each expert keeps its first `slots` tokens of each sequence."""

    slots: int
    sequences: int


def expert_capacity(
    num_tokens: int, num_experts: int, capacity_factor: Optional[float], min_capacity: int,
    per_sequence: Optional[SequenceCapacity] = None,
) -> int:
    """Slots per expert: ceil(tokens / N * capacity_factor), at least `min_capacity` (Sec. 2.2, Eq. 3).

    `capacity_factor=None` is the no-drop mode: every token could pick the same expert. With
    `per_sequence` the buffer holds what the sequences can keep: slots x sequences, at most every token.
    """
    if per_sequence is not None:
        return max(min(per_sequence.slots * per_sequence.sequences, num_tokens), 1)
    if capacity_factor is None:
        return max(num_tokens, 1)
    cap = math.ceil(num_tokens / num_experts * capacity_factor)
    return max(cap, min_capacity, 1)


class Top1Router(nn.Module):
    """Switch router: logits h(x) = W_r x in fp32, top-1 expert, capacity slots and aux losses.

    Its weight stays fp32 even when the model is cast to half (selective precision, Sec. 2.4).
    """

    def __init__(self, embed_dim: int, config: RouterConfig):
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.empty(config.num_experts, embed_dim))
        self.reset_parameters()

    @property
    def num_experts(self) -> int:
        return self.config.num_experts

    def reset_parameters(self) -> None:
        scaled_trunc_normal_(self.weight, self.config.init_scale, fan_in=self.weight.shape[1])

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: Optional[torch.Tensor],
        capacity: int,
        jitter: bool = False,
        world_size: int = 1,
        per_sequence: Optional[SequenceCapacity] = None,
        gate_power: float = 1.0,
    ) -> RouterOutput:
        """Route T tokens.

        Args:
            x: [T, d] tokens in any dtype; routed in fp32.
            padding_mask: [T] bool, True where the token is padding (never routed), or None.
            capacity: slots per expert (the layer's decision, see `route_plan` and `expert_capacity`).
            jitter: multiply the router's copy of x by U(1-eps, 1+eps) noise (training).
            world_size: ranks whose tokens the aux-loss statistics cover (expert parallelism).
            per_sequence: keep each expert's first `slots` tokens of every sequence (and `capacity`
                must hold what they keep: see `expert_capacity`).
            gate_power: the combine weight is p ** gate_power in value, with the gradient of p scaled by
                p ** (gate_power - 1): at 0 it is p / stop_gradient(p), exactly 1 (the straight-through
                trick), so identical upcycled experts compute the dense FFN while the router still learns.
        """
        num_tokens, embed_dim = x.shape
        if embed_dim != self.weight.shape[1]:
            raise ValueError(f"router expects width {self.weight.shape[1]}, got input of shape {tuple(x.shape)}")
        E = self.num_experts
        eps = self.config.jitter_eps
        valid = None if padding_mask is None else ~padding_mask.reshape(-1).to(torch.bool)
        x = x.float()
        if jitter and eps > 0:
            x = torch.empty_like(x).uniform_(1.0 - eps, 1.0 + eps).mul_(x)
        logits = F.linear(x, self.weight.float())  # [T, E] fp32
        probs = F.softmax(logits, dim=-1)
        top_p, expert_index = probs.max(dim=-1)
        lse_sq = torch.logsumexp(logits, dim=-1).pow(2)
        entropy = -(probs.detach() * torch.log(probs.detach().clamp(min=1e-9))).sum(-1)

        if valid is None:  # no padding: skip the masking arithmetic (and a host sync on GPU)
            n_valid = num_tokens
            counts = torch.bincount(expert_index, minlength=E).float()
            prob_sum, lse_sq_sum, entropy_sum = probs.sum(0), lse_sq.sum(), entropy.sum()
        else:
            validf = valid.float()
            n_valid = int(valid.sum().item())
            counts = torch.zeros(E, device=x.device).index_add_(0, expert_index, validf)
            prob_sum = (probs * validf[:, None]).sum(0)
            lse_sq_sum = (lse_sq * validf).sum()
            entropy_sum = (entropy * validf).sum()
        # Eq. 4-6 over the whole (global) batch: f_i counts argmax choices (before drops), P_i
        # averages router probabilities. With several ranks f and the token count are summed over
        # them, and this rank's loss is its share N * sum_i f_i * (its prob. sum)_i / T; the shares
        # add up to Eq. 4 on the global batch, so the result does not depend on the rank count.
        if world_size > 1:
            packed = world_sum(torch.cat([counts, counts.new_tensor([float(n_valid)])]))
            global_counts, n_global = packed[:E], float(packed[E])
        else:
            global_counts, n_global = counts, float(n_valid)
        denom = max(n_global, 1.0)
        f = global_counts / denom
        balance_loss = E * (f * prob_sum).sum() / denom
        z_loss = lse_sq_sum / denom

        if per_sequence is None:
            slot, order, group_sizes = self._slots(expert_index, top_p, valid, E)
            kept = slot < capacity
        else:  # rank among the tokens of one sequence choosing one expert; then buffer slots for the kept
            S = per_sequence.sequences
            group = (torch.arange(num_tokens, device=x.device) % S) * E + expert_index
            rank, _, _ = self._slots(group, top_p, valid, S * E)
            kept = rank < per_sequence.slots
            keep = kept if valid is None else kept & valid
            slot, order, group_sizes = self._slots(expert_index, top_p, keep, E)  # < capacity by construction
        if valid is not None:
            kept &= valid
        slot = torch.where(kept, slot, torch.full_like(slot, -1))
        if gate_power < 1.0:
            top_p = top_p / top_p.detach().pow(1.0 - gate_power)  # at 0: p / p, exactly 1
        gate = top_p * kept.to(top_p.dtype)
        kept_counts = group_sizes[:E].clamp(max=capacity)

        with torch.no_grad():
            stats = RouterStats(
                expert_counts=counts.detach(),
                num_tokens=torch.tensor(float(n_valid), device=x.device),
                num_dropped=(n_valid - kept_counts.sum()).float(),
                entropy_sum=entropy_sum,
            )
        return RouterOutput(
            expert_index=expert_index,
            gate=gate,
            kept=kept,
            slot=slot,
            capacity=capacity,
            balance_loss=balance_loss,
            z_loss=z_loss,
            stats=stats,
            dispatch_order=order[kept[order]],
            kept_counts=kept_counts,
            world_size=world_size,
        )

    def _slots(self, group: torch.Tensor, top_p: torch.Tensor, valid: Optional[torch.Tensor], G: int):
        """Rank of each token among the tokens of its group (its expert, or its (sequence, expert)), in
        priority order.

        Position order by default; batch-prioritized (highest router probability first) as an option.
        Padding is sorted past every group so it never takes a slot. O(T log T), no T x E x C tensor.
        Returns (slot [T], token ids grouped [T], tokens per group incl. padding bucket [G+1]).
        """
        T = group.numel()
        key = group if valid is None else torch.where(valid, group, torch.full_like(group, G))
        if self.config.batch_prioritized:
            priority = torch.argsort(-top_p.detach(), stable=True)
            order = priority[torch.argsort(key[priority], stable=True)]
        else:
            order = torch.argsort(key, stable=True)  # position order inside each expert
        group_sizes = torch.bincount(key, minlength=G + 1)
        group_start = torch.cumsum(group_sizes, 0) - group_sizes
        rank_sorted = torch.arange(T, device=key.device) - group_start[key[order]]
        slot = torch.empty_like(rank_sorted)
        slot[order] = rank_sorted
        return slot, order, group_sizes
