"""Throughput of a real fairseq training step under expert parallelism on W CPU processes (weak scaling).

For each W in --world-sizes, W processes (spawned, loopback gloo group) each build the task, model,
criterion and Trainer as fairseq-train does (Adam, --ddp-backend c10d, dropout as the arch sets it)
and run full `Trainer.train_step`s: forward, backward, data-parallel all-reduce of the shared
weights, global gradient norm, Adam step. Each rank holds N/W of every Switch layer's N experts
and swaps tokens with the other ranks through the all-to-all (Fedus et al. 2021, Sec. 5). The batch
is fixed and synthetic (random word ids, fixed seed, different on each rank) in span corruption's
shape: --input-length source tokens and the matching target length, EOS included, no padding.

Weak scaling: every rank gets the same per-rank batch, so the global batch is W times larger.
Columns, one row per W, all measured in this invocation:
  s/step        median over the timed steps of the slowest rank's train_step wall time (the ranks
                start each step together, after a barrier)
  tokens/s      global source+target tokens per step (W x per-rank tokens) / s/step
  vs W=b        tokens/s over the first row's (b = smallest W measured)
  ideal         the same ratio if throughput grew with the cores in use, min(W x threads, cores):
                1.00 with the default thread split, since the W ranks share one machine's cores
  a2a s/step    seconds inside the all-to-all exchanges (forward and backward), mean over ranks,
                median over steps. Loopback gloo, so this is memory copies plus waiting for the other
                ranks, not a network. Not counted: the small capacity all-reduce before each exchange
                and the gradient all-reduce
  a2a %         a2a s/step / s/step
  drop %        tokens over expert capacity, all Switch layers and ranks, mean over timed steps
  params/rank   parameters held by one rank (shared weights + its experts): the Adam step's size
  RSS GB        peak resident memory of the largest rank
  others' CPU   cores kept busy by other processes during the run (all CPU time on the machine minus
                this script's and its ranks'), averaged over the run: above ~0.2 the timings are skewed

Each rank runs torch.set_num_threads(max(1, cores // W)) (--threads-per-rank overrides), so every
row uses the same cores: read "vs W=1" against "ideal", not against W. A single machine cannot show
multi-host scaling; what this shows is the cost expert parallelism adds at fixed hardware (the
exchanges, replicated shared weights) and what it saves (each rank's Adam step covers 1/W of the
experts). Rows with W x threads > cores are oversubscribed: they measure contention, not scaling.
A multi-threaded rank slows down many times over when other processes take some of its cores (its
threads wait for each other at every op): if "others' CPU" is not near 0, rerun on a quiet machine,
or compare with --threads-per-rank 1 (then "ideal" is min(W, cores) / 1).

  python scripts/bench_expert_parallel.py --quick
  python scripts/bench_expert_parallel.py --world-sizes 1,2,4 --steps 10 --output bench_ep.md
"""

import argparse
import json
import logging
import os
import resource
import signal
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

import fairseq_switch

from fairseq_switch.data.sentinels import sentinel_symbols
from fairseq_switch.data.span_corruption import example_lengths, raw_length_for_input
from .common import free_port


