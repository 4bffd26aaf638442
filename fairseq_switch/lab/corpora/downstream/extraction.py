"""What a downstream source yields: (id, input, target) pairs plus what was read and dropped."""

import collections
from dataclasses import dataclass, field
from typing import Dict, List, Set


@dataclass
class Extraction:
    """Pairs extracted from a source plus what was read and dropped (reason -> count).

    ``home`` pins some pairs to a split (``split_pairs``); the others go where the shuffle puts them.
    """

    pairs: List[dict] = field(default_factory=list)
    read: int = 0
    dropped: collections.Counter = field(default_factory=collections.Counter)
    home: Dict[str, str] = field(default_factory=dict)  # id -> the split it must go to

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1


class Dedup:
    """Keeps the first pair per input; counts later ones as ``duplicate``."""

    def __init__(self, ex: Extraction):
        self.ex: Extraction = ex
        self.seen: Set[str] = set()

    def add(self, pair: dict) -> bool:
        """Append `pair` to the extraction unless its input was seen; whether it was kept."""
        if pair["input"] in self.seen:
            self.ex.drop("duplicate")
            return False
        self.seen.add(pair["input"])
        self.ex.pairs.append(pair)
        return True
