"""SentencePiece vocabularies whose ids equal fairseq Dictionary ids, and fairseq binarization.

The SentencePiece model puts its specials where a fairseq `Dictionary` has them (<s>=0, <pad>=1,
</s>=2, <unk>=3) and `dict.txt` lists the remaining pieces in id order, so `spm.decode(ids)` works on
model output directly. Sentinels, when asked for, are user-defined pieces right after the specials:
they get ids 4..103 and the encoder maps the literal text "<extra_id_0>" to its sentinel.
"""

import collections
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterable, List, Sequence

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")


class VocabSizeError(ValueError):
    """--vocab-size is more than the text allows; the message gives the largest size that works."""

    def __init__(self, requested: int, largest: int, minimum: int):
        self.requested, self.largest = requested, largest
        fix = (f"use --vocab-size {largest} or less, or add text" if largest >= minimum else
               f"that is below the minimum {minimum}: add text")
        super().__init__(f"--vocab-size {requested} is more than the training text allows: SentencePiece can "
                         f"make at most {largest} pieces from it; {fix}")


def train_spm(
    sentences: Iterable[str],
    model_prefix: Path,
    vocab_size: int,
    seed: int,
    user_defined_symbols: Sequence[str] = (),
    input_sentence_size: int = 0,
    num_threads: int = 2,
    min_vocab_size: int = 1,
) -> None:
    """Train a unigram SentencePiece model (`<prefix>.model`, `<prefix>.vocab`).

    A vocab_size larger than the text allows raises VocabSizeError, before anything is written;
    `min_vocab_size` (the caller's own lower bound) only shapes its advice."""
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
            bos_piece=SPECIALS[0], pad_piece=SPECIALS[1], eos_piece=SPECIALS[2], unk_piece=SPECIALS[3],
            user_defined_symbols=list(user_defined_symbols),
            input_sentence_size=input_sentence_size,  # 0 = every sentence
            shuffle_input_sentence=True,
            max_sentence_length=1 << 16,
            num_threads=num_threads,
            minloglevel=2,
        )
    except RuntimeError as e:
        too_high = _TOO_HIGH.search(str(e))
        if too_high is None:
            raise
        raise VocabSizeError(vocab_size, int(too_high.group(2)), min_vocab_size) from None


def write_fairseq_dict(sp, counts: collections.Counter, path: Path) -> int:
    """fairseq dict.txt from the SentencePiece vocab, in id order (ids 4.. = fairseq ids 4..)."""
    lines = []
    for i in range(len(SPECIALS), sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if sp.is_control(i) or sp.is_unknown(i) or not piece or any(c.isspace() for c in piece):
            raise RuntimeError(f"unexpected SentencePiece piece {i}: {piece!r}")
        lines.append(f"{piece} {counts.get(piece, 0)}\n")
    Path(path).write_text("".join(lines), encoding="utf-8")
    return len(lines)


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
