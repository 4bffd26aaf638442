"""Temperature sampling of the SentencePiece training text over languages (mT5, Xue et al. 2021).

Language l gets the share p_l = n_l^alpha / sum_k n_k^alpha of the text pieces (n_l: its training
characters), so small languages keep a share of the vocabulary; a language whose share exceeds its text
repeats its pieces. (fairseq_switch.data.language_mixture.sampling_probs applies the same formula to the
training examples of each epoch.)
"""

from __future__ import annotations

import random


def sampling_shares(counts: dict[str, int], alpha: float) -> dict[str, float]:
    """p_l = n_l^alpha / sum_k n_k^alpha (mT5's language sampling; alpha=1: proportional, 0: uniform)."""
    if not counts:
        raise ValueError("no languages to sample from")
    if any(n <= 0 for n in counts.values()):
        raise ValueError(f"every language needs text to sample from: {counts}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, not {alpha}")
    weights = {lang: float(n) ** alpha for lang, n in counts.items()}
    total = sum(weights.values())
    return {lang: w / total for lang, w in weights.items()}


def piece_quotas(shares: dict[str, float], total: int) -> dict[str, int]:
    """Whole numbers of pieces, close to share * total (largest remainders), at least 1 per language."""
    exact = {lang: p * total for lang, p in shares.items()}
    quotas = {lang: int(x) for lang, x in exact.items()}
    left = total - sum(quotas.values())
    for lang in sorted(exact, key=lambda l: quotas[l] - exact[l])[:max(left, 0)]:
        quotas[lang] += 1
    return {lang: max(q, 1) for lang, q in quotas.items()}


def sample_pieces(pieces: list[str], k: int, rng: random.Random) -> list[str]:
    """k pieces: every piece k // len times (a small language repeats its text), then a random rest."""
    copies, rest = divmod(k, len(pieces))
    return pieces * copies + rng.sample(pieces, rest)
