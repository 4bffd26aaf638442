"""The one stage runner of the four preparations, and the stage pieces they share.

Every preparation is split -> spm -> encode -> binarize. A main declares its stages (`Stage`: the key
its outputs depend on, the outputs, what to read and what to build) and `Runner` runs them: a stage is
skipped when its record matches, else its input is read and checked before the record is invalidated
(bad input leaves an earlier run's record as it was), then it is built and recorded. The pretraining
and multilingual preparations record each stage (`Steps`); downstream pairs and the demo run as one
stage with one record (`OneRecord`). The helpers below hold what two or more mains did alike.
"""

from __future__ import annotations

import argparse
import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from fairseq_switch.data import corpus, sentinels, vocab
from ...project import missing_bundled
from .documents import SPLITS
from .steps import ORDER, Steps


@dataclass
class Stage:
    name: str  # its entry in the record: one of steps.ORDER, or the whole run
    key: dict  # what the outputs depend on
    outputs: List[Path]
    build: Callable[..., dict]  # does the work (given what `read` returned, if any); returns the stats to record
    read: Optional[Callable[[], Any]] = None  # reads and checks the input before the record is invalidated
    title: str = ""  # "N/4 <title>: up to date"
    current: str = ""  # or this line when up to date
    stale: str = ""  # a line when an earlier run's record is there but no longer matches
    needs: Sequence[str] = ()  # stats the record must hold (an older run's may lack them)


class Runner:
    """Runs a preparation's stages in order; refuses an --out that is a file before anything is read."""

    def __init__(self, out: Path, force: bool, record: Any = None):
        try:
            corpus.check_output_folder(out)
        except corpus.CorpusError as e:
            corpus.fail(str(e))
        self.out = out
        self.record = record if record is not None else Steps(out, force)
        self.skipped: set = set()

    def run(self, stage: Stage) -> dict:
        """The stage's stats, from the record when it is up to date, else from building it."""
        rec = self.record
        if rec.done(stage.name, stage.key, stage.outputs, stage.needs):
            print(stage.current or f"[prepare] {ORDER.index(stage.name) + 1}/4 {stage.title}: up to date")
            self.skipped.add(stage.name)
            return rec.stats(stage.name)
        if stage.stale and rec.known(stage.name) and all(p.is_file() for p in stage.outputs):
            print(stage.stale)
        data = stage.read() if stage.read else None
        rec.invalidate_from(stage.name)  # only now: bad input leaves the previous run's record as it was
        stats = stage.build(data) if stage.read else stage.build()
        rec.finish(stage.name, stage.key, stats)
        return stats


def inputs_or_bundled(given: List[Path], bundled: List[Path]) -> List[Path]:
    """The inputs given, else the bundled sample: found from the project folder, one error line if absent."""
    if given:
        return given
    for path in bundled:
        if not path.exists():
            corpus.fail(missing_bundled(path, "the input files"))
    return bundled


def with_bad_utf8(key: dict, bad_utf8: str) -> dict:
    """`key` with the --bad-utf8 mode; absent by default, so that folders prepared before the option stay
    up to date."""
    if bad_utf8 != "error":
        key["bad_utf8"] = bad_utf8
    return key


def with_bad_utf8_counts(stats: dict, counts: corpus.BadUtf8Counts) -> dict:
    """`stats` with what --bad-utf8 replace/skip changed (nothing under the default, error)."""
    if counts.policy != "error":
        stats["bad_utf8"] = counts.as_dict()
    return stats


def split_key(version: int, inputs: Any, args: argparse.Namespace, unit: str, **extra: Any) -> dict:
    """What the documents stage depends on: the inputs' fingerprint and the options that pick and hold
    out documents (--valid-<unit>/--test-<unit>)."""
    return with_bad_utf8({"version": version, **extra, "inputs": inputs, "doc_format": args.doc_format,
                          "json_field": args.json_field, f"valid_{unit}": getattr(args, f"valid_{unit}"),
                          f"test_{unit}": getattr(args, f"test_{unit}"), "seed": args.seed}, args.bad_utf8)


def spm_key(split: dict, args: argparse.Namespace, **extra: Any) -> dict:
    """What the SentencePiece stage depends on: the documents and the vocabulary options."""
    key = {"split": split, "vocab_size": args.vocab_size, **extra, "spm_sentences": args.spm_sentences,
           "sentinels": sentinels.NUM_SENTINELS}
    if args.byte_fallback:  # absent without: a folder prepared before byte fallback was the default matches that
        key["byte_fallback"] = True
    return key


def train_vocabulary(pieces: Sequence[str], out: Path, vocab_size: int, seed: int, workers: int = 2,
                     byte_fallback: Optional[bool] = None) -> None:
    """SentencePiece on `pieces` into <out>/spm.{model,vocab}; with `byte_fallback` given (True or False), the
    100 sentinels too (span corruption's vocabulary). A size the text cannot fill: one error line."""
    reserved = {}
    if byte_fallback is not None:
        reserved = {"user_defined_symbols": sentinels.sentinel_symbols(), "byte_fallback": byte_fallback,
                    "min_vocab_size": vocab.min_vocab_size(sentinels.NUM_SENTINELS, byte_fallback)}
    try:
        vocab.train_spm(pieces, out / "spm", vocab_size, seed, num_threads=workers, **reserved)
    except vocab.VocabSizeError as e:
        corpus.fail(str(e))


def describe_vocabulary(args: argparse.Namespace, pieces: int) -> str:
    """'SentencePiece unigram, vocab 8000 (byte fallback), on 1,234 text pieces'."""
    return (f"SentencePiece unigram, vocab {args.vocab_size}{' (byte fallback)' if args.byte_fallback else ''}, "
            f"on {pieces:,d} text pieces")


def encode_splits(sp: Any, text_files: Dict[str, Path], piece_files: Dict[str, Path], workers: int,
                  counts: collections.Counter, desc: str = "encode") -> Tuple[Dict[str, int], Dict[str, int]]:
    """Encode each split's documents to pieces; the train split's pieces are added to `counts` (the
    dictionary's). Returns (tokens, <unk> tokens) per split."""
    tokens, unk = {}, {}
    for s in SPLITS:
        tokens[s], unk[s] = vocab.encode_file(sp, text_files[s], piece_files[s], workers,
                                              counts if s == "train" else None, desc=f"{desc} {s}")
    return tokens, unk


def binarize(preprocess_args: List[str], expected: List[Path]) -> str:
    """Run fairseq-preprocess; its log, or exit naming the outputs it did not write."""
    log = vocab.run_fairseq_preprocess(preprocess_args)  # by the module: tests put fairseq-preprocess in process
    missing = [str(p) for p in expected if not p.is_file()]
    if missing:
        raise SystemExit(f"error: fairseq-preprocess did not write {', '.join(missing)}")
    return log
