"""Held-out splits of whole documents, and the text pieces SentencePiece trains on."""

import random
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Tuple

from ..text import word_count

SPLITS = ("train", "valid", "test")
SPM_CHUNK_CHARS = 2000  # SentencePiece trains on pieces of documents of at most this many characters


def split_documents(docs: List[str], valid_words: int, test_words: int, seed: int,
                    size: Callable[[str], int] = word_count) -> Dict[str, List[str]]:
    """Shuffle documents, then take whole documents for valid, then test, until each has its words.

    `size(doc)` measures a document (words; the multilingual preparation counts characters). The
    train split is empty when the documents do not outlast the hold-out: the caller says what to do.
    """
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    splits: Dict[str, List[str]] = {"valid": [], "test": [], "train": []}
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


def text_pieces(docs: Iterable[str]) -> List[str]:
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


def spm_pieces(docs: List[str], limit: int, seed: int) -> List[str]:
    """Documents cut at word boundaries into pieces of <= SPM_CHUNK_CHARS characters, sampled to `limit`."""
    pieces = text_pieces(docs)
    if len(pieces) > limit:
        pieces = random.Random(seed).sample(pieces, limit)
    return pieces


def count_lines_words(path: Path) -> Tuple[int, int]:
    """(lines, words) of a text file: a split's documents and words."""
    docs = words = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            docs += 1
            words += len(line.split())
    return docs, words
