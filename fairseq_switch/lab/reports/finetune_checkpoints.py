"""Fine-tune every checkpoint of a pretraining sweep on one downstream task and record its test score.

The fine-tuned side of the upstream/downstream study (Fedus et al. 2021, Appendix E): for each
checkpoint (files, or run folders as in probe_checkpoints.py) it runs fairseq-train (task
text_to_text, the checkpoint's architecture and expert count, `--finetune-from-model`), keeps the
checkpoint with the best validation score (validated every --validate-every updates), decodes the
test split with fairseq-generate and scores it as scripts/score_generations.py does. One row per
checkpoint is appended to <run>/finetune/<task>.jsonl: {"update", "checkpoint", "metric", "test",
"valid_best", "valid_nlp"} (valid_nlp: the best validation negative log perplexity of the gold
targets). Checkpoints already there are skipped; --refresh recomputes the log-derived fields of
existing rows.

    python scripts/finetune_checkpoints.py --task bbc-topic=data/downstream/bbc-topic --prefix "classify: " \\
        --updates 300 --jobs 2 runs/ud/pre_e0 runs/ud/pre_e8

Classification tasks (meta.json "task": "classification") are scored by accuracy with greedy
decoding; others by ROUGE-2 with beam 4. --jobs runs that many fine-tunes at once, each with
OMP_NUM_THREADS = cores / jobs (or as set by the caller).
"""

import argparse
import concurrent.futures as futures
import json
import os
import subprocess
import sys
from typing import Any, List, Optional

import torch

from fairseq_switch.logs import json_records
from ..project import PLUGIN_DIR, fairseq_command
from .checkpoint_files import checkpoints_of, checkpoints_parser, run_dir_of
from .generations import error_line, score_file

USER_DIR = str(PLUGIN_DIR)  # relative paths (checkpoints, data) are the caller's: fairseq runs in its folder


# what must match the checkpoint for its weights to load (the arch's defaults may have been overridden)
SHAPE_KEYS = ("encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim", "decoder_ffn_embed_dim",
              "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads", "moe_freq")


def checkpoint_info(path: str) -> dict:
    """Update, expert count and pretraining data of a checkpoint (read on CPU, experts not loaded)."""
    from fairseq_switch.models.teacher import read_checkpoint

    state = read_checkpoint(path, "checkpoint")
    cfg = state["cfg"]

    # a DictConfig (Hydra runs) or an argparse Namespace (fairseq-train's arch models)
    def get(node: Any, key: str) -> Any:
        return node.get(key) if hasattr(node, "get") else getattr(node, key, None)

    shape = {k: get(cfg["model"], k) for k in SHAPE_KEYS if get(cfg["model"], k) is not None}
    return {"update": int(state["optimizer_history"][-1]["num_updates"]),
            "experts": int(get(cfg["model"], "moe_expert_count") or 0),
            "arch": get(cfg["model"], "arch") or get(cfg["model"], "_name"),
            "shape": shape,
            "data": str(get(cfg["task"], "data")).split(os.pathsep)[0]}


def done_updates(rows_file: str) -> set:
    """The updates already fine-tuned and scored in `rows_file`."""
    if not os.path.isfile(rows_file):
        return set()
    with open(rows_file, encoding="utf-8") as f:
        return {json.loads(line)["update"] for line in f if line.strip()}


