"""Number formatting and markdown tables, as every report prints them."""

from typing import Iterable, List, Optional, Sequence


def fmt(value: Optional[float], spec: str = ".3f", none: str = "-", suffix: str = "") -> str:
    """`value` in format()'s `spec`, then `suffix` (a unit: "x", "%"); `none` when there is no value."""
    return none if value is None else format(value, spec) + suffix


def md_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def md_table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: bool = False) -> List[str]:
    """The lines of a markdown table; `numeric` right-aligns every column but the first (labels)."""
    rule = "|---|" + ("---:|" if numeric else "---|") * (len(head) - 1)
    return [md_row(head), rule] + [md_row(r) for r in rows]
