"""Run fairseq's own Trainer on W gloo processes (or one) over fixed batches, for the expert-parallel
tests.

Each process builds the task, model, criterion and Trainer exactly as fairseq-train does, then
runs `trainer.train_step` on its share of every global batch and saves, after each step, the loss,
the gradient norm, the gradients and the parameters, with the experts keyed by their global id
so that runs with different rank counts can be compared name by name. The optimizer is SGD with
momentum: Adam would turn float noise in an exactly-zero gradient (a key bias) into a full step.
"""

import os
import re
import socket
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from fairseq_switch.data.sentinels import sentinel_symbols
from fairseq_switch.lab.bench.toy_data import NUM_WORDS, write_corpus, write_dictionary  # noqa: F401

USER_DIR = str(Path(__file__).resolve().parents[1] / "fairseq_switch")
_EXPERT_RE = re.compile(r"(.*\.experts\.)(\d+)(\..*)")


def global_batches(num_steps: int, sizes: Sequence[int], seed: int = 0) -> List[List[Dict]]:
    """[step][rank] -> raw examples (src, tgt) as token lists; `sizes[r]` examples go to rank r.

    Lengths vary, so ranks have different token counts and batches contain padding.
    """
    g = torch.Generator().manual_seed(seed)
    first_word = 4 + len(sentinel_symbols())
    steps = []
    for _ in range(num_steps):
        per_rank = []
        for n in sizes:
            examples = []
            for _ in range(n):
                ls, lt = int(torch.randint(5, 12, (1,), generator=g)), int(torch.randint(3, 7, (1,), generator=g))
                src = torch.randint(first_word, first_word + NUM_WORDS, (ls,), generator=g).tolist()
                tgt = torch.randint(first_word, first_word + NUM_WORDS, (lt,), generator=g).tolist()
                examples.append((src, tgt))
            per_rank.append(examples)
        steps.append(per_rank)
    return steps


def collate(examples, pad: int = 1, eos: int = 2) -> Dict:
    """fairseq's language-pair layout, right padded, EOS-terminated targets."""
    if not examples:
        return {}
    bsz = len(examples)
    src_len = max(len(s) for s, _ in examples) + 1
    tgt_len = max(len(t) for _, t in examples) + 1
    src = torch.full((bsz, src_len), pad)
    tgt = torch.full((bsz, tgt_len), pad)
    prev = torch.full((bsz, tgt_len), pad)
    for i, (s, t) in enumerate(examples):
        src[i, : len(s) + 1] = torch.tensor(s + [eos])
        tgt[i, : len(t) + 1] = torch.tensor(t + [eos])
        prev[i, : len(t) + 1] = torch.tensor([eos] + t)
    return {
        "id": torch.arange(bsz),
        "nsentences": bsz,
        "ntokens": int(tgt.ne(pad).sum()),
        "net_input": {"src_tokens": src, "src_lengths": src.ne(pad).sum(1), "prev_output_tokens": prev},
        "target": tgt,
    }


def global_name(name: str, first_local_expert: int) -> str:
    """encoder.layers.1.fc1.experts.0.fc2.weight on a rank whose first expert is 2 -> ...experts.2..."""
    m = _EXPERT_RE.match(name)
    if not m:
        return name
    return f"{m.group(1)}{int(m.group(2)) + first_local_expert}{m.group(3)}"


def build_trainer(data_dir: str, world: int, rank: int, extra: Sequence[str] = (), cpu: bool = True):
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    from fairseq_switch.plugin import register

    register()  # fairseq skips --user-dir here: this module imported the package first (also in spawned ranks)
    parser = options.get_training_parser()
    argv = [
        data_dir, "--user-dir", USER_DIR, "--task", "span_corruption", "--arch", "switch_tiny",
        "--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
        "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
        "--moe-expert-count", "4", "--criterion", "switch_cross_entropy", "--optimizer", "sgd", "--momentum", "0.9",
        "--lr", "0.5", *(["--cpu"] if cpu else []),
        "--seed", "3", "--dropout", "0", "--moe-jitter-eps", "0", "--moe-capacity-factor", "8",
        "--moe-eval-capacity-factor", "8", "--moe-min-capacity", "64", "--clip-norm", "0.5",
        "--distributed-world-size", str(world), "--distributed-backend", "gloo", "--input-length", "16", "--no-save",
        *extra,
    ]
    args = options.parse_args_and_arch(parser, argv)
    cfg = convert_namespace_to_omegaconf(args)
    cfg.distributed_training.distributed_rank = rank
    utils.set_torch_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return Trainer(cfg, task, model, criterion)


