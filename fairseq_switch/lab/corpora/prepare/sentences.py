"""Sentences of a paragraph, and the next-sentence pairs of the demo data set.

The sentence splitter is a simple regular expression tuned on Moby-Dick (abbreviations, initials,
quotes), enough for a demo task; it is not a general-purpose tokenizer.
"""

from __future__ import annotations

import re

# Abbreviations (lower-cased, without the dot) after which a period does not end a sentence.
ABBREVIATIONS = frozenset(
    "mr mrs messrs dr st capt col gen lieut rev esq jr sr mt vol viz vs".split()
)
_OPEN = "\"'“‘(["
_CLOSE = "\"'”’)]"
# Sentence end: run of . ! ? , optional closing quotes/brackets, whitespace, then (after
# optional opening quotes/brackets) a capital letter.
_BOUNDARY = re.compile(
    r"[.!?]+[" + re.escape(_CLOSE) + r"]*(?=\s+[" + re.escape(_OPEN) + r"]*[A-Z])"
)


def _is_abbreviation(text_before: str) -> bool:
    """True if text_before (ending right before a '.') ends in an abbreviation or initial."""
    word = text_before.split()[-1] if text_before.split() else ""
    word = word.lstrip(_OPEN + "—-")
    if len(word) == 1 and word.isupper() and word != "I":  # an initial: "D. Wolf"
        return True
    return word.lower() in ABBREVIATIONS


def split_sentences(paragraph: str) -> list[str]:
    """Split one paragraph into sentences with a simple regex.

    A sentence ends at ``.``, ``!`` or ``?`` (plus any closing quotes/brackets) followed by
    whitespace and a capital letter, optionally behind opening quotes. A period after a
    known abbreviation (``Mr.``, ``Capt.``, ...) or a single capital initial other than
    ``I`` (``J. Ross``) does not end a sentence. Whitespace is normalized; empty sentences are dropped.
    """
    paragraph = " ".join(paragraph.split())
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(paragraph):
        if m.group().startswith(".") and len(m.group().rstrip(_CLOSE)) == 1:
            if _is_abbreviation(paragraph[start:m.start()]):
                continue
        sentences.append(paragraph[start:m.end()].strip())
        start = m.end()
    sentences.append(paragraph[start:].strip())
    return [s for s in sentences if s]


def make_pairs(sentences: list[str]) -> list[tuple[str, str]]:
    """Consecutive-sentence pairs (sentence_i, sentence_{i+1}) of one paragraph."""
    return list(zip(sentences[:-1], sentences[1:]))


def build_pairs(paragraphs: list[str]) -> tuple[list[list[str]], list[tuple[str, str]], int]:
    """Sentences per paragraph, unique next-sentence pairs (in text order), duplicates removed."""
    sentences = [split_sentences(p) for p in paragraphs]
    pairs, seen, duplicates = [], set(), 0
    for sents in sentences:
        for pair in make_pairs(sents):
            if pair in seen:
                duplicates += 1
                continue
            seen.add(pair)
            pairs.append(pair)
    return sentences, pairs, duplicates
