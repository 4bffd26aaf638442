"""The seeded test / valid / train split of a downstream set, and its JSON-lines files."""

from __future__ import annotations

import collections
import json
import random

from .settings import SPLITS
from ..downloads import SourceError


def shuffled_order(pairs: list[dict], seed: int, stratify: bool = False) -> list[dict]:
    """Pairs in a seeded random order (independent of input order: sorted by id first).

    With ``stratify`` every prefix of the order has about the label (target) proportions of
    the whole: each pair's key is its (rank + 0.5) / size within its label after the shuffle.
    """
    order = sorted(pairs, key=lambda p: (p["id"], p["input"]))
    random.Random(seed).shuffle(order)
    if not stratify:
        return order
    counts = collections.Counter(p["target"] for p in order)
    seen: collections.Counter = collections.Counter()
    keyed = []
    for i, p in enumerate(order):
        keyed.append(((seen[p["target"]] + 0.5) / counts[p["target"]], i, p))
        seen[p["target"]] += 1
    return [p for _, _, p in sorted(keyed, key=lambda k: (k[0], k[1]))]


def split_pairs(pairs: list[dict], seed: int, n_valid: int, n_test: int, n_train: int | None = None,
                limit: int | None = None, stratify: bool = False,
                home: dict[str, str] | None = None) -> dict[str, list[dict]]:
    """test = first n_test of the shuffled order, valid = next n_valid, train = next n_train (or the rest).

    ``limit`` caps the total number of pairs used (train gets what is left of it). ``home``
    (id -> split) pins pairs to a split: each split takes its own pinned pairs first (up to
    its size; the rest are left out, never moved to another split), then fills up with
    unpinned pairs as above. Each split keeps the shuffled order.
    """
    order = shuffled_order(pairs, seed, stratify)
    if limit is not None:
        order = order[:limit]
    home = home or {}
    rank = {id(p): i for i, p in enumerate(order)}
    free = [p for p in order if p["id"] not in home]
    sizes = {"test": n_test, "valid": n_valid, "train": n_train}
    splits = {}
    for split in ("test", "valid", "train"):
        own = [p for p in order if home.get(p["id"]) == split]
        size = len(own) + len(free) if sizes[split] is None else sizes[split]
        n_free = max(0, size - len(own))
        take, free = own[:size] + free[:n_free], free[n_free:]
        splits[split] = sorted(take, key=lambda p: rank[id(p)])
    if len(splits["test"]) < n_test or len(splits["valid"]) < n_valid:
        raise SourceError(f"only {len(order)} pairs available, too few for --test {n_test} and "
                          f"--valid {n_valid}" + (" in their pinned splits" if home else ""))
    return {s: splits[s] for s in SPLITS}


def jsonl_bytes(pairs: list[dict]) -> bytes:
    """One JSON object {"id", "input", "target"} per line, UTF-8 (not ASCII-escaped)."""
    return "".join(json.dumps({"id": p["id"], "input": p["input"], "target": p["target"]},
                              ensure_ascii=False) + "\n" for p in pairs).encode("utf-8")
