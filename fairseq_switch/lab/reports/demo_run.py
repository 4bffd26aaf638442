"""The README's main job: span-corruption pretraining of switch_tiny next to its dense twin.

1. prepare the bundled sample corpus (data/pretrain_sample + Moby-Dick) if needed
   (as scripts/prepare_pretraining_data.py -> data-bin/pretrain_sample); data/, config/, data-bin/
   and runs/ are those of the current folder (a checkout; see fairseq_switch/lab/project.py);
2. one Hydra multirun, `fairseq-hydra-train -m --config-dir config --config-name pretrain_tiny
   model.moe_expert_count=0,8`: the dense baseline and switch_tiny, same FLOPs per token, same updates;
3. the scaling report (fairseq_switch/lab/reports/scaling.py, as scripts/scaling_report.py): validation
   negative log perplexity side by side, the speed-ups, plots;
4. fairseq-generate with the Switch model on a few held-out corrupted examples.
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Optional

from fairseq_switch.logs import json_records
from ..corpora.prepare.pretraining import main as prepare_pretraining
from ..project import PLUGIN_DIR, PROJECT_DIR, fairseq_command, missing_bundled
from .scaling import make_report


def run_streaming(cmd: List[str], log_path: Path, show: Callable[[str], Optional[str]]) -> List[str]:
    """Run a CLI, keep its full output in log_path, echo the lines `show` selects."""
    lines = []
    with open(log_path, "w") as log, subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        for line in proc.stdout:
            log.write(line)
            lines.append(line)
            msg = show(line)
            if msg:
                print(msg, flush=True)
    if proc.returncode != 0:
        tail = "".join(lines[-30:])
        sys.exit(f"error: {' '.join(map(str, cmd[:3]))} failed (exit {proc.returncode}); full log: {log_path}\n{tail}")
    return lines


def pretrain(a: argparse.Namespace) -> None:
    experts = ",".join(str(e) for e in [0] + a.experts)
    cmd = [
        *fairseq_command("fairseq-hydra-train"), "-m", "--config-dir", str(a.config_dir.resolve()),
        "--config-name", "pretrain_tiny",
        f"task.data={a.data.resolve()}", f"optimization.max_update={a.updates}",
        f"dataset.validate_interval_updates={max(a.updates // 6, 1)}", f"common.log_interval={a.log_interval}",
        f"common.seed={a.seed}", f"model.moe_expert_count={experts}", f"hydra.sweep.dir={a.out.resolve()}",
    ]
    state = {"run": "?"}

    def show(line: str) -> Optional[str]:
        if "#" in line and "model.moe_expert_count=" in line:  # Hydra announces each job
            n = int(line.rsplit("model.moe_expert_count=", 1)[1].split()[0].split(",")[0])
            state["run"] = "dense" if n == 0 else f"{n} experts"
            return f"== pretraining: {state['run']} ({a.updates} updates) =="
        for rec in json_records([line], "train_inner"):
            extra = (f"  balance {rec['moe_balance']:.3f}  dropped {rec['moe_dropped']:.1%}"
                     if "moe_balance" in rec else "")
            return (f"  [{state['run']}] update {int(rec['num_updates']):>5}  neg. log ppl "
                    f"{rec['neg_log_perplexity']:.3f}  {rec['wall']:.0f}s{extra}")
        for rec in json_records([line], "valid"):
            return (f"  [{state['run']}] validation @ {int(rec['num_updates'])}: neg. log ppl "
                    f"{rec['neg_log_perplexity']:.4f}")
        return None

    print("$ fairseq-hydra-train " + " ".join(cmd[cmd.index("--config-dir") - 1:]), flush=True)  # from its -m
    run_streaming(cmd, a.out.parent / f"{a.out.name}.log", show)


def generate_examples(ckpt: Path, a: argparse.Namespace) -> None:
    cmd = [
        *fairseq_command("fairseq-generate"), str(a.data), "--user-dir", str(PLUGIN_DIR),
        "--task", "span_corruption", "--input-length", "128", "--path", str(ckpt), "--gen-subset", "test",
        "--beam", "4", "--max-len-b", "40", "--batch-size", "16", "--remove-bpe", "sentencepiece",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"(fairseq-generate failed: {out.stderr[-800:]})")
        return
    by_id = {}
    for line in out.stdout.splitlines():
        tag, _, rest = line.partition("\t")
        if tag[:2] in ("S-", "T-", "H-"):
            by_id.setdefault(tag[2:], {})[tag[0]] = rest.split("\t")[-1]
    print(f"\n== fairseq-generate with {ckpt.parent.parent.name} (test split, beam 4, no token dropped) ==")
    for k in sorted(by_id, key=int)[: a.examples]:
        ex = by_id[k]
        print(f"  input : {ex.get('S', '')[:300]}\n  target: {ex.get('T', '')}\n  output: {ex.get('H', '')}\n")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=PROJECT_DIR / "data-bin/pretrain_sample", help="prepared data folder")
    p.add_argument("--out", type=Path, default=PROJECT_DIR / "runs/demo", help="sweep folder (replaced)")
    p.add_argument("--config-dir", type=Path, default=PROJECT_DIR / "config",
                   help="folder of the Hydra configs (pretrain_tiny.yaml; default: config/ of the current folder)")
    p.add_argument("--experts", type=int, nargs="+", default=[8], help="Switch expert counts next to dense")
    p.add_argument("--updates", type=int, default=300, help="updates per model")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--examples", type=int, default=2, help="generations to print from the largest Switch model")
    a = p.parse_args(argv)
    if a.updates < 1:
        p.error(f"--updates must be >= 1, got {a.updates}")
    if any(e < 1 for e in a.experts):
        p.error(f"--experts must be >= 1 (the dense baseline always runs), got {a.experts}")

    if not (a.config_dir / "pretrain_tiny.yaml").is_file():
        p.error(missing_bundled(a.config_dir / "pretrain_tiny.yaml", "--config-dir"))
    prepare_pretraining(["--out", str(a.data)])  # the bundled sample; up to date after the first run
    shutil.rmtree(a.out, ignore_errors=True)  # a demo run always starts from scratch
    a.out.parent.mkdir(parents=True, exist_ok=True)
    pretrain(a)
    print("\n== validation quality (span corruption, held-out text) ==", flush=True)
    make_report([str(a.out), "--title", f"switch_tiny vs dense, {a.updates} updates"])
    if a.examples > 0:
        ckpts = sorted(a.out.glob(f"*_experts{max(a.experts)}/checkpoints/checkpoint_last.pt"))
        if ckpts:
            generate_examples(ckpts[0], a)
    print(f"logs, tensorboard files and checkpoints: {a.out}/<job>/; plots: {a.out}/report/")
    return 0
