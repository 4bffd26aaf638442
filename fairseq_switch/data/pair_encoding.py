"""(input, target) pairs to SentencePiece pieces for prepare_downstream_data.py, and what it reports.

Per split it counts every pair (read, kept, empty, truncated or dropped), the <unk> pieces of
inputs and targets, and their lengths before the limit: p50/p90/p99/max in tokens (with the </s>
fairseq appends, so that they compare with --max-input-tokens/--max-target-tokens) and the share over
the limit. Percentiles are nearest-rank: pN is the smallest length that N% of the pairs do not exceed.
Imports no fairseq.
"""

import collections
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .vocab import UnkCounter, unk_percent

if TYPE_CHECKING:
    from sentencepiece import SentencePieceProcessor

SIDES = ("input", "target")
PERCENTILES = (50, 90, 99)
TRUNCATION_WARN_PERCENT = 10.0  # warn when more of a split's inputs (or targets) than this are over the limit
UNK_WARN_PERCENT = 0.1  # warn when more of a split's input (or target) tokens than this are <unk>
LIMIT_OPTIONS = {"input": "--max-input-tokens", "target": "--max-target-tokens"}


def nearest_rank(sorted_values: Sequence[int], p: int) -> int:
    """The p-th percentile by nearest rank: the value at rank ceil(p/100 * n) (1-based) of the sorted values."""
    if not sorted_values:
        return 0
    rank = -(-p * len(sorted_values) // 100)  # ceil in integers: no rounding error at exact ranks
    return sorted_values[max(rank, 1) - 1]


def length_stats(lengths: Iterable[int], limit: int) -> Dict[str, float]:
    """{"p50", "p90", "p99", "max", "count", "over_limit", "over_limit_percent"} of token lengths (incl. </s>);
    over_limit counts the lengths above `limit`; the percent is rounded to 2 decimals."""
    ordered = sorted(lengths)
    stats = {f"p{p}": nearest_rank(ordered, p) for p in PERCENTILES}
    stats["max"] = ordered[-1] if ordered else 0
    stats["count"] = len(ordered)
    stats["over_limit"] = sum(1 for n in ordered if n > limit)
    stats["over_limit_percent"] = round(100.0 * stats["over_limit"] / len(ordered), 2) if ordered else 0.0
    return stats


def encode_pairs(sp: "SentencePieceProcessor", pairs: Iterable[Tuple[str, str]], out_src: Path, out_tgt: Path,
                 prefix: str = "", max_input_tokens: int = 512, max_target_tokens: int = 128,
                 overlong: str = "truncate", unknown: Optional[collections.Counter] = None) -> Tuple[dict, dict]:
    """Write one line of pieces per kept pair to out_src/out_tgt; return (counts, lengths).

    Whitespace is collapsed; a pair with an empty side is skipped; a side longer than its limit (incl.
    </s>) is cut (`overlong` "truncate") or the pair left out ("drop"). counts: read, kept, empty,
    input_truncated, target_truncated, dropped_overlong, {input,target}_tokens (kept, incl. </s>) and
    {input,target}_unk (<unk> pieces among them); lengths: {"input"/"target": length_stats} of the
    non-empty pairs before any cut. `unknown` (a Counter) collects the pieces the vocabulary lacks."""
    c = {"read": 0, "kept": 0, "empty": 0, "input_truncated": 0, "target_truncated": 0, "dropped_overlong": 0,
         "input_tokens": 0, "target_tokens": 0, "input_unk": 0, "target_unk": 0}
    max_in, max_tgt = max_input_tokens - 1, max_target_tokens - 1  # fairseq appends </s>
    count_unk = UnkCounter(sp, examples=unknown is not None)
    full = {"input": [], "target": []}
    with open(out_src, "w", encoding="utf-8") as fs, open(out_tgt, "w", encoding="utf-8") as ft:
        for inp, tgt in pairs:
            c["read"] += 1
            inp, tgt = " ".join(inp.split()), " ".join(tgt.split())
            if not inp or not tgt:
                c["empty"] += 1
                continue
            src_pieces = sp.encode(prefix + inp, out_type=str)
            tgt_pieces = sp.encode(tgt, out_type=str)
            full["input"].append(len(src_pieces) + 1)
            full["target"].append(len(tgt_pieces) + 1)
            over_in, over_tgt = len(src_pieces) > max_in, len(tgt_pieces) > max_tgt
            if (over_in or over_tgt) and overlong == "drop":
                c["dropped_overlong"] += 1
                continue
            c["input_truncated"] += over_in
            c["target_truncated"] += over_tgt
            src_pieces, tgt_pieces = src_pieces[:max_in], tgt_pieces[:max_tgt]
            fs.write(" ".join(src_pieces) + "\n")
            ft.write(" ".join(tgt_pieces) + "\n")
            c["kept"] += 1
            c["input_tokens"] += len(src_pieces) + 1
            c["target_tokens"] += len(tgt_pieces) + 1
            c["input_unk"] += count_unk(src_pieces)
            c["target_unk"] += count_unk(tgt_pieces)
    if unknown is not None:
        unknown.update(count_unk.unknown)
    lengths = {"input": length_stats(full["input"], max_input_tokens),
               "target": length_stats(full["target"], max_target_tokens)}
    return c, lengths


def unk_percents(counts: dict) -> Dict[str, float]:
    """{"input": %, "target": %}: <unk> pieces as % of the split's kept tokens (incl. </s>)."""
    return {side: unk_percent(counts[f"{side}_unk"], counts[f"{side}_tokens"]) for side in SIDES}


def length_table(lengths: Dict[str, dict], unk: Dict[str, dict], limits: Dict[str, int]) -> List[str]:
    """The lines printed under the counts: per split and side the percentiles, the share over the limit
    and the <unk> rate."""
    lines = [f"{'tokens (incl. </s>)':20s} {'p50':>6s} {'p90':>6s} {'p99':>6s} {'max':>6s} {'over limit':>16s} "
             f"{'<unk>':>8s}"]
    for s in lengths:
        for side in SIDES:
            st = lengths[s][side]
            over = f"{st['over_limit_percent']:.1f}% > {limits[side]}"
            lines.append(f"{s + ' ' + side:20s} {st['p50']:6d} {st['p90']:6d} {st['p99']:6d} {st['max']:6d} "
                         f"{over:>16s} {unk[s][side]:7.3f}%")
    return lines


def truncation_warnings(lengths: Dict[str, dict], limits: Dict[str, int], overlong: str) -> List[str]:
    """One line per side (input, target) where some split has more than TRUNCATION_WARN_PERCENT of its
    pairs over the limit: how many, how long, and the option that changes the limit."""
    lines = []
    done = "truncated" if overlong == "truncate" else "left out (--overlong drop)"
    for side in SIDES:
        over = {s: st[side] for s, st in lengths.items() if st[side]["over_limit_percent"] > TRUNCATION_WARN_PERCENT}
        if not over:
            continue
        which = ", ".join(f"{st['over_limit']} of {st['count']} {s} {side}s ({st['over_limit_percent']:.1f}%)"
                          for s, st in over.items())
        first = next(iter(over))
        option = LIMIT_OPTIONS[side]
        lines.append(f"warning: {which} are longer than {option} {limits[side]} and were {done} (p90 of {first}: "
                     f"{over[first]['p90']} tokens); raise {option} to keep more of each {side}")
    return lines


def unk_warning(unk: Dict[str, dict], unknown: Dict[str, int], byte_fallback: bool,
                spm_path: Union[str, Path]) -> Optional[str]:
    """One line when a split's inputs or targets have more than UNK_WARN_PERCENT <unk> tokens: where,
    which characters (`unknown`: piece -> count, most common first), why and the fix; else None."""
    high = [f"{pct:.3f}% of the {s} {side} tokens" for s, sides in unk.items() for side, pct in sides.items()
            if pct > UNK_WARN_PERCENT]
    if not high:
        return None
    examples = " ".join(list(unknown)[:8]) or "?"
    line = (f"warning: {', '.join(high)} are <unk> (more than {UNK_WARN_PERCENT:g}%; "
            f"characters the vocabulary lacks: {examples}): ")
    if byte_fallback:
        return line + f"{spm_path} cannot write them"
    return line + (f"{spm_path} has no byte fallback, so they become <unk> and a reference holding one can never be "
                   f"matched; prepare the pretraining data again with scripts/prepare_pretraining_data.py (byte "
                   f"fallback is its default), pretrain on it, and prepare this data again")
