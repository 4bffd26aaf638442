"""Table 6/7-style rows for a distillation sweep (Fedus et al. 2021, Sec. 4.2, Tables 6-8).

    python scripts/distill_report.py runs/distill_t32 --teacher runs/scaling_full/3_experts32
    python scripts/distill_report.py --run "no distillation=RUN_A" --run "+ init=RUN_B" --teacher T --baseline RUN_A

Each run is a job dir of fairseq(-hydra)-train with validation records in its JSON log; a sweep dir
(fairseq-hydra-train -m --config-name distill_tiny distill=none,init,mix) is expanded into its jobs,
each labelled by its `distill=` choice. Quality is the negative log perplexity at the last
validation (or at --at-update). For every student:

    quality gain preserved = (student - baseline) / (teacher - baseline)     (Sec. 4.2)
    compression            = 1 - student params / teacher params

The baseline is the dense model trained without a teacher: the `distill=none` job, or --baseline.
Teacher and students must be validated on the same data.
"""

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from fairseq_switch.logs import model_params
from .runs import collect_paths, read_log, validation_curve
from .tables import fmt, md_table

LABELS = {
    "none": "dense baseline (no distillation)",
    "init": "+ teacher's non-expert weights as init",
    "mix": "+ init, 0.75 hard / 0.25 soft loss mix",
    "kd": "0.75 hard / 0.25 soft loss mix, random init",
}


@dataclass
class Row:
    label: str
    path: str
    params: Optional[int]
    updates: float
    nlp: float
    preserved: Optional[float] = None  # % of the teacher's gain over the baseline
    compression: Optional[float] = None  # % fewer parameters than the teacher


def quality(path: Path, at_update: Optional[float] = None) -> Tuple[float, float, Optional[int]]:
    """(updates, negative log perplexity, params) of a run: its last validation, or the one at `at_update`."""
    if not path.exists():
        raise SystemExit(f"error: {path} does not exist; pass a job dir (with its training log) or a sweep dir")
    log, lines = read_log(path)
    points = {u: q for u, (q, _) in validation_curve(lines).items()}
    if not points:
        raise SystemExit(f"error: no validation records (num_updates, nll_loss) in {log}: train with validation on "
                         f"(dataset.validate_interval_updates) and common.log_format=json")
    if at_update is None:
        u = max(points)
    elif float(at_update) in points:
        u = float(at_update)
    else:
        have = ", ".join(str(int(x)) for x in sorted(points))
        raise SystemExit(f"error: {log} has no validation at update {at_update:g}; it has {have}")
    return u, points[u], model_params(lines)


def choice_of(job: Path) -> str:
    """The job's `distill=` choice (Hydra overrides), else its directory name without the job number."""
    overrides = job / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        for line in overrides.read_text().splitlines():
            item = line.strip().lstrip("-").strip().strip("'\"")
            if item.startswith("distill="):
                return item.split("=", 1)[1]
    name = job.name
    return name.split("_", 1)[1] if "_" in name and name.split("_", 1)[0].isdigit() else name


def build_rows(students: List[Tuple[str, Path]], teacher: Path, baseline: Optional[Path],
               at_update: Optional[float]) -> Tuple[Row, Row, List[Row], float]:
    """(teacher row, baseline row, student rows, teacher's gain over the baseline) with the preserved
    gain and the compression filled in."""
    if not students:
        raise SystemExit("error: no student runs: pass a sweep dir, job dirs, or --run LABEL=PATH")
    rows = []
    for label, path in students:
        u, q, n = quality(path, at_update)
        rows.append(Row(LABELS.get(label, label), str(path), n, u, q))
    base_row = None
    if baseline is not None:
        u, q, n = quality(baseline, at_update)
        base_row = Row("dense baseline (no distillation)", str(baseline), n, u, q)
        rows = [r for r in rows if Path(r.path).resolve() != baseline.resolve()]
    else:
        found = [r for (label, _), r in zip(students, rows) if label == "none"]
        if not found:
            raise SystemExit("error: no baseline: the sweep has no distill=none job; pass --baseline RUN (the dense "
                             "model trained without a teacher)")
        base_row = found[0]
        rows = [r for r in rows if r is not base_row]
    tu, tq, tn = quality(teacher)
    teacher_row = Row("teacher (Switch)", str(teacher), tn, tu, tq)
    gain = teacher_row.nlp - base_row.nlp
    for r in [base_row] + rows:
        if gain > 0:
            r.preserved = 100.0 * (r.nlp - base_row.nlp) / gain
        if r.params and teacher_row.params:
            r.compression = 100.0 * (1.0 - r.params / teacher_row.params)
    return teacher_row, base_row, rows, gain


def markdown(teacher_row: Row, base_row: Row, rows: List[Row], gain: float) -> str:
    head = ["Technique", "Parameters", "Updates", "Neg. log perp.", "Quality gain preserved", "Compression"]
    cells = [[teacher_row.label, fmt(teacher_row.params, ","), f"{teacher_row.updates:g}", f"{teacher_row.nlp:.4f}",
              "100%", "-"]]
    cells += [[r.label, fmt(r.params, ","), f"{r.updates:g}", f"{r.nlp:.4f}", fmt(r.preserved, ".0f", suffix="%"),
               fmt(r.compression, ".0f", suffix="%")] for r in [base_row] + rows]
    out = md_table(head, cells, numeric=True)
    if gain <= 0:
        out.append("")
        out.append(f"The teacher ({teacher_row.nlp:.4f}) is not better than the baseline ({base_row.nlp:.4f}): "
                   "there is no gain to preserve, so that column is left empty.")
    return "\n".join(out) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("paths", nargs="*", type=Path, help="sweep dirs or student job dirs")
    p.add_argument("--run", action="append", default=[], metavar="LABEL=PATH", help="a student run with its row label")
    p.add_argument("--teacher", type=Path, required=True, help="the teacher's training run (job dir or log)")
    p.add_argument("--baseline", type=Path, help="the dense run without a teacher (default: the distill=none job)")
    p.add_argument("--at-update", type=float,
                   help="compare students at this update (default: each one's last validation)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.add_argument("--out", type=Path, help="also write the markdown table here")
    args = p.parse_args(argv)
    students = [(choice_of(j), j) for j in collect_paths(args.paths)] if args.paths else []
    for s in args.run:
        label, sep, path = s.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"error: --run {s!r}: expected LABEL=PATH")
        students.append((label, Path(path)))
    teacher_row, base_row, rows, gain = build_rows(students, args.teacher, args.baseline, args.at_update)
    if args.json:
        print(json.dumps({"teacher": asdict(teacher_row), "baseline": asdict(base_row),
                          "students": [asdict(r) for r in rows], "teacher_gain": gain}, indent=1))
    else:
        table = markdown(teacher_row, base_row, rows, gain)
        print(table, end="")
        if args.out:
            args.out.write_text(table)
    return 0
