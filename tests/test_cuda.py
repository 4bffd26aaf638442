"""On a CUDA device (`pytest -m cuda`, run by scripts/device_check.sh): routing and dispatch agree with the CPU,
the fp32 router holds under fairseq's --fp16 (loss scaler), --memory-efficient-fp16 and --bf16, and an
expert-sharded save written on CUDA loads on the CPU. Every test here skips without a CUDA device.

FAIRSEQ_SWITCH_CUDA_TESTS_ON=cpu runs them against the CPU instead, to check the tests themselves."""

import json
import logging
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from . import ep_harness as H

DEVICE = torch.device(os.environ.get("FAIRSEQ_SWITCH_CUDA_TESTS_ON", "cuda"))
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(),
                       reason="needs a CUDA device (scripts/device_check.sh)"),
]
DTYPES = [torch.float32, torch.bfloat16]


def _router_pair(num_experts=8, d=64, **kw):
    from fairseq_switch.modules.routing import RouterConfig, Top1Router

    torch.manual_seed(0)
    cpu = Top1Router(d, RouterConfig(num_experts, jitter_eps=0.0, **kw))
    gpu = Top1Router(d, RouterConfig(num_experts, jitter_eps=0.0, **kw)).to(DEVICE)
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu


def _route(router, x, mask, capacity):
    x = x.to(next(router.parameters()).device, copy=True).requires_grad_(True)
    mask = None if mask is None else mask.to(x.device)
    r = router(x, mask, capacity=capacity)
    g = torch.linspace(-1, 1, x.shape[0], device=x.device)
    (r.balance_loss + 0.1 * r.z_loss + (r.gate * g).sum()).backward()
    return r, x.grad, router.weight.grad