def snapshot(trainer, first_local_expert: int, what: str) -> Dict[str, torch.Tensor]:
    out = {}
    for name, p in trainer.get_model().named_parameters():
        t = p.grad if what == "grad" else p.data
        if t is not None:
            out[global_name(name, first_local_expert)] = t.detach().clone()
    return out


def run_steps(trainer, batches_for_me: List[Optional[Dict]]):
    """train_step on each batch ({} = no data left on this rank, fairseq then runs a dummy batch)."""
    from fairseq.logging import metrics

    ffns = trainer.get_model().switch_ffns
    first = ffns[0].layout.first_local_expert if ffns else 0
    trainer.reset_dummy_batch(batches_for_me[0])  # fairseq-train uses the epoch's first batch
    history = []
    for sample in batches_for_me:
        with metrics.aggregate(new_root=True) as agg:
            log = trainer.train_step([sample])
            stats = agg.get_smoothed_values()
        history.append(
            {
                "loss": float(log["loss"]) if log else None,
                "gnorm": float(stats["gnorm"]),
                "grads": snapshot(trainer, first, "grad"),
                "params": snapshot(trainer, first, "data"),
            }
        )
    return history


def fairseq_train_cmd(argv: Sequence, world: int) -> List[str]:
    """fairseq-train with `argv`; under torchrun with gloo when world > 1."""
    import sys

    bin_dir = Path(sys.executable).parent
    cmd = [str(bin_dir / "fairseq-train")] + [str(a) for a in argv]
    if world > 1:
        cmd = [str(bin_dir / "torchrun"), "--nproc_per_node", str(world), "--master_port", str(free_port())] + cmd
        cmd += ["--distributed-world-size", str(world), "--distributed-backend", "gloo"]
    return cmd


def run_process_group(cmd: Sequence[str], cwd, timeout: int = 300, env: Optional[Dict[str, str]] = None):
    """Run `cmd` (one thread per process) in its own process group: on a hang, torchrun and every rank
    it started are killed together. `env`: added to this environment. Returns (returncode, stdout, stderr)."""
    import signal
    import subprocess

    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, data_dir: str, steps, extra, out_dir: str,
           load_from: Optional[str] = None, save_to: Optional[str] = None) -> None:
    """One process of a W-rank run: rank r trains on steps[k][r]; results go to out_dir/rank{r}.pt.
    `load_from`: a checkpoint every rank loads first (resume); `save_to`: saved after the last step."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        trainer = build_trainer(data_dir, world, rank, extra)
        if load_from is not None:
            assert trainer.load_checkpoint(load_from) is not None, f"{load_from} was not loaded"
        history = run_steps(trainer, [collate(step[rank]) for step in steps])
        if save_to is not None:  # as checkpoint_utils.save_checkpoint does
            trainer.consolidate_optimizer()
            trainer.save_checkpoint(save_to, {"train_iterator": {"epoch": 1}})
        torch.save(history, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        if world > 1:
            dist.destroy_process_group()


def run(world: int, data_dir: str, steps, out_dir: str, extra: Sequence[str] = (), timeout: float = 300,
        load_from: Optional[str] = None, save_to: Optional[str] = None):
    """Run `world` processes (spawned, loopback gloo) and return their histories, rank by rank."""
    import torch.multiprocessing as mp

    import time

    os.makedirs(out_dir, exist_ok=True)
    # spawned even for one process, so fairseq's global state stays out of the test process
    ctx = mp.start_processes(
        worker, args=(world, free_port(), data_dir, steps, list(extra), out_dir, load_from, save_to), nprocs=world,
        join=False, start_method="spawn",
    )
    deadline = time.time() + timeout
    while not ctx.join(timeout=2):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            raise TimeoutError(f"{world}-process run did not finish in {timeout:.0f} s (a hang in a collective?)")
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(world)]


def merge_ranks(histories):
    """Per step: one dict of every parameter (experts by global id) over all ranks."""
    merged = []
    for k in range(len(histories[0])):
        step = {"loss": histories[0][k]["loss"], "gnorm": histories[0][k]["gnorm"], "grads": {}, "params": {}}
        for h in histories:
            for key in ("grads", "params"):
                for name, t in h[k][key].items():
                    if name in step[key]:  # a replicated expert (or a shared weight): copies must agree
                        torch.testing.assert_close(t, step[key][name], atol=1e-6, rtol=1e-5, msg=f"{key} {name}")
                    step[key][name] = t
        merged.append(step)
    return merged
