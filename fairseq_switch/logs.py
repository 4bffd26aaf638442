"""Read the metrics fairseq prints with `--log-format json`.

Lines look like `2026-01-01 00:00:00 | INFO | valid | {"epoch": 1, "valid_loss": "7.9", ...}`:
the tag before the JSON says which record it is (train_inner, train, valid, ...), and all but
train_inner prefix their keys with the tag.
"""

import json
from typing import Dict, Iterable, List


def _number(v):
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def json_records(lines: Iterable[str], tag: str) -> List[Dict]:
    """The JSON records logged under `tag`, with numbers parsed and the `tag_` key prefix removed."""
    out = []
    marker = f"| {tag} | "
    prefix = tag + "_"
    for line in lines:
        i = line.find(marker)
        if i < 0:
            continue
        try:
            rec = json.loads(line[i + len(marker):])
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append({(k[len(prefix):] if k.startswith(prefix) else k): _number(v) for k, v in rec.items()})
    return out
