#!/usr/bin/env python
"""The README's main job: train switch_tiny and its dense twin t5_tiny on the bundled corpus,
then print their validation quality side by side and a few generations from the Switch model.

Everything goes through the real CLIs (fairseq-train, fairseq-generate) with `--user-dir fairseq_switch`.
Until the span-corruption task lands, the bundled data is a next-sentence text-to-text set
built from Moby-Dick by scripts/prepare_demo_data.py.
"""

import argparse
import math
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=FutureWarning, module="fairscale")  # torch.cuda.amp deprecations
from fairseq_switch.logs import json_records  # noqa: E402

BIN = Path(sys.executable).parent


def run_streaming(cmd, log_path: Path, show) -> list:
    """Run a CLI, keep its full output in log_path, echo the lines `show` selects."""
    lines = []
    with open(log_path, "w") as log, subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
    ) as proc:
        for line in proc.stdout:
            log.write(line)
            lines.append(line)
            msg = show(line)
            if msg:
                print(msg, flush=True)
    if proc.returncode != 0:
        tail = "".join(lines[-30:])
        sys.exit(f"error: {cmd[0]} failed (exit {proc.returncode}); full log: {log_path}\n{tail}")
    return lines


def train(arch: str, a) -> dict:
    save = a.save_root / arch
    shutil.rmtree(save, ignore_errors=True)  # a demo run always starts from scratch
    save.mkdir(parents=True)
    cmd = [
        str(BIN / "fairseq-train"), str(a.data), "--user-dir", str(ROOT / "fairseq_switch"),
        "--task", "translation", "-s", "src", "-t", "tgt", "--arch", arch,
        "--criterion", "switch_cross_entropy", "--label-smoothing", "0.1",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", str(a.lr),
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(a.warmup), "--clip-norm", "1.0",
        "--max-tokens", str(a.max_tokens), "--max-update", str(a.updates), "--seed", str(a.seed),
        "--log-format", "json", "--log-interval", str(a.log_interval), "--num-workers", "0",
        "--save-dir", str(save), "--no-epoch-checkpoints", "--validate-interval-updates", str(a.updates),
        "--tensorboard-logdir", str(save / "tb"),
    ]

    def show(line):
        for rec in json_records([line], "train_inner"):
            extra = f" balance {rec['moe_balance']:.3f} dropped {rec['moe_dropped']:.1%}" if "moe_balance" in rec else ""
            return f"  [{arch}] update {int(rec['num_updates']):>5}  loss {rec['loss']:.3f}  nll {rec['nll_loss']:.3f}{extra}"
        if "num. shared model params" in line or "num. expert model params" in line:
            return f"  [{arch}] {line.split('|')[-1].strip()}"
        return None

    print(f"== training {arch} for {a.updates} updates ==", flush=True)
    t0 = time.time()
    lines = run_streaming(cmd, save / "train.log", show)
    wall = time.time() - t0
    valid = json_records(lines, "valid")
    if not valid:
        sys.exit(f"error: no validation record in {save / 'train.log'}")
    params = {}
    for line in lines:
        m = re.search(r"num\. (shared|expert) model params: ([\d,]+)", line)
        if m:
            params[m.group(1)] = int(m.group(2).replace(",", ""))
    nll_nats = valid[-1]["nll_loss"] * math.log(2)  # fairseq logs base 2
    return {"arch": arch, "wall": wall, "valid_nll": nll_nats, "ppl": valid[-1]["ppl"], "params": params,
            "moe_dropped": valid[-1].get("moe_dropped"), "ckpt": save / "checkpoint_last.pt"}


def generate_examples(res: dict, a, n: int) -> None:
    cmd = [
        str(BIN / "fairseq-generate"), str(a.data), "--user-dir", str(ROOT / "fairseq_switch"),
        "--task", "translation", "-s", "src", "-t", "tgt", "--path", str(res["ckpt"]), "--gen-subset", "test",
        "--beam", "4", "--max-len-b", "40", "--batch-size", "32", "--remove-bpe", "sentencepiece",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        print(f"(fairseq-generate failed: {out.stderr[-500:]})")
        return
    by_id = {}
    for line in out.stdout.splitlines():
        tag, _, rest = line.partition("\t")
        if tag[:2] in ("S-", "T-", "H-"):
            by_id.setdefault(tag[2:], {})[tag[0]] = rest.split("\t")[-1]
    print(f"\n== fairseq-generate with {res['arch']} (test split, beam 4; no token dropped at inference) ==")
    for k in sorted(by_id, key=int)[:n]:
        ex = by_id[k]
        print(f"  input : {ex.get('S', '')}\n  target: {ex.get('T', '')}\n  output: {ex.get('H', '')}\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "data-bin/demo")
    p.add_argument("--save-root", type=Path, default=ROOT / "checkpoints/demo")
    p.add_argument("--arches", nargs="+", default=["switch_tiny", "t5_tiny"])
    p.add_argument("--updates", type=int, default=300)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--examples", type=int, default=3, help="generations to print from the first arch")
    a = p.parse_args()
    if a.updates < 1:
        p.error(f"--updates must be >= 1, got {a.updates}")

    subprocess.run([sys.executable, str(ROOT / "scripts/prepare_demo_data.py"), "--out", str(a.data)], check=True)
    results = [train(arch, a) for arch in a.arches]

    print(f"\n== validation after {a.updates} updates (next-sentence prediction on Moby-Dick) ==")
    print("| arch | params (total) | expert params | valid nll (nats) | neg. log perplexity | ppl | dropped | train time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        total = r["params"].get("shared", 0) + r["params"].get("expert", 0)
        dropped = "-" if r["moe_dropped"] is None else f"{r['moe_dropped']:.1%}"
        print(f"| {r['arch']} | {total:,} | {r['params'].get('expert', 0):,} | {r['valid_nll']:.4f} | "
              f"{-r['valid_nll']:.4f} | {r['ppl']:.2f} | {dropped} | {r['wall']:.0f}s |")
    if len(results) > 1:
        base = results[-1]
        for r in results[:-1]:
            print(f"{r['arch']} vs {base['arch']}: neg. log perplexity {-r['valid_nll']:+.4f} vs {-base['valid_nll']:+.4f} "
                  f"({base['valid_nll'] - r['valid_nll']:+.4f} nats/token)")
    if a.examples > 0:
        generate_examples(results[0], a, a.examples)
    print(f"checkpoints, logs and tensorboard files: {a.save_root}")


if __name__ == "__main__":
    main()
