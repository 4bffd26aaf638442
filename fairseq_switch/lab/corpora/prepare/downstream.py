"""Prepare (input, target) pairs for fine-tuning with task `text_to_text`.

The pairs are encoded with the SentencePiece model of the *pretraining* data and binarized with
its dictionary, so they match the pretrained checkpoint's vocabulary. Input: a folder holding
{train,valid,test}.{jsonl,tsv} (test is optional), or --train/--valid/--test files; jsonl fields
and tsv columns are named with --input-field/--target-field.

Every example is accounted for: empty inputs or targets are skipped, over-long ones are
truncated (or skipped with --overlong drop), and the counts are printed and kept in
<out>/prepare.json, with, per split, the input and target lengths in tokens before the limit
(p50/p90/p99/max, incl. </s>), the share over the limit and the share of <unk> tokens. A warning
line says when more than 10% of a split's inputs (or targets) are cut, and when more than 0.1% of
its tokens are <unk> (a pretraining vocabulary without byte fallback). Re-running with the same
inputs and options does nothing (and prints the same report).

    python scripts/prepare_downstream_data.py --pretrained data-bin/pretrain_sample \\
        --out data-bin/ft_summ --prefix "summarize: " data/downstream/<dataset>
    fairseq-train data-bin/ft_summ --user-dir fairseq_switch --task text_to_text \\
        --finetune-from-model checkpoints/pretrain/checkpoint_last.pt --arch switch_tiny ...

Outputs: <out>/dict.{input,target}.txt, <out>/{split}.input-target.{input,target}.{bin,idx},
<out>/spm.model (for scripts/score_generations.py --spm-model), <out>/raw/ (the pieces).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fairseq_switch.data import vocab
from fairseq_switch.data.corpus import BadUtf8Counts, CorpusError, describe_bad_utf8, fail
from fairseq_switch.data.pair_encoding import encode_pairs, length_table, truncation_warnings, unk_percents, unk_warning
from fairseq_switch.data.pairs import read_pairs
from .documents import SPLITS
from .stages import Runner, Stage, binarize, with_bad_utf8, with_bad_utf8_counts
from .steps import OneRecord

if TYPE_CHECKING:  # imported where it runs: sentencepiece is not needed to import this module
    import sentencepiece as spm

SRC, TGT = "input", "target"
FORMAT_VERSION = 2  # 2: lengths and <unk> rates recorded


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("folder", nargs="?", type=Path, help="folder with {train,valid,test}.{jsonl,tsv}")
    for s in SPLITS:
        p.add_argument(f"--{s}", type=Path, help=f"{s} pairs file (instead of the folder's)")
    p.add_argument("--pretrained", type=Path, required=True,
                   help="the pretraining data folder (its spm.model and dict.txt), as written by "
                   "prepare_pretraining_data.py")
    p.add_argument("--out", type=Path, required=True, help="output folder (task text_to_text's data)")
    p.add_argument("--input-field", default="input", help="jsonl field / tsv column of the input (default: input)")
    p.add_argument("--target-field", default="target", help="jsonl field / tsv column of the target (default: target)")
    p.add_argument("--format", default="auto", choices=["auto", "jsonl", "tsv"], help="default: from the file name")
    p.add_argument("--prefix", default="", help='task prefix put before every input, e.g. "summarize: " (T5 style)')
    p.add_argument("--max-input-tokens", type=int, default=512,
                   help="input pieces incl. </s> (T5: 512); longer inputs are cut (the report gives how many, and "
                        "the length percentiles)")
    p.add_argument("--max-target-tokens", type=int, default=128, help="target pieces incl. </s>")
    p.add_argument("--overlong", default="truncate", choices=["truncate", "drop"],
                   help="what to do with longer examples: cut them (T5) or leave them out; counted either way")
    p.add_argument("--bad-utf8", default="error", choices=["error", "replace", "skip"],
                   help="bytes that are not UTF-8: error (stop, naming the file and the byte offset), replace "
                        "(each by U+FFFD) or skip (drop their pairs); counted in <out>/prepare.json")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--force", action="store_true", help="redo everything")
    return p.parse_args(argv)


def find_inputs(args: argparse.Namespace) -> dict[str, Path]:
    """split -> its pairs file (--train/--valid/--test, else the folder's); exits when train or valid is missing."""
    files = {}
    for s in SPLITS:
        f = getattr(args, s)
        if f is None and args.folder is not None:
            found = [args.folder / f"{s}.{ext}" for ext in ("jsonl", "jsonl.gz", "tsv", "tsv.gz")
                     if (args.folder / f"{s}.{ext}").is_file()]
            f = found[0] if found else None
        if f is not None:
            if not f.is_file():
                raise SystemExit(f"error: {f} does not exist")
            files[s] = f
    for s in ("train", "valid"):
        if s not in files:
            where = f"{args.folder}/{s}.jsonl or .tsv" if args.folder else f"--{s}"
            raise SystemExit(f"error: no {s} pairs: give {where}")
    return files


def fingerprint(files: dict[str, Path], args: argparse.Namespace) -> dict:
    """What the outputs depend on: the inputs, the pretraining vocabulary and the options."""
    h = hashlib.sha256()
    for s in sorted(files):
        h.update(s.encode())
        h.update(files[s].read_bytes())
    for name in ("spm.model", "dict.txt"):
        h.update((args.pretrained / name).read_bytes())
    return with_bad_utf8({"version": FORMAT_VERSION, "inputs": h.hexdigest(), "input_field": args.input_field,
                          "target_field": args.target_field, "format": args.format, "prefix": args.prefix,
                          "max_input_tokens": args.max_input_tokens, "max_target_tokens": args.max_target_tokens,
                          "overlong": args.overlong}, args.bad_utf8)


def encode_split(sp: "spm.SentencePieceProcessor", path: Path, args: argparse.Namespace, out_src: Path, out_tgt: Path,
                 utf8_counts: BadUtf8Counts | None = None, unknown: collections.Counter | None = None) -> tuple:
    """(counts, lengths) of one split (see fairseq_switch/data/pair_encoding.py); bytes that are not UTF-8
    are counted in `utf8_counts`, the pieces the vocabulary lacks in `unknown`."""
    pairs = read_pairs(path, args.input_field, args.target_field, args.format, args.bad_utf8, utf8_counts)
    return encode_pairs(sp, pairs, out_src, out_tgt, args.prefix, args.max_input_tokens, args.max_target_tokens,
                        args.overlong, unknown)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    out, raw = args.out, args.out / "raw"
    run = Runner(out, args.force, OneRecord(out / "prepare.json", args.force))
    for name in ("spm.model", "dict.txt"):
        if not (args.pretrained / name).is_file():
            raise SystemExit(f"error: {args.pretrained / name} not found: --pretrained must be the pretraining data "
                             f"folder written by scripts/prepare_pretraining_data.py (it holds spm.model and dict.txt)")
    for flag in ("max_input_tokens", "max_target_tokens"):
        if getattr(args, flag) < 2:
            raise SystemExit(f"error: --{flag.replace('_', '-')} must be >= 2 (one piece and </s>)")
    files = find_inputs(args)
    outputs = [out / f"dict.{lang}.txt" for lang in (SRC, TGT)] + [
        out / f"{s}.{SRC}-{TGT}.{lang}.{ext}" for s in files for lang in (SRC, TGT) for ext in ("bin", "idx")]

    def build() -> dict:
        import sentencepiece as spm

        raw.mkdir(parents=True, exist_ok=True)
        sp = spm.SentencePieceProcessor(model_file=str(args.pretrained / "spm.model"))
        counts, lengths, utf8_counts, unknown = {}, {}, BadUtf8Counts(args.bad_utf8), collections.Counter()
        try:
            for s, f in files.items():
                print(f"[prepare] encode {s}: {f}", flush=True)
                counts[s], lengths[s] = encode_split(sp, f, args, raw / f"{s}.{SRC}", raw / f"{s}.{TGT}",
                                                     utf8_counts, unknown)
                if counts[s]["kept"] == 0:
                    raise SystemExit(f"error: {f}: no usable pair ({counts[s]['read']} read, {counts[s]['empty']} "
                                     f"empty, {counts[s]['dropped_overlong']} over-long)")
        except CorpusError as e:
            fail(str(e))
        for p in outputs:
            p.unlink(missing_ok=True)
        binarize(["--source-lang", SRC, "--target-lang", TGT, "--srcdict", str(args.pretrained / "dict.txt"),
                  "--tgtdict", str(args.pretrained / "dict.txt"),
                  *[a for s in files for a in (f"--{s}pref", str(raw / s))],
                  "--destdir", str(out), "--workers", str(args.workers)], outputs)
        shutil.copy(args.pretrained / "spm.model", out / "spm.model")
        record = {"counts": counts, "lengths": lengths, "unk_percent": {s: unk_percents(c) for s, c in counts.items()},
                  "pretrained": str(args.pretrained.resolve()), "byte_fallback": vocab.has_byte_fallback(sp),
                  "unknown_characters": dict(unknown.most_common(20))}
        return with_bad_utf8_counts(record, utf8_counts)

    record = run.run(Stage("all", fingerprint(files, args), outputs, build, current=f"[prepare] {out}: up to date"))
    _report(record, args)
    if "all" not in run.skipped:
        print(f"[prepare] {out}: done in {time.time() - t0:.1f}s")
    return 0


def _report(record: dict, args: argparse.Namespace) -> None:
    """The counts, lengths, <unk> rates and warnings of a run (also when it is up to date)."""
    if record.get("bad_utf8"):
        print(f"[prepare]   {describe_bad_utf8(record['bad_utf8'])}")
    for s, c in record["counts"].items():
        notes = [f"{c[k]} {k.replace('_', ' ')}" for k in ("empty", "input_truncated", "target_truncated",
                                                           "dropped_overlong") if c[k]]
        print(f"[prepare]   {s:5s}: {c['read']:6d} read, {c['kept']:6d} kept"
              + (f" ({', '.join(notes)})" if notes else "")
              + f"; {c['input_tokens']:,d} input / {c['target_tokens']:,d} target tokens")
    limits = {SRC: args.max_input_tokens, TGT: args.max_target_tokens}
    for line in length_table(record["lengths"], record["unk_percent"], limits):
        print(f"[prepare]   {line}")
    warnings = truncation_warnings(record["lengths"], limits, args.overlong)
    warnings.append(unk_warning(record["unk_percent"], record["unknown_characters"], record["byte_fallback"],
                                args.pretrained / "spm.model"))
    for line in filter(None, warnings):
        print(f"[prepare] {line}")