def finetune_one(ckpt: str, info: dict, data: str, work: str, args: argparse.Namespace, kind: str,
                 threads: int) -> dict:
    """Fine-tune, decode and score one checkpoint in folder `work`: its row of <task>.jsonl."""
    metric = "acc" if kind == "classification" else "rouge2"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    os.makedirs(work, exist_ok=True)
    for name in os.listdir(work):  # an interrupted earlier try: fairseq would resume from its checkpoint_last
        if name.endswith(".pt"):
            os.remove(os.path.join(work, name))
    train = [*fairseq_command("fairseq-train"), data, "--user-dir", USER_DIR,
             "--task", "text_to_text", "--arch", info["arch"], "--moe-expert-count", str(info["experts"]),
             *[a for k, v in info["shape"].items() for a in ("--" + k.replace("_", "-"), str(v))],
             "--finetune-from-model", os.path.abspath(ckpt), "--criterion", "switch_cross_entropy",
             "--expert-dropout", "0.4", "--dropout", "0.1",
             "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", str(args.lr),
             "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "50", "--clip-norm", "1.0",
             "--max-tokens", "4096", "--max-update", str(args.updates),
             "--eval-metric", "acc" if metric == "acc" else "rouge",
             "--eval-generate-args",
             json.dumps({"beam": 1, "max_len_a": 0, "max_len_b": 8 if metric == "acc" else 32}),
             "--validate-interval-updates", str(args.validate_every),
             "--save-interval-updates", str(args.validate_every),
             "--keep-interval-updates", "1", "--no-epoch-checkpoints", "--best-checkpoint-metric", metric,
             "--maximize-best-checkpoint-metric", "--save-dir", work, "--log-format", "json",
             "--log-interval", "50", "--seed", str(args.seed), "--num-workers", "0"]
    if not torch.cuda.is_available():
        train.append("--cpu")
    with open(os.path.join(work, "train.log"), "w") as log:
        rc = subprocess.call(train, stdout=log, stderr=subprocess.STDOUT, env=env)
    if rc:
        raise RuntimeError(f"fine-tuning {ckpt} failed (exit {rc}); see {work}/train.log")
    beam = "1" if metric == "acc" else "4"
    gen = [*fairseq_command("fairseq-generate"), data, "--user-dir", USER_DIR,
           "--task", "text_to_text", "--path", os.path.join(work, "checkpoint_best.pt"), "--gen-subset", "test",
           "--beam", beam, "--max-len-a", "0", "--max-len-b", "8" if metric == "acc" else "32", "--batch-size", "64"]
    if not torch.cuda.is_available():
        gen.append("--cpu")
    with open(os.path.join(work, "gen.out"), "w") as out, open(os.path.join(work, "gen.log"), "w") as err:
        rc = subprocess.call(gen, stdout=out, stderr=err, env=env)
    if rc:
        raise RuntimeError(f"fairseq-generate on {work}/checkpoint_best.pt failed (exit {rc}); see {work}/gen.log")
    try:
        test = score_file(os.path.join(work, "gen.out"), ["acc" if metric == "acc" else "rouge"],
                          os.path.join(data, "spm.model"))[metric]
    except (OSError, ValueError) as e:
        raise RuntimeError(f"scoring {work}/gen.out failed: {error_line(e)}") from None
    if not args.keep_checkpoints:
        for name in os.listdir(work):
            if name.endswith(".pt"):
                os.remove(os.path.join(work, name))
    return {"update": info["update"], "checkpoint": ckpt, "experts": info["experts"], "metric": metric,
            "test": test, **log_scores(os.path.join(work, "train.log"), metric)}


def log_scores(train_log: str, metric: str) -> dict:
    """From a fine-tuning log: the peak validation score (`valid_best`) and the best validation negative
    log perplexity of the gold targets (`valid_nlp`): a continuous score, far less noisy than an
    accuracy on 150 examples."""
    with open(train_log, errors="replace") as f:
        recs = json_records(f, "valid")
    scores = [r[metric] for r in recs if isinstance(r.get(metric), float)]
    nlp = [r["neg_log_perplexity"] for r in recs if isinstance(r.get("neg_log_perplexity"), float)]
    return {"valid_best": max(scores) if scores else None, "valid_nlp": max(nlp) if nlp else None}


