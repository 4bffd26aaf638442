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
from fairseq_switch.data.corpus import BadUtf8Counts, CorpusError, corpus_files, describe_bad_utf8, fail, read_documents
from fairseq_switch.data.sentinels import NUM_SENTINELS
from ..paths import DATA_DIR, MOBY_DICK_TEXT
from .documents import SPLITS, count_lines_words, spm_pieces, split_documents
from .options import add_document_options, add_run_options, add_vocabulary_options, parse_checked
from .stages import (Runner, Stage, binarize, describe_vocabulary, encode_splits, inputs_or_bundled, spm_key, split_key,
                     train_vocabulary, with_bad_utf8_counts)
from .steps import sha256_files

DEFAULT_INPUTS = [DATA_DIR / "pretrain_sample", MOBY_DICK_TEXT]
FORMAT_VERSION = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="*", type=Path,
                    help="text files or folders (default: the bundled sample corpus)")
    ap.add_argument("--out", type=Path, required=True, help="output folder, e.g. data-bin/pretrain_sample")
    add_document_options(ap)
    add_vocabulary_options(ap, "T5: 32000")
    ap.add_argument("--spm-sentences", type=int, default=2_000_000,
                    help="at most this many text pieces (sampled) train SentencePiece")
    ap.add_argument("--valid-words", type=int, default=50_000, help="words held out for validation")
    ap.add_argument("--test-words", type=int, default=50_000, help="words held out for test")
    add_run_options(ap, "seed of the document shuffle and SentencePiece", "threads/workers for encoding and binarizing")
    return parse_checked(ap, argv, "words")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    from tqdm import tqdm

    out: Path = args.out
    raw = out / "raw"
    run = Runner(out, args.force)
    try:
        files = corpus_files(inputs_or_bundled(args.inputs, DEFAULT_INPUTS))
    except CorpusError as e:
        fail(str(e))
    raw.mkdir(parents=True, exist_ok=True)
    print(f"[prepare] {len(files)} input file(s): " + ", ".join(str(f) for f in files[:5])
          + (" ..." if len(files) > 5 else ""))
    text_files = {s: raw / f"{s}.txt" for s in SPLITS}
    piece_files = {s: raw / f"{s}.pieces" for s in SPLITS}
    bin_files = [out / "dict.txt"] + [out / f"{s}.{ext}" for s in SPLITS for ext in ("bin", "idx")]

    def read_splits() -> tuple:
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
        return len(docs), splits, utf8_counts

    def write_splits(read: tuple) -> dict:
        n_docs, splits, utf8_counts = read
        for s in SPLITS:
            text_files[s].write_text("".join(d + "\n" for d in splits[s]), encoding="utf-8")
        return with_bad_utf8_counts({"documents": n_docs}, utf8_counts)

    def train() -> dict:
        t = time.time()
        train_docs = text_files["train"].read_text(encoding="utf-8").splitlines()
        pieces = spm_pieces(train_docs, args.spm_sentences, args.seed)
        print(f"[prepare] 2/4 {describe_vocabulary(args, len(pieces))} ...", flush=True)
        train_vocabulary(pieces, out, args.vocab_size, args.seed, args.workers, args.byte_fallback)
        print(f"[prepare]   done in {time.time() - t:.1f}s")
        return {"seconds": round(time.time() - t, 1)}

    def encode() -> dict:
        counts = collections.Counter()
        tokens, unk = encode_splits(sp, text_files, piece_files, args.workers, counts)
        vocab.write_fairseq_dict(sp, counts, raw / "dict.txt")
        return {"tokens": tokens, "unk": unk, "unk_percent": {s: vocab.unk_percent(unk[s], tokens[s]) for s in SPLITS}}

    def binarize_splits() -> dict:
        (out / "dict.txt").unlink(missing_ok=True)
        t = time.time()
        log = binarize(["--only-source", "--srcdict", str(raw / "dict.txt"),
                        "--trainpref", str(piece_files["train"]), "--validpref", str(piece_files["valid"]),
                        "--testpref", str(piece_files["test"]), "--destdir", str(out), "--workers", str(args.workers)],
                       bin_files)  # fairseq names the outputs after the input prefix's file name
        print(f"[prepare]   done in {time.time() - t:.1f}s")
        return {"unk": vocab.unk_rates(log)}

    # 1. documents and splits
    split = split_key(FORMAT_VERSION, sha256_files(files), args, "words")
    split_stats = run.run(Stage("split", split, list(text_files.values()), write_splits, read_splits, "documents"))
    if "bad_utf8" in split_stats:
        print(f"[prepare]   {describe_bad_utf8(split_stats['bad_utf8'])}")
    for s in SPLITS:
        d, w = count_lines_words(text_files[s])
        print(f"[prepare]   {s:5s}: {d:7d} documents, {w:10,d} words")
    # 2. SentencePiece with reserved sentinels
    spm = spm_key(split, args)
    run.run(Stage("spm", spm, [out / "spm.model", out / "spm.vocab"], train, title="SentencePiece"))
    sp = vocab.load_spm(out / "spm.model")
    # 3. encode
    encoded = run.run(Stage("encode", {"spm": spm}, list(piece_files.values()) + [raw / "dict.txt"], encode,
                            title="encoding", needs=["unk"]))
    tokens, unk = encoded["tokens"], encoded["unk"]
    for s in SPLITS:
        print(f"[prepare]   {s:5s}: {vocab.describe_unk(tokens[s], unk[s])}")
    # 4. binarize
    run.run(Stage("binarize", {"encode": {"spm": spm}}, bin_files, binarize_splits, title="binarize"))
    print(f"[prepare] {out}: dictionary {sp.get_piece_size()} symbols ({NUM_SENTINELS} sentinels"
          f"{', 256 byte pieces' if vocab.has_byte_fallback(sp) else ', no byte fallback'}); "
          f"{sum(tokens.values()):,d} tokens; {time.time() - t0:.1f}s")
    return 0
