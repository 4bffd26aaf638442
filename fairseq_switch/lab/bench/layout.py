"""Training speed of one architecture in the T5 layout vs the fairseq layout, measured side by side.

Each iteration is a full training step on the same random batch: forward, cross-entropy,
backward and an Adam update. The two layouts alternate iteration by iteration, so machine
noise hits both alike; the ratio is the median of per-pair ratios.

    python scripts/bench_layout.py                       # switch_tiny, pretrain_tiny's batch shape
    python scripts/bench_layout.py --arch t5_tiny --threads 2
"""

import argparse
import statistics
import time
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

import fairseq_switch

from .common import add_options


def build(arch: str, layout: str, vocab: int) -> nn.Module:
    """`arch` in `layout` as fairseq-train builds it (translation task, dropout 0), over a `vocab`-symbol dictionary."""
    from fairseq import options
    from fairseq.data import Dictionary
    from fairseq.tasks.translation import TranslationTask

    from fairseq_switch.plugin import register

    register()  # fairseq skips --user-dir: this process imported the package first
    d = Dictionary()
    for i in range(vocab - d.nspecial):
        d.add_symbol(f"w{i}")
    argv = ["/nonexistent", "--user-dir", fairseq_switch.__path__[0], "--arch", arch, "--layout", layout,
            "--task", "translation", "-s", "src", "-t", "tgt", "--dropout", "0"]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    return TranslationTask(args, d, d).build_model(args)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="switch_tiny")
    p.add_argument("--batch", type=int, default=32, help="sequences per batch")
    add_options(p, src_len=128, tgt_len=30, vocab=8000, iters=30, warmup=5, threads=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    models = {layout: build(a.arch, layout, a.vocab) for layout in ("t5", "fairseq")}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}
    src = torch.randint(4, a.vocab, (a.batch, a.src_len))
    tgt = torch.randint(4, a.vocab, (a.batch, a.tgt_len))
    prev = torch.cat([torch.full((a.batch, 1), 2), tgt[:, :-1]], 1)
    lengths = torch.full((a.batch,), a.src_len)

    def step(layout: str) -> float:
        model, opt = models[layout], opts[layout]
        t0 = time.perf_counter()
        logits, _ = model(src, lengths, prev)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), tgt.view(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    times: Dict[str, List[float]] = {k: [] for k in models}
    for i in range(a.warmup + a.iters):
        for layout in (("t5", "fairseq") if i % 2 == 0 else ("fairseq", "t5")):
            t = step(layout)
            if i >= a.warmup:
                times[layout].append(t)
    tokens = a.batch * (a.src_len + a.tgt_len)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = sorted(f / t for t, f in zip(times["t5"], times["fairseq"]))
    print(f"{a.arch}, batch {a.batch} x ({a.src_len} + {a.tgt_len}) tokens, {a.threads} thread(s), "
          f"{a.iters} interleaved steps")
    for k in ("t5", "fairseq"):
        print(f"  {k:8s} {med[k] * 1000:8.1f} ms/step  {tokens / med[k]:9.0f} tokens/s")
    print(f"  T5 layout tokens/s relative to fairseq layout: median {statistics.median(ratios):.3f} "
          f"(pairs: min {ratios[0]:.3f}, max {ratios[-1]:.3f})")
    return 0
