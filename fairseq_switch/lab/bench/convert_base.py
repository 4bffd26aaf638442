"""switch-base-8 at its real size with random weights: conversion time and memory, and how close the converted
model scores to transformers (not a CI test: about 3 GB of memory per step and a few minutes).

Each step runs in a child process, so that its peak RSS is its own (ru_maxrss from os.wait4):
  1. build: SwitchTransformersForConditionalGeneration with google/switch-base-8's config (d_model 768, d_ff
     3072, 12+12 layers, 12 heads, 8 experts in every other FFN, vocabulary 32,128, expert_capacity 64) and
     transformers' own random init (seeded), saved by save_pretrained in 500 MB safetensors shards with a
     small T5 SentencePiece model; it scores a right-padded batch (default source lengths 17/40/64);
  2. to-fairseq: the conversion, with its default flags;
  3. score: the conversion loaded as fairseq loads it (checkpoint_utils.load_model_ensemble_and_task on
     checkpoint.pt, no overrides) scores the same batch, once with the conversion's flags (per-sequence
     capacity, transformers' expert_capacity) and once with the per-batch eval capacity factor instead
     (--moe-capacity-per-sequence off, fairseq-switch's own default).

    OMP_NUM_THREADS=1 nice -n 5 python scripts/bench_convert_base.py [--work /tmp/bench_convert_base] [--keep]
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import List, Optional

from .convert_memory import CLI, _spm, peak_rss

# google/switch-base-8's config.json, as transformers' SwitchTransformersConfig takes it
SWITCH_BASE_8 = dict(d_model=768, d_ff=3072, d_kv=64, num_layers=12, num_decoder_layers=12, num_heads=12,
                     num_experts=8, num_sparse_encoder_layers=6, num_sparse_decoder_layers=6, expert_capacity=64,
                     vocab_size=32128, router_jitter_noise=0.01, decoder_start_token_id=0,
                     architectures=["SwitchTransformersForConditionalGeneration"])


def _lengths(a: argparse.Namespace) -> List[int]:
    return [int(n) for n in a.lengths.split(",")]


def build(a: argparse.Namespace) -> None:
    """Step 1 (child): the transformers model, its folder and its logits on the batch."""
    import torch
    from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration

    from fairseq_switch.convert.compare import t5_batch

    work = Path(a.work)
    torch.manual_seed(0)
    t0 = time.time()
    model = SwitchTransformersForConditionalGeneration(SwitchTransformersConfig(**SWITCH_BASE_8)).eval()
    built = time.time() - t0
    src = work / "hf"
    model.save_pretrained(src, max_shard_size="500MB")
    _spm(src / "spiece.model")
    (src / "tokenizer_config.json").write_text(json.dumps({"extra_ids": 100}))
    batch = t5_batch(_lengths(a), a.tgt_len, model.config.vocab_size)
    with torch.no_grad():
        logits = model(input_ids=batch[0], attention_mask=batch[1], decoder_input_ids=batch[2]).logits
    torch.save({"batch": batch, "logits": logits, "parameters": model.num_parameters(), "build_s": built},
               work / "hf_logits.pt")


def score(a: argparse.Namespace) -> None:
    """Step 3 (child): the converted model on the same batch, with and without per-sequence capacity."""
    import torch
    from fairseq import checkpoint_utils

    from fairseq_switch.convert.compare import fairseq_logits
    from fairseq_switch.plugin import register

    register()  # the checkpoint's task and model
    work = Path(a.work)
    ref = torch.load(work / "hf_logits.pt", weights_only=True)
    src, mask, dec = ref["batch"]
    rows = {}
    for name, overrides in (("conversion's flags", None), ("per-batch eval factor", {"moe_capacity_per_sequence": 0})):
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(work / "fs" / "checkpoint.pt")],
                                                                    arg_overrides=overrides)
        model = models[0].eval()
        logits, dropped = fairseq_logits(model, src, mask, dec, ref["logits"].size(-1))
        rows[name] = {"max_abs_diff": float((logits - ref["logits"]).abs().max()), "dropped": dropped,
                      "routed": int(mask.sum()) * len(model.encoder.switch_ffns)
                      + dec.numel() * len(model.decoder.switch_ffns)}
        del models, model
    (work / "fs_scores.json").write_text(json.dumps(rows))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/bench_convert_base", help="scratch folder (about 5 GB)")
    ap.add_argument("--lengths", default="17,40,64", help="source lengths of the padded batch")
    ap.add_argument("--tgt-len", type=int, default=24, help="decoder input length")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--step", choices=("build", "score"), help=argparse.SUPPRESS)  # a child's step
    a = ap.parse_args(argv)
    if a.step:
        (build if a.step == "build" else score)(a)
        return 0

    work = Path(a.work)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    me = [sys.executable, "-m", "fairseq_switch.lab.bench.convert_base", "--work", work, "--lengths", a.lengths,
          "--tgt-len", a.tgt_len]
    rss_build, sec_build = peak_rss([*me, "--step", "build"])
    import torch

    info = torch.load(work / "hf_logits.pt", weights_only=True)
    shards = sorted((work / "hf").glob("model-*.safetensors"))
    size = sum(f.stat().st_size for f in shards)
    rss_conv, sec_conv = peak_rss([sys.executable, *CLI, "to-fairseq", work / "hf", work / "fs"])
    out = work / "fs" / "checkpoint.pt"
    rss_score, sec_score = peak_rss([*me, "--step", "score"])
    rows = json.loads((work / "fs_scores.json").read_text())

    print(f"switch-base-8 shapes, random weights: {info['parameters'] / 1e6:.0f}M parameters, "
          f"{size / 1e9:.2f} GB in {len(shards)} safetensors shards")
    print("\n| step | time | peak RSS |\n| --- | ---: | ---: |")
    print(f"| build (transformers init {info['build_s']:.0f} s), save, score | {sec_build:.0f} s | "
          f"{rss_build / 1e9:.2f} GB |")
    print(f"| to-fairseq (checkpoint.pt {out.stat().st_size / 1e9:.2f} GB) | {sec_conv:.0f} s | "
          f"{rss_conv / 1e9:.2f} GB |")
    print(f"| load the conversion and score, twice | {sec_score:.0f} s | {rss_score / 1e9:.2f} GB |")
    print(f"\nteacher-forced logits vs transformers', source lengths {a.lengths} right-padded (fairseq: "
          f"left-padded), decoder input {a.tgt_len}:\n\n| fairseq-switch routing | max abs logits diff | tokens "
          f"dropped (of routed) |\n| --- | ---: | ---: |")
    for name, r in rows.items():
        print(f"| {name} | {r['max_abs_diff']:.2e} | {r['dropped']} (of {r['routed']}) |")
    if not a.keep:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
