"""SentencePiece vocabularies whose ids equal fairseq Dictionary ids, and fairseq binarization.

The SentencePiece model puts its specials where a fairseq `Dictionary` has them (<s>=0, <pad>=1,
</s>=2, <unk>=3) and `dict.txt` lists the remaining pieces in id order, so `spm.decode(ids)` works on
model output directly. Sentinels, when asked for, are user-defined pieces right after the specials:
they get ids 4..103 and the encoder maps the literal text "<extra_id_0>" to its sentinel.

With byte fallback (the scripts' default), the 256 byte pieces <0x00>..<0xFF> come next (ids 104..359
with sentinels) and are in dict.txt like any piece: a character the vocabulary lacks (a `£`, an emoji)
is written as its UTF-8 bytes instead of <unk>, and `spm.decode` puts it back together.
This module imports nothing from the package, and sentencepiece only where it trains: data preparation
runs without torch or fairseq (fairseq-preprocess runs as a subprocess).
"""

import collections
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from sentencepiece import SentencePieceProcessor

BUILTIN_SYMBOLS = ("<s>", "<pad>", "</s>", "<unk>")
NUM_BYTE_PIECES = 256  # <0x00>..<0xFF>, with byte fallback
MIN_TEXT_PIECES = 96  # the scripts' smallest vocabulary: the reserved pieces and at least this many more
_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_LOW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def describe_reserved(sentinels: int, byte_fallback: bool) -> str:
    """'4 specials + 100 sentinels + 256 byte pieces': what every vocabulary holds before text pieces."""
    parts = [f"{len(BUILTIN_SYMBOLS)} specials", f"{sentinels} sentinels"] + (
        [f"{NUM_BYTE_PIECES} byte pieces"] if byte_fallback else [])
    return " + ".join(parts)


def min_vocab_size(sentinels: int, byte_fallback: bool) -> int:
    """The scripts' smallest --vocab-size: specials, sentinels, byte pieces and MIN_TEXT_PIECES pieces."""
    return len(BUILTIN_SYMBOLS) + sentinels + (NUM_BYTE_PIECES if byte_fallback else 0) + MIN_TEXT_PIECES


def vocab_size_problem(vocab_size: int, sentinels: int, byte_fallback: bool) -> Optional[str]:
    """None, or why --vocab-size is below the scripts' minimum and what to use instead."""
    need = min_vocab_size(sentinels, byte_fallback)
    if vocab_size >= need:
        return None
    fix = f"use --vocab-size {need} or more"
    if byte_fallback:
        fix += f", or --no-byte-fallback (then >= {min_vocab_size(sentinels, False)}; characters the vocabulary " \
               f"lacks become <unk>)"
    return f"--vocab-size {vocab_size} is too small ({describe_reserved(sentinels, byte_fallback)} + pieces); {fix}"


class VocabSizeError(ValueError):
    """--vocab-size is more than the text allows; the message gives the largest size that works."""

    def __init__(self, requested: int, largest: int, minimum: int):
        self.requested, self.largest = requested, largest
        fix = (f"use --vocab-size {largest} or less, or add text" if largest >= minimum else
               f"that is below the minimum {minimum}: add text")
        super().__init__(f"--vocab-size {requested} is more than the training text allows: SentencePiece can "
                         f"make at most {largest} pieces from it; {fix}")


class VocabTooSmallError(VocabSizeError):
    """--vocab-size cannot hold the reserved pieces and every character of the training text."""

    def __init__(self, requested: int, needed: int, sentinels: int, byte_fallback: bool):
        self.requested, self.needed = requested, needed
        reserved = describe_reserved(sentinels, byte_fallback)
        chars = needed - len(BUILTIN_SYMBOLS) - sentinels - (NUM_BYTE_PIECES if byte_fallback else 0)
        fix = f"use --vocab-size {needed} or more"
        if byte_fallback:
            fix += " (or --no-byte-fallback, which frees 256)"
        ValueError.__init__(self, f"--vocab-size {requested} is too small for the training text: {reserved} and "
                                  f"its {chars} distinct characters need {needed}; {fix}")


def train_spm(
    sentences: Iterable[str],
    model_prefix: Path,
    vocab_size: int,
    seed: int,
    user_defined_symbols: Sequence[str] = (),
    input_sentence_size: int = 0,
    num_threads: int = 2,
    min_vocab_size: int = 1,
    byte_fallback: bool = False,
) -> None:
    """Train a unigram SentencePiece model (`<prefix>.model`, `<prefix>.vocab`).

    A vocab_size larger than the text allows raises VocabSizeError, one too small for the reserved
    pieces and the text's characters VocabTooSmallError, before anything is written; `min_vocab_size`
    (the caller's own lower bound) only shapes the advice. `byte_fallback` puts the 256 byte pieces
    right after the specials and `user_defined_symbols`."""
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_prefix=str(model_prefix),
            model_type="unigram",
            vocab_size=vocab_size,
            character_coverage=1.0,
            bos_id=0, pad_id=1, eos_id=2, unk_id=3,
            bos_piece=BUILTIN_SYMBOLS[0], pad_piece=BUILTIN_SYMBOLS[1], eos_piece=BUILTIN_SYMBOLS[2],
            unk_piece=BUILTIN_SYMBOLS[3],
            user_defined_symbols=list(user_defined_symbols),
            byte_fallback=byte_fallback,
            input_sentence_size=input_sentence_size,  # 0 = every sentence
            shuffle_input_sentence=True,
            max_sentence_length=1 << 16,
            num_threads=num_threads,
            minloglevel=2,
        )
    except RuntimeError as e:
        too_high, too_low = _TOO_HIGH.search(str(e)), _TOO_LOW.search(str(e))
        if too_high is not None:
            raise VocabSizeError(vocab_size, int(too_high.group(2)), min_vocab_size) from None
        if too_low is not None:
            raise VocabTooSmallError(vocab_size, int(too_low.group(2)), len(user_defined_symbols),
                                     byte_fallback) from None
        raise