@pytest.mark.parametrize("batch_prioritized", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_routing_on_cuda_matches_cpu(dtype, batch_prioritized):
    """Same experts, drops and slots; gates, balance and z losses and their gradients agree. The router
    computes in fp32 from the (bf16) tokens on both devices, so bf16 tokens route identically too."""
    # init scale 10: logits of std ~3 keep top-2 margins far above float rounding, so no near-tie can flip
    cpu, gpu = _router_pair(batch_prioritized=batch_prioritized, init_scale=10.0)
    torch.manual_seed(1)
    x = torch.randn(4096, 64).to(dtype)
    mask = torch.rand(4096) < 0.1
    rc, gxc, gwc = _route(cpu, x, mask, capacity=400)
    rg, gxg, gwg = _route(gpu, x, mask, capacity=400)
    probs = F.softmax(F.linear(x.float(), cpu.weight.detach()), -1).topk(2, -1).values
    clear = (probs[:, 0] - probs[:, 1]) > 1e-5  # no near-tie that float rounding could flip
    assert clear.all()
    assert torch.equal(rg.expert_index.cpu(), rc.expert_index)
    assert rc.stats.num_dropped.item() > 0, "the test needs drops"
    for name in ("kept", "slot", "dispatch_order", "kept_counts"):
        assert torch.equal(getattr(rg, name).cpu(), getattr(rc, name)), name
    assert rg.gate.dtype == torch.float32
    for a, b in [(rg.gate, rc.gate), (rg.balance_loss, rc.balance_loss), (rg.z_loss, rc.z_loss), (gwg, gwc)]:
        torch.testing.assert_close(a.cpu(), b, atol=1e-5, rtol=1e-5)
    rtol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(gxg.cpu().float(), gxc.float(), atol=1e-5, rtol=rtol)


@pytest.fixture(scope="module")
def nccl_one_rank():
    """fairscale's einsum path exchanges CUDA tensors: a 1-rank NCCL group (gloo has no CUDA all-to-all)."""
    import torch.distributed as dist

    if DEVICE.type != "cuda":  # the dispatch builds its own 1-rank gloo group
        yield
        return
    if not dist.is_initialized():
        dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{H.free_port()}", world_size=1, rank=0)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("dispatch", ["index", "grouped", "einsum"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_switch_layer_on_cuda_matches_cpu(dtype, dispatch, request):
    """Every dispatch path on CUDA against the index path on CPU: outputs, input and parameter gradients."""
    from fairseq_switch.modules.routing import RouterConfig
    from fairseq_switch.modules.switch_layer import SwitchFFN

    if dispatch == "einsum":
        if dtype != torch.float32:
            pytest.skip("fairscale's MOELayer casts its dispatch mask to fp32: no bf16 tokens without autocast")
        request.getfixturevalue("nccl_one_rank")
    layers = []
    for kind, device in (("index", "cpu"), (dispatch, DEVICE)):
        torch.manual_seed(0)
        cfg = RouterConfig(8, dispatch=kind, jitter_eps=0.0, capacity_factor=1.0)
        layers.append(SwitchFFN(64, 128, cfg, activation_fn=F.relu).to(device=device, dtype=dtype))
    layers[1].load_state_dict(layers[0].state_dict())
    torch.manual_seed(1)
    x, g = torch.randn(512, 4, 64).to(dtype), torch.randn(512, 4, 64)
    mask = torch.rand(512, 4) < 0.1
    outs = []
    for layer in layers:
        dev = next(layer.parameters()).device
        xi = x.to(dev, copy=True).requires_grad_(True)
        y = layer(xi, mask.to(dev))
        (y.float() * g.to(dev)).sum().backward()
        outs.append((y.detach().cpu(), [xi.grad.cpu()] + [p.grad.cpu() for p in layer.parameters()]))
    if dispatch == "grouped":
        assert layers[1].dispatch.last_path == "grouped", layers[1].dispatch.fallback_reason
    assert layers[0].last_routing.stats.num_dropped.item() > 0
    assert torch.equal(layers[1].last_routing.kept.cpu(), layers[0].last_routing.kept)
    for a, b in zip([outs[1][0]] + outs[1][1], [outs[0][0]] + outs[0][1]):
        _close(a, b, dtype)


def _close(a, b, dtype):
    """fp32: elementwise. bf16: the relative error of the whole tensor (bf16 rounds at 0.4%; sums in another
    order, and the grouped path's bias added after the GEMM's rounding, differ by ~1% where terms cancel)."""
    if dtype == torch.float32:
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    else:
        a, b = a.float(), b.float()
        assert (a - b).norm() <= 3e-2 * b.norm() + 1e-6, f"relative error {(a - b).norm() / b.norm():.3g}"


def _train_cli(tmp_path, monkeypatch, caplog, precision):
    """fairseq-train on CUDA in this process, 4 updates of a tiny Switch model; returns (train_inner logs,
    what the routers saw: (input dtype, gate dtype, loss dtypes))."""
    from fairseq_cli import train

    from fairseq_switch.modules.routing import Top1Router

    data = tmp_path / "data"
    H.write_corpus(str(data), num_docs=60)
    argv = [str(data), "--user-dir", H.USER_DIR, "--task", "span_corruption", "--arch", "switch_tiny",
            "--encoder-embed-dim", "64", "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
            "--decoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
            "--moe-expert-count", "4", "--input-length", "32", "--criterion", "switch_cross_entropy",
            "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "512", "--seed", "7", "--max-update", "4",
            "--save-dir", str(tmp_path / "save"), "--no-save", "--disable-validation", "--log-format", "json",
            "--log-interval", "1", "--no-progress-bar", "--num-workers", "0", "--distributed-world-size", "1",
            *precision, *(["--cpu"] if DEVICE.type == "cpu" else [])]
    monkeypatch.setattr(sys, "argv", ["fairseq-train", *argv])
    routed = set()

    def record(module, inp, out):
        if isinstance(module, Top1Router):
            routed.add((inp[0].dtype, out.gate.dtype, out.balance_loss.dtype, out.z_loss.dtype, inp[0].device.type))

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        with caplog.at_level(logging.INFO):
            train.cli_main()
    finally:
        handle.remove()
    logs = [json.loads(r.getMessage()) for r in caplog.records if r.name == "train_inner"]
    return logs, routed


@pytest.mark.parametrize("precision,half", [
    (["--fp16"], torch.float16),
    (["--memory-efficient-fp16"], torch.float16),
    (["--bf16"], torch.bfloat16),
])
def test_fp32_router_under_half_precision_training(tmp_path, monkeypatch, caplog, precision, half):
    if DEVICE.type == "cpu" and precision == ["--fp16"]:
        pytest.skip("--fp16 keeps fp32 master weights on a GPU: refused with --cpu (tasks/config_checks.py)")
    logs, routed = _train_cli(tmp_path, monkeypatch, caplog, precision)
    losses = [float(log["loss"]) for log in logs]
    assert len(losses) >= 1 and all(torch.isfinite(torch.tensor(losses))), logs
    # the model ran in half precision on CUDA (the router's input), the router in fp32
    assert routed == {(half, torch.float32, torch.float32, torch.float32, DEVICE.type)}, routed
    if half == torch.float16:  # fairseq's dynamic loss scaler is on, and reported
        assert all("loss_scale" in log for log in logs), logs[0]


def _sharded_worker(rank, world, port, data_dir, out_dir):
    """One rank of a 2-rank expert-parallel run on the one GPU (gloo carries the CUDA tensors): 2 updates,
    then the sharded save."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        trainer = H.build_trainer(data_dir, world, rank, cpu=DEVICE.type == "cpu")
        assert next(trainer.get_model().parameters()).device.type == DEVICE.type
        steps = H.global_batches(2, [2, 3], seed=4)
        history = H.run_steps(trainer, [H.collate(step[rank]) for step in steps])
        trainer.consolidate_optimizer()
        trainer.save_checkpoint(os.path.join(out_dir, "checkpoint.pt"), {"train_iterator": {"epoch": 1}})
        torch.save({k: v.cpu() for k, v in history[-1]["params"].items()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_sharded_save_on_cuda_loads_on_cpu(tmp_path):
    import torch.multiprocessing as mp
    from fairseq import checkpoint_utils

    from fairseq_switch.checkpoints import shard_path

    H.write_dictionary(str(tmp_path))
    mp.start_processes(_sharded_worker, args=(2, H.free_port(), str(tmp_path), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    main = tmp_path / "checkpoint.pt"
    assert main.exists() and os.path.exists(shard_path(str(main), 1))
    expected = {}
    for rank in range(2):
        expected.update(torch.load(tmp_path / f"rank{rank}.pt", weights_only=False))
    models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task([str(main)], arg_overrides={"cpu": True})
    got = dict(models[0].named_parameters())
    assert got.keys() == expected.keys()
    for name, t in expected.items():
        assert got[name].device.type == "cpu"
        torch.testing.assert_close(got[name].detach(), t, atol=0, rtol=0, msg=name)