def _quiet() -> None:
    """Deprecation noise from fairscale's imports and fairseq's hydra setup, printed once per rank: set by the
    benchmark and each rank when they run (importing this module changes no filter)."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="hydra")
    warnings.filterwarnings("ignore", category=UserWarning, message=r"\s*'config' is validated against ConfigStore")


PAD, EOS = 1, 2  # fairseq's Dictionary: <s>=0, <pad>=1, </s>=2, <unk>=3

Spec = Dict[str, Any]  # what every rank of one world size needs: shapes, threads, step counts


def sequence_lengths(input_length: int, noise_density: float = 0.15, mean_span: float = 3.0) -> Tuple[int, int]:
    """(source, target) tokens of one span-corruption example, EOS included (task defaults)."""
    return example_lengths(raw_length_for_input(input_length, noise_density, mean_span), noise_density, mean_span, True)


def write_dictionary(folder: str, vocab_size: int) -> None:
    """dict.txt with the sentinels and filler words up to vocab_size symbols (fairseq adds 4 specials),
    so the embedding and the softmax cost what they cost with a real vocabulary."""
    sentinels = sentinel_symbols()
    fillers = vocab_size - 4 - len(sentinels)
    if fillers < 1:
        raise SystemExit(f"--vocab-size must be > {4 + len(sentinels)} (specials + sentinels)")
    words = sentinels + [f"w{i}" for i in range(fillers)]
    Path(folder, "dict.txt").write_text("".join(f"{w} 1\n" for w in words))


def synthetic_batch(num_seqs: int, src_len: int, tgt_len: int, vocab_size: int, seed: int) -> Dict[str, Any]:
    """A language-pair batch of random word ids (specials excluded), src_len - 1 and tgt_len - 1 words per
    sequence plus EOS; every sequence has the same lengths, so there is no padding."""
    g = torch.Generator().manual_seed(seed)
    src_words, tgt_words = [], []
    for _ in range(num_seqs):
        src_words.append(torch.randint(4, vocab_size, (src_len - 1,), generator=g))
        tgt_words.append(torch.randint(4, vocab_size, (tgt_len - 1,), generator=g))
    eos = torch.full((num_seqs, 1), EOS)
    src, tgt = torch.cat([torch.stack(src_words), eos], 1), torch.stack(tgt_words)
    return {
        "id": torch.arange(num_seqs),
        "nsentences": num_seqs,
        "ntokens": num_seqs * tgt_len,
        "net_input": {"src_tokens": src, "src_lengths": torch.full((num_seqs,), src_len),
                      "prev_output_tokens": torch.cat([eos, tgt], 1)},
        "target": torch.cat([tgt, eos], 1),
    }


def build_trainer(spec: Spec, data_dir: str, world: int, rank: int) -> Tuple[Any, Dict[str, Any]]:
    """The Trainer fairseq-train would build (Adam, the arch's own dropout and capacity), and the model's shape."""
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    from fairseq_switch.plugin import register

    register()  # fairseq skips --user-dir: this process imported the package first
    argv = [
        data_dir, "--user-dir", fairseq_switch.__path__[0], "--task", "span_corruption",
        "--input-length", str(spec["input_length"]), "--arch", spec["arch"], "--criterion", "switch_cross_entropy",
        "--optimizer", "adam", "--lr", "1e-4", "--cpu", "--seed", "1", "--no-save", "--ddp-backend",
        spec["ddp_backend"], "--distributed-world-size", str(world), "--distributed-backend", "gloo",
    ]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    cfg = convert_namespace_to_omegaconf(args)
    cfg.distributed_training.distributed_rank = rank
    utils.set_torch_seed(cfg.common.seed)  # the same shared weights on every rank
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    shape = {k: getattr(args, k) for k in ("encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
                                           "encoder_layers", "decoder_layers", "moe_expert_count", "moe_freq",
                                           "dropout", "moe_capacity_factor")}
    shape["params"] = sum(p.numel() for p in model.parameters())
    return Trainer(cfg, task, model, criterion), shape


def _exit_with_parent() -> None:
    """A rank whose launcher died would wait in a collective forever: leave when the parent goes."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def worker(rank: int, world: int, port: int, spec: Spec, data_dir: str, out_dir: str) -> None:
    """One rank: warm-up and timed train steps; writes rank{r}.json (step and exchange seconds, drops, shape)."""
    _quiet()
    import torch.distributed as dist
    from fairseq.logging import metrics

    from fairseq_switch.modules.switch_layer import SwitchFFN

    _exit_with_parent()
    logging.disable(logging.INFO)  # fairseq and the plugin log every build step, once per rank
    torch.set_num_threads(spec["threads"])
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        trainer, shape = build_trainer(spec, data_dir, world, rank)
        sample = synthetic_batch(spec["seqs"], spec["src_len"], spec["tgt_len"], spec["vocab_size"], seed=1000 + rank)
        trainer.reset_dummy_batch(sample)  # as fairseq-train does; never used, every rank has data
        ffns = [m for m in trainer.get_model().modules() if isinstance(m, SwitchFFN)]

        def pop_a2a() -> float:
            return sum(ffn.pop_a2a_seconds() for ffn in ffns)

        # The model pops its layers' exchange seconds at each forward and the criterion logs them
        # (divided by W, as fairseq sums outputs over ranks); read this rank's value on the way out.
        criterion, fwd_a2a = trainer.get_criterion(), [0.0]
        criterion_forward = criterion.forward

        def forward(*a, **kw):
            loss, sample_size, log = criterion_forward(*a, **kw)
            fwd_a2a[0] += float(log.get("moe_a2a_s", 0.0)) * world
            return loss, sample_size, log

        criterion.forward = forward
        step_s, a2a_s, dropped = [], [], []
        for k in range(spec["warmup"] + spec["steps"]):
            if world > 1:
                dist.barrier()  # start together, so the slowest rank's time is the step time
            pop_a2a()
            fwd_a2a[0] = 0.0
            t0 = time.perf_counter()
            with metrics.aggregate(new_root=True):  # keep fairseq's global meters out of it
                log = trainer.train_step([sample])
            dt = time.perf_counter() - t0
            if k >= spec["warmup"]:  # the first steps build the optimizer and the DDP wrapper
                step_s.append(dt)
                a2a_s.append(fwd_a2a[0] + pop_a2a())  # + the backward's exchanges
                dropped.append(float(log.get("moe_dropped", float("nan"))) if log else float("nan"))
        out = {"step_s": step_s, "a2a_s": a2a_s, "dropped": dropped, "shape": shape,
               "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # KiB on Linux
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        if world > 1:
            dist.destroy_process_group()


def run_world(world: int, spec: Spec, data_dir: str, out_dir: str, timeout: float) -> List[Dict[str, Any]]:
    """W spawned ranks; every one is killed and reaped whatever happens (timeout, error, Ctrl-C)."""
    import torch.multiprocessing as mp

    # a rank's imports (to unpickle `worker`) print fairscale's FutureWarnings before `worker` runs
    before = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = "ignore::FutureWarning"
    try:
        ctx = mp.start_processes(worker, args=(world, free_port(), spec, data_dir, out_dir), nprocs=world,
                                 join=False, start_method="spawn")
    finally:
        if before is None:
            del os.environ["PYTHONWARNINGS"]
        else:
            os.environ["PYTHONWARNINGS"] = before
    deadline = time.time() + timeout
    try:
        while not ctx.join(timeout=2):
            if time.time() > deadline:
                raise TimeoutError(f"did not finish in {timeout:.0f} s (a hang in a collective?); see --timeout")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
        for p in ctx.processes:
            p.join()
    return [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(world)]


def cpu_seconds() -> Tuple[Optional[float], float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its reaped ranks)."""
    me, ranks = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    own = me.ru_utime + me.ru_stime + ranks.ru_utime + ranks.ru_stime
    try:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    except (OSError, ValueError):  # not Linux
        return None, own
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"), own


def summarize(results: List[Dict[str, Any]], world: int) -> Dict[str, float]:
    """One row's figures from the ranks' records (see the module docstring for each column)."""
    steps = len(results[0]["step_s"])
    step = [max(r["step_s"][k] for r in results) for k in range(steps)]
    a2a = [sum(r["a2a_s"][k] for r in results) / world for k in range(steps)]
    return {
        "step_s": statistics.median(step),
        "a2a_s": statistics.median(a2a),
        "drop": statistics.mean(results[0]["dropped"]),  # a global figure, the same on every rank
        "params": max(r["shape"]["params"] for r in results),
        "rss_gb": max(r["rss_gb"] for r in results),
    }


def report_head(args: argparse.Namespace, shape: Dict[str, Any], cores: int, seqs: int, src_len: int,
                tgt_len: int, base_world: int) -> List[str]:
    """The setup line, the batch line and the table header (once the first world size has run)."""
    sh, tokens = shape, seqs * (src_len + tgt_len)
    return [
        f"torch {torch.__version__}, {cores} cores (os.cpu_count), gloo loopback, --ddp-backend "
        f"{args.ddp_backend}, Adam; {args.arch}: d_model {sh['encoder_embed_dim']}, d_ff "
        f"{sh['encoder_ffn_embed_dim']}, {sh['encoder_attention_heads']} heads, {sh['encoder_layers']}+"
        f"{sh['decoder_layers']} layers, {sh['moe_expert_count']} experts, Switch FFN every "
        f"{sh['moe_freq']} layers, dropout {sh['dropout']}, capacity factor {sh['moe_capacity_factor']}, "
        f"vocab {args.vocab_size}",
        f"per rank and step: {seqs} sequences x ({src_len} source + {tgt_len} target tokens) = {tokens} "
        f"tokens; global batch = W x that (weak scaling). {args.steps} timed steps (median), "
        f"{args.warmup} warm-up.",
        "",
        f"| W | threads/rank | s/step | tokens/s | vs W={base_world} | ideal | a2a s/step | a2a % | drop % "
        f"| params/rank M | RSS GB | others' CPU | note |",
        "|" + "---|" * 13,
    ]


def _parser(argv: List[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world-sizes", default="1,2,4", help="comma-separated process counts, measured in this order")
    p.add_argument("--steps", type=int, default=10, help="timed train steps per world size (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (optimizer and DDP are built lazily)")
    p.add_argument("--arch", default="switch_small")
    p.add_argument("--input-length", type=int, default=128,
                   help="source tokens per sequence, EOS included; the target length follows (30 for 128)")
    p.add_argument("--tokens-per-rank", type=int, default=8 * sum(sequence_lengths(128)),
                   help="source+target tokens per rank per step, rounded down to whole sequences "
                        "(default 1264 = 8 sequences of 128 + 30 tokens)")
    p.add_argument("--vocab-size", type=int, default=32000, help="dictionary size (T5: 32k SentencePiece)")
    p.add_argument("--ddp-backend", default="c10d", choices=["c10d", "legacy_ddp"])
    p.add_argument("--threads-per-rank", type=int, default=None, help="default max(1, cores // W)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per world size before its ranks are killed")
    p.add_argument("--quick", action="store_true", help="tiny smoke-test config (explicit flags still win)")
    p.add_argument("--output", default=None, help="also write the markdown report to this file")
    if "--quick" in argv:
        p.set_defaults(arch="switch_tiny", input_length=32, tokens_per_rank=4 * sum(sequence_lengths(32)),
                       vocab_size=1000, steps=3, warmup=1, timeout=300)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    _quiet()
    argv = sys.argv[1:] if argv is None else argv
    p = _parser(argv)
    args = p.parse_args(argv)
    worlds = [int(w) for w in args.world_sizes.split(",")]
    cores = os.cpu_count() or 1
    src_len, tgt_len = sequence_lengths(args.input_length)
    seqs = args.tokens_per_rank // (src_len + tgt_len)
    if seqs < 1 or args.steps < 1:
        p.error(f"--tokens-per-rank must hold one sequence ({src_len + tgt_len} tokens) and --steps must be >= 1")
    tokens = seqs * (src_len + tgt_len)
    # a SIGTERM (e.g. from `timeout`) must still reach run_world's cleanup
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    head: List[str] = []
    rows: List[str] = []
    notes: List[str] = []
    base: Optional[Tuple[int, float, int]] = None  # the first row's (W, tokens/s, cores used)
    with tempfile.TemporaryDirectory(prefix="bench_ep_") as tmp:
        write_dictionary(tmp, args.vocab_size)
        for world in worlds:
            threads = args.threads_per_rank or max(1, cores // world)
            spec = {"arch": args.arch, "input_length": args.input_length, "src_len": src_len, "tgt_len": tgt_len,
                    "seqs": seqs, "vocab_size": args.vocab_size, "ddp_backend": args.ddp_backend,
                    "threads": threads, "steps": args.steps, "warmup": args.warmup}
            busy0, own0, t0 = *cpu_seconds(), time.time()
            out_dir = os.path.join(tmp, f"w{world}")
            os.makedirs(out_dir)
            try:
                results = run_world(world, spec, tmp, out_dir, args.timeout)
            except Exception as e:  # noqa: BLE001  (a rank's traceback arrives as the message)
                sys.exit(f"bench_expert_parallel: the W={world} run failed: {type(e).__name__}: {e}")
            busy1, own1 = cpu_seconds()
            others = "n/a"
            if busy0 is not None:
                others = f"{max(0.0, (busy1 - busy0) - (own1 - own0)) / (time.time() - t0):.2f}"
            s = summarize(results, world)
            tok_s = world * tokens / s["step_s"]
            used = min(world * threads, cores)
            if base is None:
                base = (world, tok_s, used)
                head = report_head(args, results[0]["shape"], cores, seqs, src_len, tgt_len, world)
                print("\n".join(head), flush=True)
            note = []
            if others != "n/a" and float(others) > 0.2:
                note.append("machine busy")
            if world * threads > cores:
                note.append("oversubscribed")
                notes.append(f"W={world}: {world} ranks x {threads} threads on {cores} cores: oversubscribed, "
                             "the figures measure contention, not scaling.")
            row = (f"| {world} | {threads} | {s['step_s']:.3f} | {tok_s:.0f} | {tok_s / base[1]:.2f} "
                   f"| {used / base[2]:.2f} | {s['a2a_s']:.3f} | {100 * s['a2a_s'] / s['step_s']:.1f} "
                   f"| {100 * s['drop']:.1f} | {s['params'] / 1e6:.1f} | {s['rss_gb']:.2f} | {others} "
                   f"| {', '.join(note)} |")
            rows.append(row)
            print(row, flush=True)
    if notes:
        print("\n" + "\n".join(notes))
    if args.output:
        with open(args.output, "w") as f:
            f.write("\n".join(head + rows + ([""] + notes if notes else [])) + "\n")
    return 0