def load_spm(model_file: Path) -> "SentencePieceProcessor":
    """The SentencePiece model at `model_file`, checked to hold fairseq's specials at ids 0..3."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    assert [sp.id_to_piece(i) for i in range(len(BUILTIN_SYMBOLS))] == list(BUILTIN_SYMBOLS)
    return sp


def write_fairseq_dict(sp: "SentencePieceProcessor", counts: collections.Counter, path: Path) -> int:
    """fairseq dict.txt from the SentencePiece vocab, in id order (ids 4.. = fairseq ids 4..)."""
    lines = []
    for i in range(len(BUILTIN_SYMBOLS), sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if sp.is_control(i) or sp.is_unknown(i) or not piece or any(c.isspace() for c in piece):
            raise RuntimeError(f"unexpected SentencePiece piece {i}: {piece!r}")
        lines.append(f"{piece} {counts.get(piece, 0)}\n")
    Path(path).write_text("".join(lines), encoding="utf-8")
    return len(lines)


def unk_percent(unk: int, tokens: int) -> float:
    """<unk> pieces as % of all pieces, rounded to 4 decimals (0 for no pieces)."""
    return round(100.0 * unk / tokens, 4) if tokens else 0.0


def has_byte_fallback(sp: "SentencePieceProcessor") -> bool:
    """Whether the SentencePiece model writes characters its vocabulary lacks as byte pieces."""
    first = sp.piece_to_id("<0x00>")
    return first != sp.unk_id() and sp.is_byte(first)


class UnkCounter:
    """Counts the pieces of `sp.encode(..., out_type=str)` that are not in the vocabulary (fairseq maps
    them to <unk>): SentencePiece writes an unknown character as itself, not as "<unk>". With
    `examples`, `self.unknown` counts those pieces (what the vocabulary cannot write)."""

    def __init__(self, sp: "SentencePieceProcessor", examples: bool = False):
        self.known = frozenset(sp.id_to_piece(i) for i in range(sp.get_piece_size()))
        self.unknown = collections.Counter() if examples else None

    def __call__(self, pieces: Sequence[str]) -> int:
        unknown = [p for p in pieces if p not in self.known]
        if unknown and self.unknown is not None:
            self.unknown.update(p.lstrip("\u2581") or p for p in unknown)
        return len(unknown)


def encode_file(sp: "SentencePieceProcessor", text_file: Path, piece_file: Path, workers: int,
                counts: Optional[collections.Counter] = None, desc: str = "encode") -> Tuple[int, int]:
    """Encode one document per line to SentencePiece pieces (space-separated, one line per document);
    add the pieces to `counts` when given; return (pieces, of them <unk>)."""
    from tqdm import tqdm

    docs = Path(text_file).read_text(encoding="utf-8").splitlines()
    n = unk = 0
    is_unk = UnkCounter(sp)
    with open(piece_file, "w", encoding="utf-8") as f, \
            tqdm(total=len(docs), desc=desc, unit="doc", mininterval=1.0) as bar:
        for i in range(0, len(docs), 256):
            for doc_pieces in sp.encode(docs[i:i + 256], out_type=str, num_threads=workers):
                f.write(" ".join(doc_pieces) + "\n")
                n += len(doc_pieces)
                unk += is_unk(doc_pieces)
                if counts is not None:
                    counts.update(doc_pieces)
            bar.update(len(docs[i:i + 256]))
    return n, unk


def describe_unk(tokens: int, unk: int) -> str:
    """'214,118 tokens, 12 <unk> (0.0056%)'."""
    return f"{tokens:10,d} tokens, {unk:,d} <unk> ({unk_percent(unk, tokens):.4f}%)"


def fairseq_preprocess_cmd() -> List[str]:
    exe = Path(sys.executable).parent / "fairseq-preprocess"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "fairseq_cli.preprocess"]


def run_fairseq_preprocess(args: List[str]) -> str:
    """Run fairseq-preprocess with `args`; return its log, or exit with its tail on failure."""
    cmd = fairseq_preprocess_cmd() + args
    print("[prepare] " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"error: fairseq-preprocess failed (exit {proc.returncode})")
    return proc.stdout + proc.stderr


def unk_rates(preprocess_log: str) -> List[str]:
    """'file: x% <unk>' for each file fairseq-preprocess reports."""
    found = re.findall(r"\[(\w+)\] (\S+): \d+ sents, (\d+) tokens, ([\d.]+)% replaced", preprocess_log)
    return [f"{f}: {pct}% <unk>" for _, f, _, pct in found]
