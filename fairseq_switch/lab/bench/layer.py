"""Forward+backward wall time and peak memory: dense FFN vs Switch FFN (index vs einsum dispatch).

Each token goes through one d -> ff -> d FFN in all three, so expert FLOPs per token are equal
(the einsum path also runs its experts on the padding slots of the [E, C, d] buffer and pays
O(S*E*C*d) for its dense dispatch/combine einsums):
  dense  = ExpertFFN(d, ff, relu)                                  (exactly one expert)
  index  = SwitchFFN(d, ff, RouterConfig(E), relu)                 (this plugin's index dispatch)
  einsum = SwitchFFN(d, ff, RouterConfig(E, dispatch="einsum"), relu)  (fairscale MOELayer, 1-rank group)

Time: median of --iters fwd+bwd iterations after --warmup ones, the three variants interleaved.
Memory: peak bytes of tensors allocated during one extra un-timed fwd+bwd (parameter gradients
included; parameters and input excluded): torch.cuda.max_memory_allocated on CUDA, a
TorchDispatchMode tracker on CPU. "index drop %" is the share of tokens over capacity.

  python scripts/bench_switch_layer.py --quick
  python scripts/bench_switch_layer.py --output bench.md
"""

import argparse
import statistics
import sys
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from fairseq_switch.modules.routing import RouterConfig, expert_capacity
from fairseq_switch.modules.switch_layer import ExpertFFN, SwitchFFN
from ..reports.tables import fmt
from .common import free_port

MB = 2**20


