#!/usr/bin/env python3
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
import hashlib
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _plugin_module import load_plugin_module  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INPUTS = [REPO_ROOT / "data" / "pretrain_sample", REPO_ROOT / "data" / "moby_dick" / "moby_dick.txt"]
SPLITS = ("train", "valid", "test")
STAMP = "prepare.json"
FORMAT_VERSION = 1
SPM_CHUNK_CHARS = 2000  # SentencePiece trains on pieces of documents of at most this many characters
NO_BYTE_FALLBACK_HELP = ("train SentencePiece without byte fallback: characters the vocabulary lacks become <unk> "
                         "instead of their UTF-8 bytes (frees 256 vocabulary slots)")
BAD_UTF8_HELP = ("bytes that are not UTF-8: error (stop, naming the file and the byte offset), replace "
                 "(each by U+FFFD) or skip (drop their lines); the counts go to <out>/prepare.json")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="*", type=Path,
                    help="text files or folders (default: the bundled sample corpus)")
    ap.add_argument("--out", type=Path, required=True, help="output folder, e.g. data-bin/pretrain_sample")
    ap.add_argument("--doc-format", default="auto", choices=["auto", "lines", "paragraphs", "jsonl"],
                    help="how documents are delimited (auto: by file name and blank lines)")
    ap.add_argument("--json-field", default="text", help="jsonl field holding the document")
    ap.add_argument("--bad-utf8", default="error", choices=["error", "replace", "skip"], help=BAD_UTF8_HELP)
    ap.add_argument("--vocab-size", type=int, default=8000,
                    help="SentencePiece vocabulary incl. 4 specials, 100 sentinels and 256 byte pieces (T5: 32000)")
    ap.add_argument("--no-byte-fallback", dest="byte_fallback", action="store_false", help=NO_BYTE_FALLBACK_HELP)
    ap.add_argument("--spm-sentences", type=int, default=2_000_000,
                    help="at most this many text pieces (sampled) train SentencePiece")
    ap.add_argument("--valid-words", type=int, default=50_000, help="words held out for validation")
    ap.add_argument("--test-words", type=int, default=50_000, help="words held out for test")
    ap.add_argument("--seed", type=int, default=1, help="seed of the document shuffle and SentencePiece")
    ap.add_argument("--workers", type=int, default=2, help="threads/workers for encoding and binarizing")
    ap.add_argument("--force", action="store_true", help="redo every step")
    args = ap.parse_args(argv)
    check_vocab_size(ap, args)
    if args.valid_words < 1 or args.test_words < 1:
        ap.error("--valid-words and --test-words must be >= 1")
    return args


def check_vocab_size(ap: argparse.ArgumentParser, args) -> None:
    """--vocab-size below what the specials, sentinels, byte pieces and some text pieces need: a usage error."""
    vocab, sentinels = load_plugin_module("data/vocab"), load_plugin_module("data/sentinels")
    problem = vocab.vocab_size_problem(args.vocab_size, sentinels.NUM_SENTINELS, args.byte_fallback)
    if problem:
        ap.error(problem)


def sha256_files(files) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def word_count(doc: str) -> int:
    return len(doc.split())


def split_documents(docs: list[str], valid_words: int, test_words: int, seed: int,
                    size=word_count) -> dict[str, list[str]]:
    """Shuffle documents, then take whole documents for valid, then test, until each has its words.

    `size(doc)` measures a document (words; prepare_multilingual_data.py counts characters). The
    train split is empty when the documents do not outlast the hold-out: the caller says what to do.
    """
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    splits = {"valid": [], "test": [], "train": []}
    targets = {"valid": valid_words, "test": test_words}
    counts = {"valid": 0, "test": 0}
    current = "valid"
    for i in order:
        if current in targets and counts[current] >= targets[current]:
            current = "test" if current == "valid" else "train"
        if current in targets and counts[current] >= targets[current]:
            current = "train"
        splits[current].append(docs[i])
        if current in counts:
            counts[current] += size(docs[i])
    return splits


def text_pieces(docs) -> list[str]:
    """Documents cut at word boundaries (or anywhere, without spaces) into pieces of <= SPM_CHUNK_CHARS."""
    pieces = []
    for doc in docs:
        start = 0
        while start < len(doc):
            end = min(start + SPM_CHUNK_CHARS, len(doc))
            if end < len(doc):
                space = doc.rfind(" ", start, end)
                end = space if space > start else end
            pieces.append(doc[start:end].strip())
            start = end
    return [p for p in pieces if p]


def spm_pieces(docs: list[str], limit: int, seed: int) -> list[str]:
    """Documents cut at word boundaries into pieces of <= SPM_CHUNK_CHARS characters, sampled to `limit`."""
    pieces = text_pieces(docs)
    if len(pieces) > limit:
        pieces = random.Random(seed).sample(pieces, limit)
    return pieces


class Steps:
    """Remembers which steps finished with which options (in <out>/prepare.json)."""

    def __init__(self, out: Path, force: bool):
        self.path = out / STAMP
        self.state = {}
        if self.path.is_file() and not force:
            try:
                self.state = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError:
                self.state = {}

    def done(self, name: str, key: dict, outputs: list[Path], stats=()) -> bool:
        """The step finished with `key`, its outputs exist and its record holds `stats` (older runs lack some)."""
        entry = self.state.get(name)
        return (bool(entry) and entry.get("key") == key and all(p.is_file() for p in outputs)
                and all(k in entry.get("stats", {}) for k in stats))

    def invalidate_from(self, name: str) -> None:
        order = ["split", "spm", "encode", "binarize"]
        for later in order[order.index(name):]:
            self.state.pop(later, None)
        self.save()

    def finish(self, name: str, key: dict, stats: dict) -> None:
        self.state[name] = {"key": key, "stats": stats}
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.state, indent=2) + "\n", encoding="utf-8")


def count_lines_words(path: Path) -> tuple[int, int]:
    docs = words = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            docs += 1
            words += len(line.split())
    return docs, words


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    from tqdm import tqdm

    from fairseq_switch.data.corpus import (BadUtf8Counts, CorpusError, check_output_folder, corpus_files,
                                            describe_bad_utf8, fail, read_documents)
    from fairseq_switch.data.sentinels import NUM_SENTINELS, sentinel_symbols
    from fairseq_switch.data.vocab import (SPECIALS, VocabSizeError, describe_unk, encode_file, has_byte_fallback,
                                           min_vocab_size, run_fairseq_preprocess, train_spm, unk_percent, unk_rates,
                                           write_fairseq_dict)

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
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    assert [sp.id_to_piece(i) for i in range(len(SPECIALS))] == list(SPECIALS)

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
        log = run_fairseq_preprocess([
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


if __name__ == "__main__":
    sys.exit(main())
