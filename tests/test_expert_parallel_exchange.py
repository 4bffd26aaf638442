"""The expert-parallel exchange (2 gloo processes, 2 of 4 experts each) matches one process holding
all 4 experts, for outputs, input gradients and expert gradients: this plugin's index dispatch and
fairscale's MOELayer (the einsum path) alike."""

import os
import socket
from dataclasses import replace
from functools import partial

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from fairseq_switch.modules.routing import RouterConfig
from fairseq_switch.modules.switch_layer import SwitchFFN

E, D, FF, WORLD = 4, 8, 16, 2
CONFIG = RouterConfig(E, jitter_eps=0.0, capacity_factor=1.0, min_capacity=1)


def make_full(seed=0):
    torch.manual_seed(seed)
    return SwitchFFN(D, FF, CONFIG, activation_fn=F.relu)


def rank_inputs(rank):
    g = torch.Generator().manual_seed(100 + rank)
    n = 9 + 4 * rank  # uneven token counts per rank
    x = torch.randn(n, D, generator=g)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[0] = True
    return x, mask


def worker(rank, port, out_dir, dispatch):
    full = make_full()  # built before the group exists, so it holds all E experts
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        layer = SwitchFFN(D, FF, replace(CONFIG, dispatch=dispatch), activation_fn=F.relu)
        assert layer.num_local_experts == E // WORLD and type(layer.dispatch).__name__ == EXPECTED[dispatch]
        layer.router.load_state_dict(full.router.state_dict())
        for j, expert in enumerate(layer.experts):
            expert.load_state_dict(full.experts[rank * layer.num_local_experts + j].state_dict())
        x, mask = rank_inputs(rank)
        x.requires_grad_(True)
        y = layer(x, mask)
        y.pow(2).sum().backward()
        torch.save(
            {
                "y": y.detach(),
                "x_grad": x.grad,
                "capacity": layer.last_routing.capacity,
                "expert_grads": [e.fc1.weight.grad for e in layer.experts],
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


EXPECTED = {"index": "ExpertParallelDispatch", "einsum": "EinsumDispatch"}


@pytest.mark.parametrize("dispatch", ["index", "einsum"])
def test_two_rank_exchange_matches_single_process(tmp_path, dispatch):
    args = (free_port(), str(tmp_path), dispatch)
    mp.start_processes(worker, args=args, nprocs=WORLD, join=True, start_method="spawn")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    capacity = results[0]["capacity"]
    assert results[1]["capacity"] == capacity  # agreed across ranks (the larger local capacity)

    full = make_full()
    expert_grad_sum = [torch.zeros_like(e.fc1.weight) for e in full.experts]
    for rank in range(WORLD):
        full.zero_grad()
        x, mask = rank_inputs(rank)
        x.requires_grad_(True)
        y, _ = full.dispatch(x, mask, partial(full.router, capacity=capacity), full.experts)
        y.pow(2).sum().backward()
        torch.testing.assert_close(results[rank]["y"], y.detach(), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(results[rank]["x_grad"], x.grad, atol=1e-6, rtol=1e-5)
        for e, expert in enumerate(full.experts):
            expert_grad_sum[e] += expert.fc1.weight.grad
    # each rank's local experts received the gradient from both ranks' tokens, divided by W (fairseq
    # later multiplies every gradient by W / sample_size, the factor meant for averaged shared weights)
    for rank in range(WORLD):
        for j, g in enumerate(results[rank]["expert_grads"]):
            torch.testing.assert_close(g, expert_grad_sum[rank * (E // WORLD) + j] / WORLD, atol=1e-6, rtol=1e-5)