class PeakTensorMemory(TorchDispatchMode):
    """Peak live bytes of the storages created by aten ops run inside the mode.

    A storage is counted once, from the op that allocates it until it is freed (a weakref
    finalizer on its Python object, which torch keeps alive as long as the storage lives).
    Outputs aliasing an input (views, in-place ops) allocate nothing and are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: Dict[int, int] = {}
        self.current = self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key)

    def __torch_dispatch__(
        self, func: Callable, types: Tuple[type, ...], args: Tuple[Any, ...] = (), kwargs: Optional[Dict] = None
    ) -> Any:
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fwd_bwd(module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> None:
    module.zero_grad(set_to_none=True)
    x.grad = None
    (module(x) * g).sum().backward()


def peak_mb(module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> float:
    """Peak MB allocated by one (un-timed) fwd+bwd."""
    module.zero_grad(set_to_none=True)
    x.grad = None
    if x.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(x.device)
        base = torch.cuda.memory_allocated(x.device)
        fwd_bwd(module, x, g)
        _sync(x.device)
        return (torch.cuda.max_memory_allocated(x.device) - base) / MB
    with PeakTensorMemory() as tracker:
        fwd_bwd(module, x, g)
    return tracker.peak / MB


def bench(modules: Dict[str, nn.Module], x: torch.Tensor, g: torch.Tensor, iters: int,
          warmup: int) -> Dict[str, Tuple[float, float]]:
    """{name: (median ms, peak MB)} of fwd+bwd. The modules are timed round-robin, one
    iteration each in turn, so slow drifts in machine load hit them all alike."""
    for m in modules.values():
        for _ in range(warmup):
            fwd_bwd(m, x, g)
    times: Dict[str, List[float]] = {name: [] for name in modules}
    for _ in range(iters):
        for name, m in modules.items():
            _sync(x.device)
            t0 = time.perf_counter()
            fwd_bwd(m, x, g)
            _sync(x.device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: (statistics.median(times[name]), peak_mb(m, x, g)) for name, m in modules.items()}


def einsum_gb(tokens: int, experts: int, capacity_factor: float = 1.25, min_capacity: int = 4,
              bytes_per_elem: int = 20) -> float:
    """Rough peak of the reference path's dense [S, E, C] tensors (bool mask, its float copy,
    combine weights and their gradients: ~20 bytes per element at the peak)."""
    cap = expert_capacity(tokens, experts, capacity_factor, min_capacity)
    return tokens * experts * cap * bytes_per_elem / 2**30


def init_single_process_group(device: torch.device) -> None:
    """The einsum path needs a process group; on CUDA it must be NCCL (gloo has no CUDA all-to-all).
    On CPU the einsum dispatch creates its own 1-rank gloo group lazily."""
    if device.type == "cuda" and not dist.is_initialized():
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{free_port()}", world_size=1, rank=0)


def make_ffn(kind: str, d: int, ff: int, experts: int, device: torch.device) -> nn.Module:
    """"dense": one ExpertFFN; "index" or "einsum": a Switch FFN with that dispatch and the default routing."""
    torch.manual_seed(0)
    if kind == "dense":
        m: nn.Module = ExpertFFN(d, ff, torch.relu, dropout=0.0)
    else:
        m = SwitchFFN(d, ff, RouterConfig(experts, dispatch=kind), activation_fn=torch.relu)
    return m.to(device).train()


def _parser(argv: List[str]) -> argparse.ArgumentParser:
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
    if "--quick" in argv:
        p.set_defaults(d_model=64, ffn_dim=256, experts=[1, 4], tokens=[256, 512], iters=3)
    return p


def memory_growth(index_mb: Dict[Tuple[int, int], float], grad_mb: Dict[int, float], experts: List[int],
                  tokens: List[int]) -> List[str]:
    """Index-path memory growth in tokens: MB per 1k tokens at each size, and the slope between sizes
    (the slope removes the token-independent part, e.g. the E x expert parameter gradients)."""
    tail = ["", "Index-path memory vs tokens (MB per 1k tokens; slope between sizes in brackets):"]
    for E in experts:
        parts: List[str] = []
        prev: Optional[int] = None
        for S in tokens:
            part = f"{S}: {index_mb[E, S] / (S / 1000):.2f}"
            if prev is not None:
                part += f" [{(index_mb[E, S] - index_mb[E, prev]) / ((S - prev) / 1000):.2f}]"
            parts.append(part)
            prev = S
        tail.append(f"- {E} experts (parameter gradients {grad_mb[E]:.0f} MB): " + ", ".join(parts))
    return tail


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv).parse_args(argv)
    device = torch.device(args.device)
    d, ff = args.d_model, args.ffn_dim
    init_single_process_group(device)

    lines = [f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, "
             f"d={d}, ff={ff}, capacity factor 1.25, {args.iters} timed iters (median), {args.warmup} warm-up", ""]
    lines += ["| experts | tokens | dense ms | index ms | einsum ms | index/dense | einsum/dense "
              "| dense MB | index MB | einsum MB | index drop % |", "|" + "---|" * 11]
    print("\n".join(lines), flush=True)
    index_mb: Dict[Tuple[int, int], float] = {}
    grad_mb: Dict[int, float] = {}
    for E in args.experts:
        for S in args.tokens:
            torch.manual_seed(1)
            x = torch.randn(S, d, device=device, requires_grad=True)
            g = torch.randn(S, d, device=device)
            modules = {"dense": make_ffn("dense", d, ff, 1, device), "index": make_ffn("index", d, ff, E, device)}
            if einsum_gb(S, E) <= args.einsum_max_gb and S <= (args.skip_einsum_above or S):
                modules["einsum"] = make_ffn("einsum", d, ff, E, device)
            r = bench(modules, x, g, args.iters, args.warmup)
            grad_mb[E] = sum(p.numel() * p.element_size() for p in modules["index"].parameters()) / MB
            drop = 100 * modules["index"].last_routing.stats.dropped_fraction.item()
            (dense_ms, dense_mb), (index_ms, index_mb[E, S]) = r["dense"], r["index"]
            einsum_ms, einsum_mb = r.get("einsum", (None, None))
            row = (f"| {E} | {S} | {dense_ms:.1f} | {index_ms:.1f} | {fmt(einsum_ms, '.1f', 'skipped')} "
                   f"| {index_ms / dense_ms:.2f} | {fmt(einsum_ms and einsum_ms / dense_ms, '.2f', 'skipped')} "
                   f"| {dense_mb:.1f} | {index_mb[E, S]:.1f} | {fmt(einsum_mb, '.1f', 'skipped')} | {drop:.1f} |")
            lines.append(row)
            print(row, flush=True)

    tail = memory_growth(index_mb, grad_mb, args.experts, args.tokens)
    print("\n".join(tail))
    if args.output:
        with open(args.output, "w") as f:
            f.write("\n".join(lines + tail) + "\n")
    return 0
