"""Forward+backward wall time and peak memory: dense FFN vs Switch FFN (index, grouped, einsum dispatch) vs
transformers' SwitchTransformersSparseMLP, on any device and dtype.

Each token goes through one d -> ff -> d FFN in all of them, so expert FLOPs per token are equal
(the einsum path also runs its experts on the padding slots of the [E, C, d] buffer and pays
O(S*E*C*d) for its dense dispatch/combine einsums):
  dense   = ExpertFFN(d, ff, relu)                                   (exactly one expert)
  index   = SwitchFFN(d, ff, RouterConfig(E), relu)                  (this plugin's index dispatch)
  grouped = SwitchFFN(d, ff, RouterConfig(E, dispatch="grouped"), relu)  (torch's grouped GEMM)
  einsum  = SwitchFFN(d, ff, RouterConfig(E, dispatch="einsum"), relu)   (fairscale MOELayer, 1-rank group)
  hf      = transformers' SwitchTransformersSparseMLP (a loop over experts, capacity per sequence)

Time: median of --iters fwd+bwd iterations after --warmup ones, the variants interleaved.
Memory: peak bytes of tensors allocated during one extra un-timed fwd+bwd (parameter gradients
included; parameters and input excluded): torch.cuda.max_memory_allocated on CUDA, a
TorchDispatchMode tracker on CPU. "index drop %" is the share of tokens over capacity.

  python scripts/bench_switch_layer.py --quick
  python scripts/bench_switch_layer.py --output bench.md
  python scripts/bench_switch_layer.py --device cuda --dtype bfloat16 --d-model 1024 --ffn-dim 4096 \\
      --experts 32 128 --tokens 16384 --variants index grouped einsum hf --einsum-max-gb 40
"""

import argparse
import json
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


VARIANTS = ("dense", "index", "grouped", "einsum", "hf")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFSparseMLP(nn.Module):
    """transformers' SwitchTransformersSparseMLP on [S, d] tokens, as one sequence whose expert capacity is
    this project's batch capacity (factor 1.25), ReLU experts without bias, fp32 router."""

    def __init__(self, d: int, ff: int, experts: int, tokens: int):
        super().__init__()
        from transformers import SwitchTransformersConfig
        from transformers.models.switch_transformers.modeling_switch_transformers import SwitchTransformersSparseMLP

        cfg = SwitchTransformersConfig(d_model=d, d_ff=ff, num_experts=experts, router_jitter_noise=0.0,
                                       expert_capacity=expert_capacity(tokens, experts, 1.25, 4), dropout_rate=0.0,
                                       dense_act_fn="relu", router_dtype="float32")
        self.mlp = SwitchTransformersSparseMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mlp(x[None])
        return (out[0] if isinstance(out, tuple) else out)[0]  # some transformers 5.x return (hidden, router info)


