"""Text normalization and word counts shared by the corpus fetchers and the data preparation."""

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")


def normalize_text(text: str) -> str:
    """NFC, control characters to spaces, whitespace runs collapsed to one space, stripped."""
    text = _CONTROL.sub(" ", unicodedata.normalize("NFC", text))
    return " ".join(text.split())


def normalize_paragraph(block: str) -> str:
    """NFC-normalize and collapse all whitespace (incl. line breaks) to single spaces.

    Unlike `normalize_text`, control characters are kept: the pretraining and demo corpora were
    built this way, and changing it would change their bundled files."""
    return " ".join(unicodedata.normalize("NFC", block).split())


def word_count(text: str) -> int:
    """Whitespace-separated words."""
    return len(text.split())


def truncate_words(text: str, n: int) -> str:
    """The first ``n`` whitespace-separated words of ``text`` (already normalized)."""
    words = text.split()
    return text if len(words) <= n else " ".join(words[:n])
