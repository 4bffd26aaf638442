"""Prepare a multilingual corpus for span-corruption pretraining: one shared vocabulary, per-language splits.

The multilingual setting of the Switch Transformer paper (Sec. 4.3, trained as mT5): every language
is binarized with ONE SentencePiece model whose training text mixes the languages with temperature
sampling, so small languages keep their share of the vocabulary.

Inputs (default: the bundled sample data/multilingual, 16 languages): folders or files. A folder
holding <lang>.txt (or <lang>.txt.gz, <lang>.jsonl, ...) files gives one language per file; a folder
holding one subfolder per language gives one language per subfolder (all its text files); a file is
one language (named after the file). meta.json and README.md are not languages. --languages picks
and orders a subset. Documents: as in scripts/prepare_pretraining_data.py (blank-line separated
paragraphs, one per line, or jsonl; see fairseq_switch/data/corpus.py).

Steps (each is skipped when its outputs exist and were made from the same inputs and options):
  1. per language: read the documents, shuffle them with --seed and hold out whole documents for
     valid and test (--valid-chars / --test-chars CHARACTERS each: Japanese or Chinese have no
     spaces to count words by); write <out>/raw/<lang>/{train,valid,test}.txt;
  2. train one SentencePiece unigram model (<out>/spm.model, 100 sentinels <extra_id_N> at ids
     4..103, then with byte fallback (the default; --no-byte-fallback turns it off) the 256 byte
     pieces <0x00>..<0xFF>, so that a character left out of the vocabulary is written as its UTF-8
     bytes instead of <unk>; ids equal to the fairseq dictionary's) on a temperature-sampled mixture: language l
     gets the share p_l ~ n_l^alpha (n_l: its training characters, alpha = --alpha, 0.3 as mT5) of
     --spm-sentences text pieces (of <= 2000 characters), repeating a small language's pieces when
     its share exceeds its text;
  3. encode every split of every language with it (<out>/raw/<lang>/{split}.pieces), count its
     <unk> pieces, and write the shared dictionary (counts from all languages' training text);
  4. binarize with fairseq-preprocess --only-source --srcdict into <out>/<lang>/{train,valid,test}.{bin,idx}
     (+ <out>/<lang>/dict.txt, a copy of the shared <out>/dict.txt).
<out>/prepare.json records the options, per language the documents, characters and tokens of each
split, the SentencePiece sampling shares and the <unk> counts and rates.

Usage:
    python scripts/prepare_multilingual_data.py --out data-bin/multilingual_sample
    python scripts/prepare_multilingual_data.py --out data-bin/ml3 --languages de,ja,ru --alpha 0.5
Each <out>/<lang> is then a span_corruption data folder (shared dict.txt; spm.model in <out>).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import time
from pathlib import Path

from fairseq_switch.data import corpus, sentinels, vocab
from ..files import write_if_changed
from ..paths import DATA_DIR
from .documents import SPLITS, text_pieces
from .languages import find_languages, read_language, select_languages, split_language
from .mixture import piece_quotas, sample_pieces, sampling_shares
from .options import add_document_options, add_run_options, add_vocabulary_options, parse_checked
from .stages import (Runner, Stage, binarize, describe_vocabulary, encode_splits, inputs_or_bundled, spm_key, split_key,
                     train_vocabulary, with_bad_utf8_counts)
from .steps import sha256_files

DEFAULT_INPUTS = [DATA_DIR / "multilingual"]
FORMAT_VERSION = 1
MAX_DEFAULT_SPM_PIECES = 2_000_000  # as prepare_pretraining_data.py's --spm-sentences


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("inputs", nargs="*", type=Path,
                    help="folders of <lang>.txt files or of <lang>/ subfolders, or files (default: data/multilingual)")
    ap.add_argument("--out", type=Path, required=True, help="output folder, e.g. data-bin/multilingual_sample")
    ap.add_argument("--languages", default="",
                    help="comma-separated languages to prepare, in this order (default: all found, sorted)")
    ap.add_argument("--alpha", type=float, default=0.3,
                    help="SentencePiece sampling temperature: share ~ characters^alpha (0.3 as mT5; "
                         "1 = proportional, 0 = uniform)")
    add_vocabulary_options(ap, "mT5: 250000")
    ap.add_argument("--spm-sentences", type=int, default=None,
                    help="text pieces (<= 2000 characters) in the SentencePiece mixture (default: as many as "
                         f"the languages' training text has, at most {MAX_DEFAULT_SPM_PIECES:,d})")
    ap.add_argument("--valid-chars", type=int, default=10_000,
                    help="characters held out for validation, per language (whole documents)")
    ap.add_argument("--test-chars", type=int, default=10_000,
                    help="characters held out for test, per language (whole documents)")
    add_document_options(ap)
    add_run_options(ap, "seed of the document shuffle and the SentencePiece sample",
                    "threads/workers for SentencePiece and binarizing")
    args = parse_checked(ap, argv, "chars")
    if args.alpha < 0:
        ap.error(f"--alpha {args.alpha} must be >= 0 (0: uniform over languages, 1: proportional to their text)")
    if args.spm_sentences is not None and args.spm_sentences < 1:
        ap.error("--spm-sentences must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    NUM_SENTINELS = sentinels.NUM_SENTINELS
    out: Path = args.out
    raw = out / "raw"
    run = Runner(out, args.force)
    try:
        available = find_languages(inputs_or_bundled(args.inputs, DEFAULT_INPUTS))
    except corpus.CorpusError as e:
        corpus.fail(str(e))
    languages = select_languages(available, args.languages)
    files = {lang: available[lang] for lang in languages}
    print(f"[prepare] {len(languages)} language(s): "
          + ", ".join(f"{lang} ({len(fs)} file{'s' if len(fs) > 1 else ''})" for lang, fs in files.items()))
    out.mkdir(parents=True, exist_ok=True)
    for entry in ("options", "languages"):  # this run's summary, written at the end
        run.record.state.pop(entry, None)
    text_files = {lang: {s: raw / lang / f"{s}.txt" for s in SPLITS} for lang in languages}
    piece_files = {lang: {s: raw / lang / f"{s}.pieces" for s in SPLITS} for lang in languages}

    def read_splits() -> tuple:  # every language is checked before anything is written
        print(f"[prepare] 1/4 documents: holding out {args.valid_chars:,d} + {args.test_chars:,d} characters "
              f"per language (seed {args.seed}) ...", flush=True)
        all_splits, errors, utf8_counts = {}, [], corpus.BadUtf8Counts(args.bad_utf8)
        for lang in languages:
            docs, error = read_language(lang, files[lang], args, utf8_counts)
            if docs is not None:
                all_splits[lang], error = split_language(lang, docs, args)
            if error:
                errors.append(error)
        if errors:
            corpus.fail(*errors)
        return all_splits, utf8_counts

    def write_splits(read: tuple) -> dict:
        all_splits, utf8_counts = read
        stats = {}
        for lang, splits in all_splits.items():
            (raw / lang).mkdir(parents=True, exist_ok=True)
            stats[lang] = {}
            for s in SPLITS:
                text_files[lang][s].write_text("".join(d + "\n" for d in splits[s]), encoding="utf-8")
                stats[lang][s] = {"documents": len(splits[s]), "characters": sum(map(len, splits[s]))}
        return with_bad_utf8_counts(stats, utf8_counts)

    def train() -> dict:
        t = time.time()
        # pieces of the language's running text (documents joined), so that they have about the same
        # length in every language and shares of pieces are shares of characters
        available_pieces = {lang: text_pieces([" ".join(text_files[lang]["train"].read_text(encoding="utf-8")
                                                        .splitlines())])
                            for lang in languages}
        chars = {lang: split_stats[lang]["train"]["characters"] for lang in languages}
        shares = sampling_shares(chars, args.alpha)
        total = args.spm_sentences or min(sum(map(len, available_pieces.values())), MAX_DEFAULT_SPM_PIECES)
        quotas = piece_quotas(shares, total)
        rng = random.Random(args.seed)
        mixture, sample_stats = [], {}
        for lang in languages:
            sample = sample_pieces(available_pieces[lang], quotas[lang], rng)
            mixture.extend(sample)
            sample_stats[lang] = {"share": round(shares[lang], 6),
                                  "text_share": round(chars[lang] / sum(chars.values()), 6),
                                  "pieces": quotas[lang], "available_pieces": len(available_pieces[lang]),
                                  "characters": sum(map(len, sample))}
        print(f"[prepare] 2/4 {describe_vocabulary(args, len(mixture))} "
              f"({sum(map(len, mixture)):,d} characters) sampled with alpha {args.alpha} ...", flush=True)
        try:
            train_vocabulary(mixture, out, args.vocab_size, args.seed, args.workers, args.byte_fallback)
        except RuntimeError as e:  # e.g. more distinct characters than --vocab-size, or too little text
            raise SystemExit(f"error: SentencePiece training failed: {str(e).strip()}\n"
                             f"error: --vocab-size {args.vocab_size} must hold the "
                             f"{vocab.describe_reserved(NUM_SENTINELS, args.byte_fallback)} plus every character of "
                             f"the sample (about "
                             f"{len(set(''.join(mixture)) - {' '})} here), and the sample needs enough text for "
                             f"that many pieces (raise --spm-sentences or add text)")
        print(f"[prepare]   done in {time.time() - t:.1f}s")
        return {"sampling": sample_stats, "pieces": len(mixture), "seconds": round(time.time() - t, 1)}

    def encode() -> dict:
        print(f"[prepare] 3/4 encoding {len(languages)} language(s) ...", flush=True)
        tokens, unk, counts = {}, {}, collections.Counter()
        for lang in languages:
            tokens[lang], unk[lang] = encode_splits(sp, text_files[lang], piece_files[lang], args.workers, counts,
                                                    desc=f"encode {lang}")
        vocab.write_fairseq_dict(sp, counts, raw / "dict.txt")
        return {"tokens": tokens, "unk": unk}

    def binarize_all() -> dict:
        # one fairseq-preprocess run for all languages (each start costs seconds of imports): every split
        # of every language is one of its --validpref files, renamed to <out>/<lang>/<split> after
        t = time.time()
        print(f"[prepare] 4/4 binarizing {len(languages)} language(s) ...", flush=True)
        tmp = raw / "binarize"
        shutil.rmtree(tmp, ignore_errors=True)
        order = [(lang, s) for lang in languages for s in SPLITS]
        produced = {(k, ext): tmp / f"valid{k or ''}.{ext}" for k in range(len(order)) for ext in ("bin", "idx")}
        binarize(["--only-source", "--srcdict", str(raw / "dict.txt"),
                  "--validpref", ",".join(str(piece_files[lang][s]) for lang, s in order),
                  "--destdir", str(tmp), "--workers", str(args.workers)], list(produced.values()))
        for (k, ext), path in produced.items():
            lang, s = order[k]
            (out / lang).mkdir(exist_ok=True)
            os.replace(path, out / lang / f"{s}.{ext}")
        for lang in languages:
            shutil.copyfile(raw / "dict.txt", out / lang / "dict.txt")
        shutil.copyfile(raw / "dict.txt", out / "dict.txt")
        shutil.move(str(tmp / "preprocess.log"), raw / "preprocess.log")
        shutil.rmtree(tmp)
        print(f"[prepare]   done in {time.time() - t:.1f}s")
        return {"seconds": round(time.time() - t, 1)}

    # 1. documents and splits, per language
    split = split_key(FORMAT_VERSION, {lang: sha256_files(files[lang]) for lang in languages}, args, "chars",
                      languages=languages)
    split_stats = run.run(Stage("split", split, [f for lang in languages for f in text_files[lang].values()],
                                write_splits, read_splits, "documents"))
    if "bad_utf8" in split_stats:
        print(f"[prepare]   {corpus.describe_bad_utf8(split_stats['bad_utf8'])}")
    print(f"[prepare]   {'':8s} {'documents (train/valid/test)':>30s} {'characters (train/valid/test)':>36s}")
    for lang in languages:
        st = split_stats[lang]
        print(f"[prepare]   {lang:8s} {'/'.join(str(st[s]['documents']) for s in SPLITS):>30s} "
              f"{'/'.join(format(st[s]['characters'], ',d') for s in SPLITS):>36s}")

    # 2. one SentencePiece model on a temperature-sampled mixture of the languages
    spm = spm_key(split, args, alpha=args.alpha)
    sample_stats = run.run(Stage("spm", spm, [out / "spm.model", out / "spm.vocab"], train,
                                 title="SentencePiece"))["sampling"]
    print(f"[prepare]   {'':8s} {'share':>7s} {'of text':>8s} {'pieces':>8s} {'x its text':>11s}")
    for lang in languages:
        st = sample_stats[lang]
        print(f"[prepare]   {lang:8s} {st['share']:7.1%} {st['text_share']:8.1%} {st['pieces']:8,d} "
              f"{st['pieces'] / st['available_pieces']:10.2f}x")
    sp = vocab.load_spm(out / "spm.model")

    # 3. encode every language with the shared model; one dictionary from all training text
    encoded = run.run(Stage("encode", {"spm": spm}, [f for lang in languages for f in piece_files[lang].values()]
                            + [raw / "dict.txt"], encode, title="encoding", needs=["unk"]))
    tokens, unk = encoded["tokens"], encoded["unk"]

    # 4. binarize
    bin_files = [out / "dict.txt"] + [out / lang / name for lang in languages
                                      for name in ["dict.txt"] + [f"{s}.{e}" for s in SPLITS for e in ("bin", "idx")]]
    run.run(Stage("binarize", {"encode": {"spm": spm}}, bin_files, binarize_all, title="binarize"))
    unk_pct = {lang: {s: vocab.unk_percent(unk[lang][s], tokens[lang][s]) for s in SPLITS} for lang in languages}

    # summary (also kept in prepare.json, next to the steps)
    print(f"[prepare]   {'':8s} {'tokens (train/valid/test)':>30s} {'chars/token':>12s} "
          f"{'% <unk> (train/valid/test)':>27s}")
    summary = {}
    for lang in languages:
        summary[lang] = {s: {**split_stats[lang][s], "tokens": tokens[lang][s], "unk": unk[lang][s],
                             "unk_percent": unk_pct[lang][s]} for s in SPLITS}
        summary[lang]["spm_sampling"] = sample_stats[lang]
        rates = "/".join(f"{unk_pct[lang][s]:.3f}" for s in SPLITS)
        print(f"[prepare]   {lang:8s} {'/'.join(format(tokens[lang][s], ',d') for s in SPLITS):>30s} "
              f"{split_stats[lang]['train']['characters'] / max(tokens[lang]['train'], 1):12.2f} {rates:>27s}")
    run.record.state["options"] = {"inputs": [str(p) for p in (args.inputs or DEFAULT_INPUTS)], "languages": languages,
                              "alpha": args.alpha, "vocab_size": args.vocab_size,
                              "spm_sentences": args.spm_sentences, "valid_chars": args.valid_chars,
                              "test_chars": args.test_chars, "doc_format": args.doc_format,
                              "json_field": args.json_field, "bad_utf8": args.bad_utf8, "seed": args.seed,
                              "byte_fallback": args.byte_fallback}
    run.record.state["languages"] = summary
    write_if_changed(run.record.path, (json.dumps(run.record.state, indent=2) + "\n").encode("utf-8"))

    stale = sorted(p.name for p in out.iterdir()
                   if p.is_dir() and p.name not in languages and (p / "train.bin").is_file())
    if stale:
        print(f"[prepare] note: {', '.join(stale)} in {out} are from an earlier run with other languages "
              f"(not in prepare.json); remove them if unwanted")
    total_tokens = sum(sum(t.values()) for t in tokens.values())
    print(f"[prepare] {out}: {len(languages)} languages, shared dictionary {sp.get_piece_size()} symbols "
          f"({NUM_SENTINELS} sentinels); {total_tokens:,d} tokens; {time.time() - t0:.1f}s")
    return 0