class Autocast(nn.Module):
    """Runs a module under torch.autocast: fairscale's MOELayer casts its dispatch mask to fp32, so its
    einsums need autocast to take half-precision tokens."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module, self.dtype = module, dtype

    @property
    def dispatch(self) -> Any:
        return self.module.dispatch

    @property
    def last_routing(self) -> Any:
        return self.module.last_routing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.module(x).to(x.dtype)


def make_ffn(kind: str, d: int, ff: int, experts: int, device: torch.device, dtype: torch.dtype = torch.float32,
             tokens: int = 0) -> nn.Module:
    """"dense": one ExpertFFN; "index", "grouped" or "einsum": a Switch FFN with that dispatch and the default
    routing; "hf": transformers' SparseMLP. Cast whole to `dtype` as fairseq's --bf16 does (routers still
    compute in fp32); einsum in half precision runs under autocast (see `Autocast`)."""
    torch.manual_seed(0)
    # Built on the device when it is a GPU: initializing 128 experts of 1024 x 4096 on the CPU takes seconds.
    with torch.device(device if device.type == "cuda" else "cpu"):
        if kind == "dense":
            m: nn.Module = ExpertFFN(d, ff, torch.relu, dropout=0.0)
        elif kind == "hf":
            m = HFSparseMLP(d, ff, experts, tokens)
        else:
            m = SwitchFFN(d, ff, RouterConfig(experts, dispatch=kind), activation_fn=torch.relu)
    m = m.to(device=device, dtype=dtype).train()
    return Autocast(m, dtype) if kind == "einsum" and dtype != torch.float32 else m


def _parser(argv: List[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--ffn-dim", type=int, default=2048)
    p.add_argument("--experts", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=["dense", "index", "einsum"],
                   help="dense is always run (the ratios' baseline); grouped: --moe-dispatch grouped; "
                        "hf: transformers' SwitchTransformersSparseMLP")
    p.add_argument("--iters", type=int, default=5, help="timed iterations (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--einsum-max-gb", type=float, default=4.0,
                   help="skip the einsum path where its estimated [S, E, C] tensors exceed this")
    p.add_argument("--skip-einsum-above", type=int, default=None, metavar="TOKENS",
                   help="also skip the einsum path above this many tokens")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="parameters and activations")
    p.add_argument("--quick", action="store_true", help="small smoke-test config (explicit flags still win)")
    p.add_argument("--output", default=None, help="also write the markdown report to this file")
    p.add_argument("--json", default=None, help="also write the rows as JSON to this file")
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
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    d, ff = args.d_model, args.ffn_dim
    variants = ["dense"] + [v for v in args.variants if v != "dense"]
    switch = variants[1:]
    if "einsum" in variants:
        init_single_process_group(device)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    lines = [f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}{gpu}, {args.dtype}, "
             f"d={d}, ff={ff}, capacity factor 1.25, {args.iters} timed iters (median), {args.warmup} warm-up", ""]
    cols = ["experts", "tokens"] + [f"{v} ms" for v in variants] + [f"{v}/dense" for v in switch]
    cols += [f"{v} MB" for v in variants] + ["index drop %"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    print("\n".join(lines), flush=True)
    index_mb: Dict[Tuple[int, int], float] = {}
    grad_mb: Dict[int, float] = {}
    rows: List[Dict[str, Any]] = []
    notes: List[str] = []
    for E in args.experts:
        for S in args.tokens:
            torch.manual_seed(1)
            x = torch.randn(S, d, device=device, dtype=dtype, requires_grad=True)
            g = torch.randn(S, d, device=device, dtype=dtype)
            skip_einsum = einsum_gb(S, E) > args.einsum_max_gb or S > (args.skip_einsum_above or S)
            modules = {v: make_ffn(v, d, ff, E, device, dtype, S) for v in variants
                       if not (v == "einsum" and skip_einsum)}
            r = bench(modules, x, g, args.iters, args.warmup)
            switch_any = next((modules[v] for v in ("index", "grouped", "einsum") if v in modules), None)
            drop = None if switch_any is None else 100 * switch_any.last_routing.stats.dropped_fraction.item()
            if "index" in modules:
                grad_mb[E] = sum(p.numel() * p.element_size() for p in modules["index"].parameters()) / MB
                index_mb[E, S] = r["index"][1]
            if "grouped" in modules and modules["grouped"].dispatch.last_path != "grouped":
                notes.append(f"- {E} experts, {S} tokens: grouped ran the index path "
                             f"({modules['grouped'].dispatch.fallback_reason})")
            dense_ms = r["dense"][0]
            row: Dict[str, Any] = {"experts": E, "tokens": S, "d_model": d, "ffn_dim": ff, "dtype": args.dtype,
                                   "device": str(device) + gpu, "drop_pct": drop}
            for v in variants:
                ms, mb = r.get(v, (None, None))
                row[v] = {"ms": ms, "mb": mb, "vs_dense": None if ms is None else ms / dense_ms}
            if "grouped" in modules:
                row["grouped"]["path"] = modules["grouped"].dispatch.last_path
            rows.append(row)
            cells = [str(E), str(S)] + [fmt(row[v]["ms"], ".1f", "skipped") for v in variants]
            cells += [fmt(row[v]["vs_dense"], ".2f", "skipped") for v in switch]
            cells += [fmt(row[v]["mb"], ".1f", "skipped") for v in variants] + [fmt(drop, ".1f", "-")]
            line = "| " + " | ".join(cells) + " |"
            lines.append(line)
            print(line, flush=True)

    tail = memory_growth(index_mb, grad_mb, args.experts, args.tokens) if index_mb else []
    tail += [""] + notes if notes else []
    print("\n".join(tail))
    if args.output:
        with open(args.output, "w") as f:
            f.write("\n".join(lines + tail) + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0
