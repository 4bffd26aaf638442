"""Where the experts live across data-parallel ranks, and how their gradients are reduced.

Expert parallelism as in Fedus et al. 2021, Sec. 5 (and GShard, Lepikhin et al. 2020).

With W ranks and N experts:
- N >= W (N divisible by W): every rank holds N/W distinct experts; one all-to-all group spans
  all W ranks; no expert exists twice, so expert gradients are never all-reduced.
- N < W (W divisible by N): the ranks form W/N all-to-all groups of N consecutive ranks; rank r
  holds expert r mod N. Each expert has W/N replicas, one per group, and its gradient is summed
  inside that replica group only.

Gradients: fairseq divides every gradient by the global sample size after the data-parallel
backend has *averaged* the shared gradients over W ranks (it multiplies by W / sample_size).
An expert's gradient is already the sum over every rank's tokens (the all-to-all backward
brings them home), so the backend must leave it alone and it is divided by W here instead;
a replicated expert first sums its replicas. Both happen in a gradient hook, so they work with
any backend that skips parameters marked `expert` (fairseq's legacy_ddp does; for c10d the
model gives DDP its ignore list) and with gradient accumulation.
"""

from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch
import torch.distributed as dist

# ddp backends that keep their hands off expert parameters (see SwitchTransformerModel.build_model)
SUPPORTED_DDP_BACKENDS = ("c10d", "pytorch_ddp", "legacy_ddp", "no_c10d")


@dataclass(frozen=True)
class ExpertLayout:
    """This rank's share of an N-expert layer."""

    world_size: int  # W data-parallel ranks
    rank: int
    num_experts: int  # N
    group_size: int  # ranks in one all-to-all group: min(N, W)
    num_local_experts: int  # experts held here: max(N / W, 1)
    replicas: int  # copies of each expert: max(W / N, 1)
    a2a_group: Optional[object] = None  # all-to-all process group (None with one process)
    replica_group: Optional[object] = None  # this rank's expert's replicas (None without replication)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def first_local_expert(self) -> int:
        """Global id of the first expert held on this rank."""
        return (self.rank % self.group_size) * self.num_local_experts

    @property
    def local_expert_ids(self) -> List[int]:
        return list(range(self.first_local_expert, self.first_local_expert + self.num_local_experts))


def check_expert_count(num_experts: int, world_size: int) -> None:
    """N and W must divide one way or the other; say which counts would work."""
    if num_experts < 1:
        raise ValueError(f"--moe-expert-count must be >= 1 for a Switch layer, got {num_experts}")
    if num_experts >= world_size and num_experts % world_size == 0:
        return
    if num_experts < world_size and world_size % num_experts == 0:
        return
    ok = sorted({d for d in range(1, world_size + 1) if world_size % d == 0} | {world_size * k for k in (1, 2, 4)})
    raise ValueError(
        f"--moe-expert-count {num_experts} does not divide across {world_size} ranks: use an expert count that "
        f"is a multiple of {world_size} (each rank holds N/{world_size} experts) or a divisor of it (each "
        f"expert is replicated), e.g. one of {ok}; or change the number of processes"
    )


# new_group is collective: every rank must create the same groups in the same order. Layers are
# built identically on every rank, so caching by (W, N) keeps that promise.
_GROUPS: Dict[Tuple[int, int], Tuple[object, object]] = {}