def refresh(rows_file: str, work_root: str, name: str) -> int:
    """Recompute the log-derived fields of existing rows from their kept fine-tuning logs."""
    with open(rows_file, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for r in rows:
        log = os.path.join(work_root, f"{name}-u{r['update']}", "train.log")
        if os.path.isfile(log):
            r.update(log_scores(log, r.get("metric", "acc")))
    with open(rows_file, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return len(rows)


def main(argv: Optional[List[str]] = None) -> int:
    p = checkpoints_parser(__doc__)
    p.add_argument("--task", required=True,
                   help="the downstream folder, 'folder' or 'name=folder' (data/downstream/...)")
    p.add_argument("--prefix", default="", help='task prefix put before every input, e.g. "classify: "')
    p.add_argument("--updates", type=int, default=300, help="fine-tuning updates per checkpoint (default 300)")
    p.add_argument("--validate-every", type=int, default=100, help="validate (and keep the best) every N updates")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1, help="fine-tunes run at once (default 1)")
    p.add_argument("--refresh", action="store_true", help="only recompute the log-derived scores (valid_best, "
                                                          "valid_nlp) of rows already written, from their logs")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the fine-tuned checkpoints (default: "
                                                                   "deleted once scored; the logs stay)")
    args = p.parse_args(argv)
    name, _, folder = args.task.rpartition("=") if "=" in args.task else ("", "", args.task)
    name = name or os.path.basename(os.path.normpath(folder))
    meta = os.path.join(folder, "meta.json")
    kind = "generation"
    if os.path.isfile(meta):
        with open(meta) as f:
            kind = "classification" if json.load(f).get("task") == "classification" else "generation"

    if args.refresh:
        runs = {run_dir_of(c) for t in args.checkpoints for c in checkpoints_of(t)}
        for run in sorted(runs):
            rows = os.path.join(run, "finetune", f"{name}.jsonl")
            if os.path.isfile(rows):
                print(f"[finetune] {rows}: {refresh(rows, os.path.dirname(rows), name)} rows refreshed", flush=True)
        return 0
    todo, prepared = [], {}
    for target in args.checkpoints:
        for ckpt in checkpoints_of(target):
            info = checkpoint_info(ckpt)
            run = run_dir_of(ckpt)
            rows = os.path.join(run, "finetune", f"{name}.jsonl")
            if info["update"] in done_updates(rows):
                print(f"[finetune] {ckpt} (update {info['update']}): already in {rows}, skipped", flush=True)
                continue
            if any(t[1]["update"] == info["update"] and t[3] == rows for t in todo):
                continue  # checkpoint_last.pt holding the same update as an interval checkpoint
            if info["data"] not in prepared:  # encode the task once per pretraining vocabulary
                out = os.path.join(run, "finetune", f"data-{name}")
                cmd = [sys.executable, "-m", "fairseq_switch.lab.cli", "prepare", "downstream", "--pretrained",
                       info["data"], "--out", out, "--prefix", args.prefix, folder]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode:
                    raise SystemExit(f"error: preparing {folder} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
                prepared[info["data"]] = out
            todo.append((ckpt, info, prepared[info["data"]], rows))
    # each job's threads: OMP_NUM_THREADS if the caller set it, else the cores shared among the jobs
    # (more threads than cores makes OpenMP spin: on 2 cores, three 2-thread jobs ran at 0.2 updates/s
    # each, two 1-thread jobs at 1.3-1.9)
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    with futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        jobs = {}
        for ckpt, info, data, rows in todo:
            work = os.path.join(os.path.dirname(rows), f"{name}-u{info['update']}")
            jobs[pool.submit(finetune_one, ckpt, info, data, work, args, kind, threads)] = rows
        failed = 0
        for job in futures.as_completed(jobs):
            try:
                row = job.result()
            except RuntimeError as e:
                print(f"[finetune] error: {e}", flush=True)
                failed += 1
                continue
            with open(jobs[job], "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            print(f"[finetune] {row['checkpoint']} (update {row['update']}): test {row['metric']} {row['test']:.2f}, "
                  f"valid best {row['valid_best']}", flush=True)
    return 1 if failed else 0
