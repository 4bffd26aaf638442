"""Peak memory of checkpoint conversion vs the checkpoint's size (not a CI test: it writes gigabytes).

Builds a synthetic sharded SwitchTransformers checkpoint (random tensors written shard by shard with
safetensors, no transformers model is ever built; ~1.5 GB in 300 MB shards with the defaults, 32 experts),
then runs scripts/convert_checkpoint.py in child processes and prints each child's peak RSS (ru_maxrss from
os.wait4, the per-child figure of getrusage(RUSAGE_CHILDREN)) next to the checkpoint size and the largest
file the conversion wrote:

    to-fairseq --world-size 1   one output file holding every tensor: peak ~ the model
    to-fairseq --world-size W   shared weights + 1/W of the experts per file: peak ~ the largest file
    to-transformers (of the W-rank save)   read one fairseq file at a time

A child that only imports the converter gives the baseline (torch, fairseq, transformers' safetensors).

    python scripts/bench_convert_memory.py [--work /tmp/bench_convert] [--world-size 8] [--keep]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

# fairseq-switch-convert by its function (convert/cli.py has no __main__): works without a checkout's scripts/
CLI = ["-c", "import sys; from fairseq_switch.convert.cli import main; sys.exit(main())"]


def synthetic_switch(folder: Path, d_model: int, d_ff: int, layers: int, experts: int, vocab: int,
                     shard_bytes: int) -> int:
    """Write config.json, sharded model-*.safetensors + index and a tiny T5 spiece.model; return the bytes."""
    import torch
    from safetensors.torch import save_file

    from fairseq_switch.convert.mapping import spec_from_hf_config, tensor_pairs

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "switch_transformers", "architectures": ["SwitchTransformersForConditionalGeneration"],
              "vocab_size": vocab, "d_model": d_model, "d_kv": 64, "d_ff": d_ff, "num_heads": d_model // 64,
              "num_layers": layers, "num_decoder_layers": layers, "num_sparse_encoder_layers": layers // 2,
              "num_sparse_decoder_layers": layers // 2, "num_experts": experts, "expert_capacity": 64,
              "tie_word_embeddings": True, "dense_act_fn": "relu", "decoder_start_token_id": 0}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    spec = spec_from_hf_config(config)
    names = [("shared.weight", (vocab, d_model))] + [(p.hf, p.shape) for p in tensor_pairs(spec)]
    g = torch.Generator().manual_seed(0)
    weight_map, shard, size, total, k = {}, {}, 0, 0, 0
    files = []

    def flush():
        nonlocal shard, size, k
        if shard:
            k += 1
            fn = f"model-{k:05d}.safetensors"  # renamed below once the count is known
            save_file(shard, str(folder / fn), metadata={"format": "pt"})
            files.append((fn, list(shard)))
            shard, size = {}, 0

    for name, shape in names:
        t = torch.empty(shape).normal_(0, 0.02, generator=g)
        nbytes = t.numel() * 4
        if size and size + nbytes > shard_bytes:
            flush()
        shard[name] = t
        size += nbytes
        total += nbytes
    flush()
    for i, (fn, tensor_names) in enumerate(files, 1):
        final = f"model-{i:05d}-of-{len(files):05d}.safetensors"
        os.replace(folder / fn, folder / final)
        weight_map.update({n: final for n in tensor_names})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}))
    _spm(folder / "spiece.model")
    return total


def _spm(path: Path) -> None:
    import random

    import sentencepiece as spm

    rng = random.Random(0)
    words = "the whale ship sea captain sailed over deep water".split()
    sents = [" ".join(rng.choice(words) for _ in range(8)) for _ in range(200)]
    prefix = str(path.with_suffix(""))
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sents), model_prefix=prefix, model_type="unigram",
                                   vocab_size=40, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>",
                                   eos_piece="</s>", unk_piece="<unk>", hard_vocab_limit=False, minloglevel=2)
    os.replace(prefix + ".model", path)
    os.unlink(prefix + ".vocab")


def peak_rss(cmd: Sequence[Union[str, Path, int]]) -> Tuple[int, float]:
    """(peak RSS in bytes, seconds) of one child process."""
    t0 = time.time()
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty child cannot block on it
        p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            raise SystemExit(f"error: {' '.join(map(str, cmd))} failed:\n{err.read().decode()[-2000:]}")
    return usage.ru_maxrss * 1024, time.time() - t0  # Linux reports KiB


def largest(folder: Path, pattern: str) -> int:
    """Bytes of the largest file in `folder` matching `pattern`."""
    return max(f.stat().st_size for f in folder.glob(pattern))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/bench_convert", help="scratch folder (several GB)")
    ap.add_argument("--world-size", type=int, default=8, help="expert-parallel ranks of the sharded conversion")
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--d-ff", type=int, default=1792)
    ap.add_argument("--layers", type=int, default=6, help="per stack; every other one is a Switch layer")
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=32128)
    ap.add_argument("--shard-mb", type=int, default=300)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    a = ap.parse_args(argv)

    work = Path(a.work)
    if work.exists():
        shutil.rmtree(work)
    src = work / "hf"
    t0 = time.time()
    total = synthetic_switch(src, a.d_model, a.d_ff, a.layers, a.experts, a.vocab, a.shard_mb * 10**6)
    n_shards = len(list(src.glob("model-*.safetensors")))
    print(f"synthetic SwitchTransformers checkpoint: {total / 1e9:.2f} GB in {n_shards} shards (largest "
          f"{largest(src, 'model-*.safetensors') / 1e6:.0f} MB), {a.experts} experts, d_model {a.d_model}, d_ff "
          f"{a.d_ff}, {a.layers}+{a.layers} layers ({time.time() - t0:.0f}s to write)")

    py = sys.executable
    base, _ = peak_rss([py, "-c", "import fairseq_switch.convert.to_fairseq, fairseq_switch.convert.to_transformers, "
                                  "safetensors.torch, fairseq.options"])
    rows = [("baseline (imports only)", base, None, None)]
    W = a.world_size
    for w in (W, 1):
        out = work / f"fs_w{w}"
        rss, sec = peak_rss([py, *CLI, "to-fairseq", src, out, "--world-size", w])
        rows.append((f"to-fairseq --world-size {w}", rss, largest(out, "checkpoint*.pt"), sec))
        if w == 1:
            shutil.rmtree(out)
    back = work / "hf_back"
    rss, sec = peak_rss([py, *CLI, "to-transformers", work / f"fs_w{W}" / "checkpoint.pt", back])
    rows.append((f"to-transformers (of the {W}-rank save)", rss, largest(back, "model*.safetensors"), sec))

    print(f"\n{'conversion':40s} {'peak RSS':>10s} {'- baseline':>11s} {'largest output':>15s} {'time':>6s}")
    for name, rss, big, sec in rows:
        extra = "" if big is None else f"{(rss - base) / 1e9:10.2f}G {big / 1e9:14.2f}G {sec:5.0f}s"
        print(f"{name:40s} {rss / 1e9:9.2f}G {extra}")
    print(f"checkpoint: {total / 1e9:.2f} GB")
    if not a.keep:
        shutil.rmtree(work)
    return 0
