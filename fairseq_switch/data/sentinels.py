"""Sentinel tokens <extra_id_0>, <extra_id_1>, ... that mark corrupted spans (T5 reserves 100)."""

from typing import TYPE_CHECKING, List

if TYPE_CHECKING:
    from fairseq.data import Dictionary

NUM_SENTINELS = 100


def sentinel_symbol(i: int) -> str:
    return f"<extra_id_{i}>"


def sentinel_symbols(n: int = NUM_SENTINELS) -> List[str]:
    return [sentinel_symbol(i) for i in range(n)]


def count_sentinels(dictionary: "Dictionary") -> int:
    """How many sentinels the dictionary holds, counted from <extra_id_0> up to the first missing one."""
    n = 0
    while dictionary.index(sentinel_symbol(n)) != dictionary.unk():
        n += 1
    return n


def sentinel_indices(dictionary: "Dictionary", needed: int) -> List[int]:
    """Dictionary ids of <extra_id_0>..<extra_id_{needed-1}>, or a ValueError that names the fix."""
    missing = [s for s in sentinel_symbols(needed) if dictionary.index(s) == dictionary.unk()]
    if missing:
        have = needed - len(missing)
        raise ValueError(
            f"the dictionary ({len(dictionary)} symbols) lacks sentinel tokens needed for span "
            f"corruption: {needed} are needed (<extra_id_0>..<extra_id_{needed - 1}>), {have} found, "
            f"first missing {missing[0]}. Build the data with scripts/prepare_pretraining_data.py, "
            f"which reserves {NUM_SENTINELS} sentinels, or append lines '<extra_id_N> 0' for "
            f"N = 0..{NUM_SENTINELS - 1} to dict.txt (and re-binarize if ids change)."
        )
    return [dictionary.index(s) for s in sentinel_symbols(needed)]
