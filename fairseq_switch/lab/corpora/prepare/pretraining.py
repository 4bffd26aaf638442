"""Prepare a raw text corpus for span-corruption pretraining (task `span_corruption`).

Input: text files or folders of them (see fairseq_switch/data/corpus.py): one document per line,
documents separated by blank lines, or jsonl with a "text" field (C4/Wikipedia dumps; .gz is fine).
Without inputs, the bundled sample is used: data/pretrain_sample/*.txt + data/moby_dick/moby_dick.txt.

Steps (each is skipped when its outputs exist and were made from the same inputs and options):
  1. read the documents, shuffle them with --seed and hold out whole documents for valid and
     test (--valid-words / --test-words words each); write <out>/raw/{train,valid,test}.txt;
  2. train a SentencePiece unigram model on the training documents (<out>/spm.model) whose
     vocabulary reserves 100 sentinels <extra_id_0>..<extra_id_99> (ids 4..103) and, with byte
     fallback (the default; --no-byte-fallback turns it off), the 256 byte pieces <0x00>..<0xFF>
     (ids 104..359), so that a character the vocabulary lacks (a £, an emoji) is written as its
     UTF-8 bytes instead of <unk>; its ids equal the fairseq dictionary's;
  3. encode every split to pieces (<out>/raw/{split}.pieces, one document per line) and count the
     <unk> pieces of each;
  4. binarize with fairseq-preprocess --only-source into <out>/{train,valid,test}.{bin,idx} and
     <out>/dict.txt.
<out>/prepare.json records each step's options, the document/token counts and each split's <unk> rate.

Usage:
    python scripts/prepare_pretraining_data.py --out data-bin/pretrain_sample
    python scripts/prepare_pretraining_data.py --out data-bin/c4 --vocab-size 32000 c4/*.json.gz
Then: fairseq-train data-bin/pretrain_sample --user-dir fairseq_switch --task span_corruption ...
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

from fairseq_switch.data import vocab
from fairseq_switch.data.corpus import (BadUtf8Counts, CorpusError, check_output_folder, corpus_files,
                                        describe_bad_utf8, fail, read_documents)
from fairseq_switch.data.sentinels import NUM_SENTINELS, sentinel_symbols
from fairseq_switch.data.vocab import VocabSizeError, describe_unk, encode_file, has_byte_fallback, min_vocab_size, \
    train_spm, unk_percent, unk_rates, write_fairseq_dict
from ..paths import DATA_DIR, MOBY_DICK_TEXT
from .documents import SPLITS, count_lines_words, spm_pieces, split_documents
from .options import BAD_UTF8_HELP, add_document_options, add_vocabulary_options, parse_checked
from .steps import Steps, sha256_files

DEFAULT_INPUTS = [DATA_DIR / "pretrain_sample", MOBY_DICK_TEXT]
FORMAT_VERSION = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="*", type=Path,
                    help="text files or folders (default: the bundled sample corpus)")
    ap.add_argument("--out", type=Path, required=True, help="output folder, e.g. data-bin/pretrain_sample")
    add_document_options(ap)
    ap.add_argument("--bad-utf8", default="error", choices=["error", "replace", "skip"], help=BAD_UTF8_HELP)
    add_vocabulary_options(ap, "T5: 32000")
    ap.add_argument("--spm-sentences", type=int, default=2_000_000,
                    help="at most this many text pieces (sampled) train SentencePiece")
    ap.add_argument("--valid-words", type=int, default=50_000, help="words held out for validation")
    ap.add_argument("--test-words", type=int, default=50_000, help="words held out for test")
    ap.add_argument("--seed", type=int, default=1, help="seed of the document shuffle and SentencePiece")
    ap.add_argument("--workers", type=int, default=2, help="threads/workers for encoding and binarizing")
    ap.add_argument("--force", action="store_true", help="redo every step")
    return parse_checked(ap, argv, "words")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    from tqdm import tqdm

    out: Path = args.out
    raw = out / "raw"
    try:
        check_output_folder(out)
        files = corpus_files(args.inputs or DEFAULT_INPUTS)
    except CorpusError as e:
        fail(str(e))
    raw.mkdir(parents=True, exist_ok=True)
    steps = Steps(out, args.force)
    print(f"[prepare] {len(files)} input file(s): " + ", ".join(str(f) for f in files[:5])
          + (" ..." if len(files) > 5 else ""))

    # 1. documents and splits
    split_key = {"version": FORMAT_VERSION, "inputs": sha256_files(files), "doc_format": args.doc_format,
                 "json_field": args.json_field, "valid_words": args.valid_words,
                 "test_words": args.test_words, "seed": args.seed}
    if args.bad_utf8 != "error":  # absent by default, so that folders prepared before the option stay up to date
        split_key["bad_utf8"] = args.bad_utf8
    text_files = {s: raw / f"{s}.txt" for s in SPLITS}
    if steps.done("split", split_key, list(text_files.values())):
        print("[prepare] 1/4 documents: up to date")
    else:
        docs, utf8_counts = [], BadUtf8Counts(args.bad_utf8)
        try:
            for f in tqdm(files, desc="read", unit="file", disable=len(files) < 2):
                docs.extend(read_documents(f, args.doc_format, args.json_field, args.bad_utf8, utf8_counts))
        except CorpusError as e:
            fail(str(e))
        if not docs:
            raise SystemExit(f"error: no text found in {', '.join(map(str, files))} (every document is "
                             f"empty); check the files or --doc-format/--json-field")
        splits = split_documents(docs, args.valid_words, args.test_words, args.seed)
        if not splits["train"]:
            raise SystemExit(
                f"error: the corpus ({len(docs)} documents) is too small to hold out --valid-words "
                f"{args.valid_words} and --test-words {args.test_words} and keep training documents; lower them."
            )
        steps.invalidate_from("split")  # only now: bad input leaves the previous run's record as it was
        for s in SPLITS:
            text_files[s].write_text("".join(d + "\n" for d in splits[s]), encoding="utf-8")
        stats = {"documents": len(docs)}
        if args.bad_utf8 != "error":
            stats["bad_utf8"] = utf8_counts.as_dict()
        steps.finish("split", split_key, stats)
    if "bad_utf8" in steps.state["split"]["stats"]:
        print(f"[prepare]   {describe_bad_utf8(steps.state['split']['stats']['bad_utf8'])}")
    for s in SPLITS:
        d, w = count_lines_words(text_files[s])
        print(f"[prepare]   {s:5s}: {d:7d} documents, {w:10,d} words")

    # 2. SentencePiece with reserved sentinels
    spm_key = {"split": split_key, "vocab_size": args.vocab_size, "spm_sentences": args.spm_sentences,
               "sentinels": NUM_SENTINELS}
    if args.byte_fallback:  # absent without: a folder prepared before byte fallback was the default matches that
        spm_key["byte_fallback"] = True
    spm_files = [out / "spm.model", out / "spm.vocab"]
    if steps.done("spm", spm_key, spm_files):
        print("[prepare] 2/4 SentencePiece: up to date")
    else:
        steps.invalidate_from("spm")
        t = time.time()
        train_docs = text_files["train"].read_text(encoding="utf-8").splitlines()
        pieces = spm_pieces(train_docs, args.spm_sentences, args.seed)
        print(f"[prepare] 2/4 SentencePiece unigram, vocab {args.vocab_size}"
              f"{' (byte fallback)' if args.byte_fallback else ''}, on {len(pieces):,d} text pieces ...", flush=True)
        try:
            train_spm(pieces, out / "spm", args.vocab_size, args.seed, user_defined_symbols=sentinel_symbols(),
                      num_threads=args.workers, min_vocab_size=min_vocab_size(NUM_SENTINELS, args.byte_fallback),
                      byte_fallback=args.byte_fallback)
        except VocabSizeError as e:
            fail(str(e))
        steps.finish("spm", spm_key, {"seconds": round(time.time() - t, 1)})
        print(f"[prepare]   done in {time.time() - t:.1f}s")
    sp = vocab.load_spm(out / "spm.model")

    # 3. encode
    encode_key = {"spm": spm_key}
    piece_files = {s: raw / f"{s}.pieces" for s in SPLITS}
    if steps.done("encode", encode_key, list(piece_files.values()) + [raw / "dict.txt"], stats=["unk"]):
        print("[prepare] 3/4 encoding: up to date")
    else:
        steps.invalidate_from("encode")
        tokens, unk, counts = {}, {}, collections.Counter()
        for s in SPLITS:
            tokens[s], unk[s] = encode_file(sp, text_files[s], piece_files[s], args.workers,
                                            counts if s == "train" else None, desc=f"encode {s}")
        write_fairseq_dict(sp, counts, raw / "dict.txt")
        steps.finish("encode", encode_key, {"tokens": tokens, "unk": unk,
                                            "unk_percent": {s: unk_percent(unk[s], tokens[s]) for s in SPLITS}})
    tokens, unk = steps.state["encode"]["stats"]["tokens"], steps.state["encode"]["stats"]["unk"]
    for s in SPLITS:
        print(f"[prepare]   {s:5s}: {describe_unk(tokens[s], unk[s])}")

    # 4. binarize
    bin_key = {"encode": encode_key}
    bin_files = [out / "dict.txt"] + [out / f"{s}.{ext}" for s in SPLITS for ext in ("bin", "idx")]
    if steps.done("binarize", bin_key, bin_files):
        print("[prepare] 4/4 binarize: up to date")
    else:
        steps.invalidate_from("binarize")
        (out / "dict.txt").unlink(missing_ok=True)
        t = time.time()
        log = vocab.run_fairseq_preprocess([  # by the module: tests put fairseq-preprocess in process
            "--only-source", "--srcdict", str(raw / "dict.txt"),
            "--trainpref", str(piece_files["train"]), "--validpref", str(piece_files["valid"]),
            "--testpref", str(piece_files["test"]), "--destdir", str(out), "--workers", str(args.workers),
        ])
        # fairseq names the outputs after the input prefix's file name
        for s in SPLITS:
            for ext in ("bin", "idx"):
                produced = out / f"{s}.{ext}"
                if not produced.is_file():
                    raise SystemExit(f"error: fairseq-preprocess did not write {produced}")
        steps.finish("binarize", bin_key, {"unk": unk_rates(log)})
        print(f"[prepare]   done in {time.time() - t:.1f}s")
    print(f"[prepare] {out}: dictionary {sp.get_piece_size()} symbols ({NUM_SENTINELS} sentinels"
          f"{', 256 byte pieces' if has_byte_fallback(sp) else ', no byte fallback'}); "
          f"{sum(tokens.values()):,d} tokens; {time.time() - t0:.1f}s")
    return 0

