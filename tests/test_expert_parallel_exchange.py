"""The expert-parallel exchange (2 gloo processes, 2 of 4 experts each) matches one process holding
all 4 experts, for outputs and expert gradients."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from fairseq_switch.modules.switch_layer import SwitchFFN

E, D, FF, WORLD = 4, 8, 16, 2


def make_full(seed=0):
    torch.manual_seed(seed)
    return SwitchFFN(D, FF, E, activation_fn=F.relu, jitter_eps=0.0, capacity_factor=1.0, min_capacity=1)


def rank_inputs(rank):
    g = torch.Generator().manual_seed(100 + rank)
    n = 9 + 4 * rank  # uneven token counts per rank
    x = torch.randn(n, D, generator=g)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[0] = True
    return x, mask


def worker(rank, port, out_dir):
    full = make_full()  # built before the group exists, so it holds all E experts
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        layer = SwitchFFN(D, FF, E, activation_fn=F.relu, jitter_eps=0.0, capacity_factor=1.0, min_capacity=1)
        assert layer.num_local_experts == E // WORLD
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


def test_two_rank_exchange_matches_single_process(tmp_path):
    mp.start_processes(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True, start_method="spawn")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    capacity = results[0]["capacity"]
    assert results[1]["capacity"] == capacity  # agreed across ranks (the larger local capacity)

    full = make_full()
    expert_grad_sum = [torch.zeros_like(e.fc1.weight) for e in full.experts]
    for rank in range(WORLD):
        full.zero_grad()
        x, mask = rank_inputs(rank)
        x.requires_grad_(True)
        r = full.router(x, mask, capacity=capacity)
        y = full._forward_local(x, r)
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
