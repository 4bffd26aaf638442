"""Command-line options that the pretraining and multilingual preparations share, with their checks."""

import argparse
from typing import List, Optional

from fairseq_switch.data import corpus
from fairseq_switch.data.sentinels import NUM_SENTINELS
from fairseq_switch.data.vocab import vocab_size_problem

NO_BYTE_FALLBACK_HELP = ("train SentencePiece without byte fallback: characters the vocabulary lacks become <unk> "
                         "instead of their UTF-8 bytes (frees 256 vocabulary slots)")
BAD_UTF8_HELP = ("bytes that are not UTF-8: error (stop, naming the file and the byte offset), replace "
                 "(each by U+FFFD) or skip (drop their lines); the counts go to <out>/prepare.json")


def add_vocabulary_options(ap: argparse.ArgumentParser, reference: str) -> None:
    """--vocab-size (`reference`: the paper model's size, e.g. "T5: 32000") and --no-byte-fallback."""
    ap.add_argument("--vocab-size", type=int, default=8000,
                    help=f"SentencePiece vocabulary incl. 4 specials, 100 sentinels and 256 byte pieces ({reference})")
    ap.add_argument("--no-byte-fallback", dest="byte_fallback", action="store_false", help=NO_BYTE_FALLBACK_HELP)


def add_document_options(ap: argparse.ArgumentParser) -> None:
    """--doc-format and --json-field: how the input files hold their documents."""
    ap.add_argument("--doc-format", default="auto", choices=list(corpus.DOC_FORMATS),
                    help="how documents are delimited (auto: by file name and blank lines)")
    ap.add_argument("--json-field", default="text", help="jsonl field holding the document")


def add_run_options(ap: argparse.ArgumentParser, seed_help: str, workers_help: str) -> None:
    """--bad-utf8, --seed, --workers and --force."""
    ap.add_argument("--bad-utf8", default="error", choices=list(corpus.BAD_UTF8), help=BAD_UTF8_HELP)
    ap.add_argument("--seed", type=int, default=1, help=seed_help)
    ap.add_argument("--workers", type=int, default=2, help=workers_help)
    ap.add_argument("--force", action="store_true", help="redo every step")


def check_vocab_size(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--vocab-size below what the specials, sentinels, byte pieces and some text pieces need: a usage error."""
    problem = vocab_size_problem(args.vocab_size, NUM_SENTINELS, args.byte_fallback)
    if problem:
        ap.error(problem)


def parse_checked(ap: argparse.ArgumentParser, argv: Optional[List[str]], unit: str) -> argparse.Namespace:
    """Parse `argv`; usage errors for a vocabulary too small and for --valid-<unit>/--test-<unit> below 1."""
    args = ap.parse_args(argv)
    check_vocab_size(ap, args)
    if getattr(args, f"valid_{unit}") < 1 or getattr(args, f"test_{unit}") < 1:
        ap.error(f"--valid-{unit} and --test-{unit} must be >= 1")
    return args