def _groups(world_size: int, rank: int, num_experts: int):
    key = (world_size, num_experts)
    if key not in _GROUPS:
        group_size = min(num_experts, world_size)
        a2a_mine = replica_mine = None
        # a dedicated group even when it spans the world, so expert traffic never queues behind the
        # data-parallel backend's asynchronous all-reduces on the default group
        for g in range(world_size // group_size):
            ranks = list(range(g * group_size, (g + 1) * group_size))
            pg = dist.new_group(ranks)
            if rank in ranks:
                a2a_mine = pg
        if world_size > group_size:
            for e in range(group_size):
                ranks = list(range(e, world_size, group_size))
                pg = dist.new_group(ranks)
                if rank in ranks:
                    replica_mine = pg
        _GROUPS[key] = (a2a_mine, replica_mine)
    return _GROUPS[key]


def plan_layout(num_experts: int, world_size: int, rank: int) -> ExpertLayout:
    """Which experts rank `rank` of `world_size` holds (no process groups: also for checkpoint tools)."""
    check_expert_count(num_experts, world_size)
    group_size = min(num_experts, world_size)
    return ExpertLayout(
        world_size=world_size,
        rank=rank,
        num_experts=num_experts,
        group_size=group_size,
        num_local_experts=max(num_experts // world_size, 1),
        replicas=world_size // group_size,
    )


def expert_world() -> Tuple[int, int]:
    """(world size, rank) that expert layouts span: (1, 0) without torch.distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(), dist.get_rank()


def expert_layout(num_experts: int, local: bool = False) -> ExpertLayout:
    """The layout for the current process (one process when torch.distributed is not initialized).

    `local`: hold every expert here and never exchange tokens, even under torch.distributed (a frozen
    distillation teacher runs on each rank alone, so ranks that skip it cannot leave others hanging)."""
    world, rank = (1, 0) if local else expert_world()
    if world == 1:
        return plan_layout(num_experts, 1, 0)
    layout = plan_layout(num_experts, world, rank)
    a2a, replica = _groups(world, rank, num_experts)
    return replace(layout, a2a_group=a2a, replica_group=replica)


def mark_expert_params(params: Iterable[torch.Tensor], layout: ExpertLayout) -> None:
    """Tag expert parameters (the data-parallel backend and the grad norm tell them by `expert`) and make
    each one's gradient (the sum over all replicas' tokens) / W, ready for fairseq's W / sample_size."""
    params = list(params)
    for p in params:
        p.expert = True  # excluded from the data-parallel all-reduce (Sec. 5)
        p.expert_world_size = layout.world_size
        p.expert_replicas = layout.replicas
    if not layout.distributed:
        return
    world, group = layout.world_size, layout.replica_group

    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        if group is not None:
            dist.all_reduce(grad, group=group)
        return grad.div_(world)

    for p in params:
        p.register_hook(hook)


def world_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over every data-parallel rank (identity with one process). Not differentiable."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.detach().clone()
        dist.all_reduce(t)
    return t


@torch.no_grad()
def expert_grad_sq_norm(expert_grads: List[torch.Tensor], device: torch.device, replicas: int) -> torch.Tensor:
    """Squared L2 norm of all experts' gradients over all ranks, every expert counted once."""
    if expert_grads:
        sq = torch.stack([g.float().pow(2).sum() for g in expert_grads]).sum().to(device)
    else:
        sq = torch.zeros((), device=device)
    return world_sum(sq) / replicas


def global_grad_norm_patch(original: Callable) -> Callable:
    """Wrap fairseq.utils.clip_grad_norm_, whose norm leaves out every `expert` gradient."""

    @torch.no_grad()
    def clip_grad_norm_(
        params: Union[torch.Tensor, Iterable[torch.Tensor]],
        max_norm: float,
        aggregate_norm_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    ) -> torch.Tensor:
        if isinstance(params, torch.Tensor):
            params = [params]
        params = [p for p in params if p is not None]
        marked = [p for p in params if hasattr(p, "expert")]
        # under expert parallelism every rank holding Switch layers joins the norm's all-reduce
        active = any(getattr(p, "expert_world_size", 1) > 1 for p in marked)
        replicas = max((getattr(p, "expert_replicas", 1) for p in marked), default=1)
        params = [p for p in params if getattr(p, "grad", None) is not None]
        expert_grads = [p.grad.detach() for p in params if hasattr(p, "expert")]
        if not expert_grads and not active:
            return original(params, max_norm, aggregate_norm_fn)
        shared = [p for p in params if not hasattr(p, "expert")]
        shared_norm = original(shared, 0, aggregate_norm_fn) if shared else torch.zeros(())
        device = shared_norm.device if shared else expert_grads[0].device
        total = (shared_norm.float().to(device).pow(2) + expert_grad_sq_norm(expert_grads, device, replicas)).sqrt()
        if max_norm > 0:
            coef = (float(max_norm) / (total + 1e-6)).clamp_(max=1)
            grads = [p.grad.detach() for p in params]
            torch._foreach_mul_(grads, coef.to(grads[0].device))
        return total

    clip_grad_norm_._fairseq_switch_fixed = True
    return clip_grad_norm_
