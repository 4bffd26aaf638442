"""(input, target) text pairs for fine-tuning, from jsonl or tsv files (see prepare_downstream_data.py).

A user's XSum/CNNDM/GLUE export works as is: jsonl with any two fields (`--input-field document
--target-field summary`), or tsv with a header row naming the columns (or 0-based column numbers).
"""

import gzip
import json
from pathlib import Path
from typing import Iterator, Tuple


class PairsError(ValueError):
    """Bad pair file; the message names the file, the line and the fix."""


def _open(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def pair_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    for ext in ("jsonl", "json", "tsv"):
        if name.endswith("." + ext):
            return "jsonl" if ext == "json" else ext
    raise PairsError(f"{path}: cannot tell the format from the name; use .jsonl or .tsv, or pass --format")


def read_pairs(path, input_field: str = "input", target_field: str = "target",
               fmt: str = "auto") -> Iterator[Tuple[str, str]]:
    """Yield (input, target) as found (not stripped, possibly empty): counting is the caller's job."""
    path = Path(path)
    fmt = pair_format(path, fmt)
    with _open(path) as f:
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
                yield _text(rec[input_field]), _text(rec[target_field])
        elif fmt == "tsv":
            header = f.readline().rstrip("\n").split("\t")
            if input_field in header and target_field in header:
                cols = header.index(input_field), header.index(target_field)
                start = 2
            elif input_field.isdigit() and target_field.isdigit():
                cols = int(input_field), int(target_field)
                f.seek(0)
                start = 1
            else:
                raise PairsError(
                    f"{path}: the header row {header} has no column {input_field!r}/{target_field!r}; name them "
                    f"with --input-field/--target-field, or give 0-based column numbers for a file without header"
                )
            for n, line in enumerate(f, start):
                row = line.rstrip("\n").split("\t")
                if row == [""]:
                    continue
                if max(cols) >= len(row):
                    raise PairsError(f"{path}:{n}: {len(row)} column(s), need column {max(cols)}")
                yield row[cols[0]], row[cols[1]]
        else:
            raise PairsError(f"unknown pair format {fmt!r}: use jsonl or tsv")


def _text(v) -> str:
    if isinstance(v, list):  # e.g. several reference answers: keep the first
        v = v[0] if v else ""
    return "" if v is None else str(v)
