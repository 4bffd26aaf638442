"""Read what fairseq prints with `--log-format json` (`common.log_format: json`).

Metric records come in two line formats, depending on how training was started:

* `fairseq-train`:        `2026-01-01 00:00:00 | INFO | valid | {"epoch": 1, "valid_loss": "7.9", ...}`
* `fairseq-hydra-train`:  `[2026-01-01 00:00:00,123][valid][INFO] - {"epoch": 1, "valid_loss": "7.9", ...}`

The tag (the logger name: train_inner, train, valid, ...) says which record it is, and all but
train_inner prefix their keys with the tag. Both formats give the same parsed dicts.
"""

import json
import re
from typing import Any, Dict, Iterable, List, Optional

_PARAMS_RE = re.compile(r"num\. (model|shared model|expert model) params:\s*([\d,]+)")


def _number(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _marker(tag: str):
    t = re.escape(tag)
    # `| tag | ` (fairseq-train) or `][tag][LEVEL] - ` (Hydra's job logging)
    return re.compile(rf"\| {t} \| |\]\[{t}\]\[[A-Z]+\] - ")


def json_records(lines: Iterable[str], tag: str) -> List[Dict]:
    """The JSON records logged under `tag`, with numbers parsed and the `tag_` key prefix removed."""
    out = []
    marker = _marker(tag)
    prefix = tag + "_"
    for line in lines:
        m = marker.search(line)
        if m is None:
            continue
        try:
            rec = json.loads(line[m.end():])
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append({(k[len(prefix):] if k.startswith(prefix) else k): _number(v) for k, v in rec.items()})
    return out


def param_counts(lines: Iterable[str]) -> Dict[str, int]:
    """Parameter counts from fairseq_cli.train's `num. ... params: N (num. trained: M)` lines.

    Keys present are among `model` (`num. model params`), `shared` and `expert` (`num. shared/expert
    model params`, what fairseq 0.12 prints), plus `total`: `model` if logged, else shared + expert.
    Counts may be written with or without thousands separators. The last value of each wins.
    """
    out: Dict[str, int] = {}
    for line in lines:
        for kind, num in _PARAMS_RE.findall(line):
            out[kind.split()[0]] = int(num.replace(",", ""))
    if "model" in out:
        out["total"] = out["model"]
    elif "shared" in out:
        out["total"] = out["shared"] + out.get("expert", 0)
    return out


def model_params(lines: Iterable[str]) -> Optional[int]:
    """The total model parameter count (see `param_counts`), or None if no such line was logged."""
    return param_counts(lines).get("total")


def logged_arg(lines: Iterable[str], name: str) -> Optional[str]:
    """The value of option `name` in the config fairseq_cli.train logs at start-up, as a string.

    Matches both `name=VALUE` (an argparse Namespace) and `'name': VALUE` (a dict); the first one wins.
    """
    n = re.escape(name)
    pat = re.compile(rf"(?:\b{n}=|'{n}': )([^,)}}\s]+)")
    for line in lines:
        m = pat.search(line)
        if m:
            return m.group(1).strip("'\"")
    return None
