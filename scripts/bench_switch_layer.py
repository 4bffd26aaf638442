#!/usr/bin/env python
"""Forward+backward wall time and peak memory: dense FFN vs Switch FFN (index vs einsum dispatch).

Each token goes through one d -> ff -> d FFN in all three, so expert FLOPs per token are equal
(the einsum path also runs its experts on the padding slots of the [E, C, d] buffer and pays
O(S*E*C*d) for its dense dispatch/combine einsums):
  dense  = ExpertFFN(d, ff, relu)                       (exactly one expert)
  index  = SwitchFFN(d, ff, E, relu, dispatch="index")  (this plugin's index dispatch)
  einsum = SwitchFFN(..., dispatch="einsum")            (fairscale MOELayer reference, 1-rank group)

Time: median of --iters fwd+bwd iterations after --warmup ones, the three variants interleaved.
Memory: peak bytes of tensors allocated during one extra un-timed fwd+bwd (parameter gradients
included; parameters and input excluded): torch.cuda.max_memory_allocated on CUDA, a
TorchDispatchMode tracker on CPU. "index drop %" is the share of tokens over capacity.

  python scripts/bench_switch_layer.py --quick
  python scripts/bench_switch_layer.py --output bench.md
"""

import argparse
import os
import socket
import statistics
import sys
import time
import weakref

import torch
import torch.distributed as dist
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fairseq_switch.modules.routing import expert_capacity  # noqa: E402
from fairseq_switch.modules.switch_layer import ExpertFFN, SwitchFFN  # noqa: E402

MB = 2**20


class PeakTensorMemory(TorchDispatchMode):
    """Peak live bytes of the storages created by aten ops run inside the mode.

    A storage is counted once, from the op that allocates it until it is freed (a weakref
    finalizer on its Python object, which torch keeps alive as long as the storage lives).
    Outputs aliasing an input (views, in-place ops) allocate nothing and are not counted.
    """

    def __init__(self):
        super().__init__()
        self.live, self.current, self.peak = {}, 0, 0

    def _free(self, key):
        self.current -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        leaves = pytree.tree_leaves((args, kwargs))
        inputs = {a.untyped_storage().data_ptr() for a in leaves if isinstance(a, torch.Tensor)}
        for t in pytree.tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            s = t.untyped_storage()
            key, nbytes = s.data_ptr(), s.nbytes()
            if nbytes and key not in self.live and key not in inputs:
                self.live[key] = nbytes
                self.current += nbytes
                self.peak = max(self.peak, self.current)
                weakref.finalize(s, self._free, key)
        return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fwd_bwd(module, x, g):
    module.zero_grad(set_to_none=True)
    x.grad = None
    (module(x) * g).sum().backward()


def peak_mb(module, x, g):
    """Peak MB allocated by one (un-timed) fwd+bwd."""
    module.zero_grad(set_to_none=True)
    x.grad = None
    if x.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(x.device)
        base = torch.cuda.memory_allocated(x.device)
        fwd_bwd(module, x, g)
        sync(x.device)
        return (torch.cuda.max_memory_allocated(x.device) - base) / MB
    with PeakTensorMemory() as tracker:
        fwd_bwd(module, x, g)
    return tracker.peak / MB


def bench(modules, x, g, iters, warmup):
    """{name: (median ms, peak MB)} of fwd+bwd. The modules are timed round-robin, one
    iteration each in turn, so slow drifts in machine load hit them all alike."""
    for m in modules.values():
        for _ in range(warmup):
            fwd_bwd(m, x, g)
    times = {name: [] for name in modules}
    for _ in range(iters):
        for name, m in modules.items():
            sync(x.device)
            t0 = time.perf_counter()
            fwd_bwd(m, x, g)
            sync(x.device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: (statistics.median(times[name]), peak_mb(m, x, g)) for name, m in modules.items()}


def einsum_gb(tokens, experts, capacity_factor=1.25, min_capacity=4, bytes_per_elem=20):
    """Rough peak of the reference path's dense [S, E, C] tensors (bool mask, its float copy,
    combine weights and their gradients: ~20 bytes per element at the peak)."""
    cap = expert_capacity(tokens, experts, capacity_factor, min_capacity)
    return tokens * experts * cap * bytes_per_elem / 2**30


