"""(input, target) text pairs for fine-tuning, from jsonl or tsv files (see prepare_downstream_data.py).

A user's XSum/CNNDM/GLUE export works as is: jsonl with any two fields (`--input-field document
--target-field summary`), or tsv with a header row naming the columns (or 0-based column numbers).
"""

import itertools
import json
from contextlib import closing
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

from .corpus import BadUtf8Counts, CorpusError, json_text, read_lines


class PairsError(CorpusError):
    """Bad pair file; the message names the file, the line and the fix."""


def pair_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    for ext in ("jsonl", "json", "tsv"):
        if name.endswith("." + ext):
            return "jsonl" if ext == "json" else ext
    raise PairsError(f"{path}: cannot tell the format from the name; use .jsonl or .tsv, or pass --format")


def read_pairs(path: Union[str, Path], input_field: str = "input", target_field: str = "target", fmt: str = "auto",
               bad_utf8: str = "error", counts: Optional[BadUtf8Counts] = None) -> Iterator[Tuple[str, str]]:
    """Yield (input, target) as found (not stripped, possibly empty): counting is the caller's job.

    Bytes that are not UTF-8: as corpus.read_lines (`bad_utf8`, `counts`)."""
    path = Path(path)
    fmt = pair_format(path, fmt)
    with closing(read_lines(path, bad_utf8, counts)) as f:
        if fmt == "jsonl":
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise PairsError(f"{path}:{n}: not JSON ({e.msg})") from None
                missing = [k for k in (input_field, target_field) if k not in rec]
                if missing:
                    raise PairsError(
                        f"{path}:{n}: no field {', '.join(map(repr, missing))} (fields: {', '.join(sorted(rec))}); "
                        f"name the fields with --input-field/--target-field"
                    )
                fix = "--input-field/--target-field"
                yield tuple(json_text(rec[k], f"{path}:{n}", k, fix, labels=True) for k in (input_field, target_field))
        elif fmt == "tsv":
            first = next(f, "")
            header = first.rstrip("\n").split("\t")
            if input_field in header and target_field in header:
                cols = header.index(input_field), header.index(target_field)
                rows, start = f, 2
            elif input_field.isdigit() and target_field.isdigit():
                cols = int(input_field), int(target_field)
                rows, start = itertools.chain([first], f), 1  # no header: the first line is a pair
            else:
                raise PairsError(
                    f"{path}: the header row {header} has no column {input_field!r}/{target_field!r}; name them "
                    f"with --input-field/--target-field, or give 0-based column numbers for a file without header"
                )
            width = len(header)  # the header's, or without one the first row's
            first_row = "the header has" if start == 2 else "line 1 has"
            for n, line in enumerate(rows, start):
                row = line.rstrip("\n").split("\t")
                if row == [""]:
                    continue
                if len(row) != width:  # a tab inside a field would silently shift the columns after it
                    raise PairsError(
                        f"{path}:{n}: {len(row)} tab-separated fields, but {first_row} {width}: a field holds a tab "
                        f"(tsv has no quoting here); replace tabs inside fields by spaces, or write the pairs as jsonl"
                    )
                if max(cols) >= len(row):
                    raise PairsError(f"{path}:{n}: {len(row)} column(s), need column {max(cols)}")
                yield row[cols[0]], row[cols[1]]
        else:
            raise PairsError(f"unknown pair format {fmt!r}: use jsonl or tsv")
