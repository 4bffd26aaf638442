"""Training runs on disk: the log a run wrote, the jobs of a Hydra sweep, its validation records.

A run is a job directory of fairseq-hydra-train (`.hydra/` + hydra_train.log), a fairseq-train run
directory (train.log or one *.log), or the log file itself. The training must log JSON
(`common.log_format: json`); records are parsed by fairseq_switch/logs.py.
"""

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_switch.logs import json_records

LOG_PREFERENCE = ("hydra_train.log", "train.log")
VALIDATE_HINT = "run at least one validation: set dataset.validate_interval_updates (with common.log_format: json)"


def find_log(path: Path, option: str = "--run EXPERTS=") -> Path:
    """The training log of a run directory (or `path` itself if it is a file). `option` is the
    command-line option the error message tells the user to name one log with."""
    if path.is_file():
        return path
    for name in LOG_PREFERENCE:
        if (path / name).is_file():
            return path / name
    found = sorted(path.glob("*.log"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise SystemExit(
            f"error: no training log in {path} (expected hydra_train.log, train.log or one *.log); "
            "did the job start? Point at the directory fairseq(-hydra)-train wrote its log to."
        )
    raise SystemExit(
        f"error: several logs in {path} ({', '.join(p.name for p in found)}): "
        f"pass the right one as {option}{path}/NAME.log"
    )


def read_log(path: Path, option: str = "--run EXPERTS=") -> Tuple[Path, List[str]]:
    """(log file, its lines) of a run; see `find_log`."""
    log = find_log(path, option)
    return log, log.read_text(errors="replace").splitlines()


def is_job_dir(path: Path) -> bool:
    return (path / ".hydra").is_dir() or any(path.glob("*.log"))


def collect_paths(paths: Sequence[Path]) -> List[Path]:
    """Job dirs / log files named by the positional arguments (sweep dirs expanded one level)."""
    out = []
    for p in paths:
        if not p.exists():
            raise SystemExit(f"error: {p} does not exist; pass a Hydra sweep dir (multirun/DATE/TIME) or a job dir")
        if p.is_file() or is_job_dir(p):
            out.append(p)
            continue
        jobs = [c for c in p.iterdir() if c.is_dir() and is_job_dir(c)]
        if not jobs:
            raise SystemExit(
                f"error: no job directories in {p}: expected subdirectories with .hydra/ and hydra_train.log "
                "(as written by fairseq-hydra-train -m), or pass each run as --run EXPERTS=PATH"
            )
        out += sorted(jobs, key=lambda c: (not c.name.isdigit(), int(c.name) if c.name.isdigit() else 0, c.name))
    return out


def finite(v: object) -> bool:
    """A real number (not a bool, NaN or infinity): what a logged metric must be to count."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def neg_log_perplexity(rec: Dict) -> Optional[float]:
    """Validation neg. log perplexity in nats from a parsed valid record (prefix already removed): the
    logged `neg_log_perplexity`, else -nll_loss * ln 2 (fairseq logs losses in base 2)."""
    v = rec.get("neg_log_perplexity")
    if isinstance(v, (int, float)):
        return float(v)
    nll = rec.get("nll_loss")
    if isinstance(nll, (int, float)):
        return -float(nll) * math.log(2)
    return None


def validation_records(lines: Sequence[str]) -> List[Tuple[float, Dict]]:
    """(num_updates, record) of every JSON `valid` record with a finite update count, in log order."""
    return [(float(r["num_updates"]), r) for r in json_records(lines, "valid") if finite(r.get("num_updates"))]


def validation_curve(lines: Sequence[str]) -> Dict[float, Tuple[float, Dict]]:
    """{num_updates: (neg. log perplexity, record)} over the valid records that give a quality; a repeated
    update count (a resumed run) keeps the last one logged."""
    out = {}
    for u, rec in validation_records(lines):
        q = neg_log_perplexity(rec)
        if q is not None:
            out[u] = (q, rec)
    return out
