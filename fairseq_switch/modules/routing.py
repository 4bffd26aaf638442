"""Top-1 ("switch") routing, SPEC §1-2 / paper Sec. 2.1-2.2 and 2.4.

The router only decides: which expert each token goes to, with which gate value, and
whether the token keeps a capacity slot. Moving tokens to experts is `switch_layer.py`'s job.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..distributed import world_sum
from .init import scaled_trunc_normal_


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
    capacity: int  # slots per expert
    balance_loss: torch.Tensor  # scalar N * sum_i f_i P_i (Eq. 4); 1.0 when balanced (this rank's share)
    z_loss: torch.Tensor  # scalar mean_x logsumexp(h(x))^2 (ST-MoE) (this rank's share)
    stats: RouterStats
    dispatch_order: torch.Tensor  # kept token ids grouped by expert, in slot order inside each group
    kept_counts: torch.Tensor  # [E] kept tokens per expert (<= capacity)
    world_size: int = 1  # ranks whose tokens the aux-loss statistics cover (losses are this rank's share)


def expert_capacity(
    num_tokens: int, num_experts: int, capacity_factor: Optional[float], min_capacity: int
) -> int:
    """Slots per expert: ceil(tokens / N * capacity_factor), at least `min_capacity`.

    `capacity_factor=None` is the no-drop mode: every token could pick the same expert.
    """
    if capacity_factor is None:
        return max(num_tokens, 1)
    cap = math.ceil(num_tokens / num_experts * capacity_factor)
    return max(cap, min_capacity, 1)


class Top1Router(nn.Module):
    """Switch router: logits h(x) = W_r x in fp32, top-1 expert, capacity and aux losses.

    Args:
        embed_dim: model width d.
        num_experts: N (experts of the whole layer, across all ranks).
        capacity_factor: training capacity factor.
        eval_capacity_factor: capacity factor in eval mode; None means drop nothing.
        min_capacity: lower bound on slots per expert, so tiny batches still route.
        jitter_eps: training-only multiplicative noise U(1-eps, 1+eps) on the router input.
        batch_prioritized: keep the highest-probability tokens first instead of position order.
        init_scale: s in the truncated-normal init std = sqrt(s / fan_in) (Sec. 2.4).
    """

    def __init__(
        self,
        embed_dim: int,
        num_experts: int,
        capacity_factor: float = 1.25,
        eval_capacity_factor: Optional[float] = 2.0,
        min_capacity: int = 4,
        jitter_eps: float = 1e-2,
        batch_prioritized: bool = False,
        init_scale: float = 0.1,
    ):
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        for name, cf in (("capacity_factor", capacity_factor), ("eval_capacity_factor", eval_capacity_factor)):
            if cf is not None and not cf > 0:
                raise ValueError(
                    f"{name} must be > 0, got {cf}; use e.g. 1.25 (train) / 2.0 (eval), "
                    "or no-drop mode for evaluation"
                )
        if min_capacity < 1:
            raise ValueError(f"min_capacity must be >= 1, got {min_capacity}")
        if jitter_eps < 0 or jitter_eps >= 1:
            raise ValueError(f"jitter_eps must be in [0, 1), got {jitter_eps}")
        self.num_experts = num_experts
        self.capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor
        self.min_capacity = min_capacity
        self.jitter_eps = jitter_eps
        self.batch_prioritized = batch_prioritized
        # Set by the layer (e.g. during generation) to route every token.
        self.no_drop = False
        # Set by the layer under expert parallelism: aux-loss statistics over all W ranks' tokens.
        self.stats_world_size = 1
        # The router stays fp32 even when the model is cast to half (selective precision, Sec. 2.4).
        self.weight = nn.Parameter(torch.empty(num_experts, embed_dim))
        self.reset_parameters(init_scale)

    def reset_parameters(self, init_scale: float = 0.1) -> None:
        scaled_trunc_normal_(self.weight, init_scale, fan_in=self.weight.shape[1])

    def current_capacity_factor(self) -> Optional[float]:
        if self.no_drop:
            return None
        return self.capacity_factor if self.training else self.eval_capacity_factor

    def forward(
        self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None, capacity: Optional[int] = None
    ) -> RouterOutput:
        """Route T tokens.

        Args:
            x: [T, d] tokens in any dtype; routed in fp32.
            padding_mask: [T] bool, True where the token is padding (never routed).
            capacity: slots per expert, overriding the capacity factor (e.g. one agreed across ranks).
        """
        num_tokens, embed_dim = x.shape
        if embed_dim != self.weight.shape[1]:
            raise ValueError(f"router expects width {self.weight.shape[1]}, got input of shape {tuple(x.shape)}")
        E = self.num_experts
        valid = None if padding_mask is None else ~padding_mask.reshape(-1).to(torch.bool)
        x = x.float()
        if self.training and self.jitter_eps > 0:
            x = torch.empty_like(x).uniform_(1.0 - self.jitter_eps, 1.0 + self.jitter_eps).mul_(x)
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
        if self.stats_world_size > 1:
            packed = world_sum(torch.cat([counts, counts.new_tensor([float(n_valid)])]))
            global_counts, n_global = packed[:E], float(packed[E])
        else:
            global_counts, n_global = counts, float(n_valid)
        denom = max(n_global, 1.0)
        f = global_counts / denom
        balance_loss = E * (f * prob_sum).sum() / denom
        z_loss = lse_sq_sum / denom

        if capacity is None:
            capacity = expert_capacity(n_valid, E, self.current_capacity_factor(), self.min_capacity)
        slot, order, group_sizes = self._slots(expert_index, top_p, valid)
        kept = slot < capacity
        if valid is not None:
            kept &= valid
        slot = torch.where(kept, slot, torch.full_like(slot, -1))
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
            world_size=self.stats_world_size,
        )

    def _slots(self, expert_index: torch.Tensor, top_p: torch.Tensor, valid: Optional[torch.Tensor]):
        """Rank of each token among the tokens that chose the same expert, in priority order.

        Position order by default; batch-prioritized (highest router probability first) as an option.
        Padding is sorted past every expert so it never takes a slot. O(T log T), no T x E x C tensor.
        Returns (slot [T], token ids grouped by expert [T], tokens per expert incl. padding bucket [E+1]).
        """
        T = expert_index.numel()
        E = self.num_experts
        key = expert_index if valid is None else torch.where(valid, expert_index, torch.full_like(expert_index, E))
        if self.batch_prioritized:
            priority = torch.argsort(-top_p.detach(), stable=True)
            order = priority[torch.argsort(key[priority], stable=True)]
        else:
            order = torch.argsort(key, stable=True)  # position order inside each expert
        group_sizes = torch.bincount(key, minlength=E + 1)
        group_start = torch.cumsum(group_sizes, 0) - group_sizes
        rank_sorted = torch.arange(T, device=key.device) - group_start[key[order]]
        slot = torch.empty_like(rank_sorted)
        slot[order] = rank_sorted
        return slot, order, group_sizes