def init_single_process_group(device):
    """The einsum path needs a process group; on CUDA it must be NCCL (gloo has no CUDA all-to-all).
    On CPU SwitchFFN creates its own 1-rank gloo group lazily."""
    if device.type == "cuda" and not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", world_size=1, rank=0)


def fmt(v, spec):
    return "skipped" if v is None else format(v, spec)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--ffn-dim", type=int, default=2048)
    p.add_argument("--experts", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--iters", type=int, default=5, help="timed iterations (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--einsum-max-gb", type=float, default=4.0,
                   help="skip the einsum path where its estimated [S, E, C] tensors exceed this")
    p.add_argument("--skip-einsum-above", type=int, default=None, metavar="TOKENS",
                   help="also skip the einsum path above this many tokens")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="small smoke-test config (explicit flags still win)")
    p.add_argument("--output", default=None, help="also write the markdown report to this file")
    if "--quick" in sys.argv[1:]:
        p.set_defaults(d_model=64, ffn_dim=256, experts=[1, 4], tokens=[256, 512], iters=3)
    args = p.parse_args()
    device = torch.device(args.device)
    d, ff = args.d_model, args.ffn_dim
    init_single_process_group(device)

    def make(kind, experts):
        torch.manual_seed(0)
        if kind == "dense":
            m = ExpertFFN(d, ff, torch.relu, dropout=0.0)
        else:
            m = SwitchFFN(d, ff, experts, activation_fn=torch.relu, dispatch=kind)
        return m.to(device).train()

    lines = [f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, "
             f"d={d}, ff={ff}, capacity factor 1.25, {args.iters} timed iters (median), {args.warmup} warm-up", ""]
    lines += ["| experts | tokens | dense ms | index ms | einsum ms | index/dense | einsum/dense "
              "| dense MB | index MB | einsum MB | index drop % |", "|" + "---|" * 11]
    print("\n".join(lines), flush=True)
    index_mb, grad_mb = {}, {}
    for E in args.experts:
        for S in args.tokens:
            torch.manual_seed(1)
            x = torch.randn(S, d, device=device, requires_grad=True)
            g = torch.randn(S, d, device=device)
            modules = {"dense": make("dense", 1), "index": make("index", E)}
            if einsum_gb(S, E) <= args.einsum_max_gb and S <= (args.skip_einsum_above or S):
                modules["einsum"] = make("einsum", E)
            r = bench(modules, x, g, args.iters, args.warmup)
            grad_mb[E] = sum(p.numel() * p.element_size() for p in modules["index"].parameters()) / MB
            drop = 100 * modules["index"].last_routing.stats.dropped_fraction.item()
            (dense_ms, dense_mb), (index_ms, index_mb[E, S]) = r["dense"], r["index"]
            einsum_ms, einsum_mb = r.get("einsum", (None, None))
            row = (f"| {E} | {S} | {dense_ms:.1f} | {index_ms:.1f} | {fmt(einsum_ms, '.1f')} "
                   f"| {index_ms / dense_ms:.2f} | {fmt(einsum_ms and einsum_ms / dense_ms, '.2f')} "
                   f"| {dense_mb:.1f} | {index_mb[E, S]:.1f} | {fmt(einsum_mb, '.1f')} | {drop:.1f} |")
            lines.append(row)
            print(row, flush=True)

    # Index-path memory growth in tokens: MB per 1k tokens at each size, and the slope between sizes
    # (the slope removes the token-independent part, e.g. the E x expert parameter gradients).
    tail = ["", "Index-path memory vs tokens (MB per 1k tokens; slope between sizes in brackets):"]
    for E in args.experts:
        parts, prev = [], None
        for S in args.tokens:
            part = f"{S}: {index_mb[E, S] / (S / 1000):.2f}"
            if prev is not None:
                part += f" [{(index_mb[E, S] - index_mb[E, prev]) / ((S - prev) / 1000):.2f}]"
            parts.append(part)
            prev = S
        tail.append(f"- {E} experts (parameter gradients {grad_mb[E]:.0f} MB): " + ", ".join(parts))
    print("\n".join(tail))
    if args.output:
        with open(args.output, "w") as f:
            f.write("\n".join(lines + tail) + "\n")


if __name__ == "__main__":
    main()
