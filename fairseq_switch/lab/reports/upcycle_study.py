"""The upcycling study's report (scripts/run_upcycle_study.sh, docs/upcycling.md): a dense continuation and
upcycled starts, trained on the same batches from one dense checkpoint, compared by validation quality.

    python -m fairseq_switch.lab.reports.upcycle_study dense=runs/upcycle/dense plain=runs/upcycle/plain \\
        gate=runs/upcycle/gate --out runs/upcycle/report

The first NAME=RUN is the reference (the dense continuation). Writes report.md, report.json and
curves.png: validation neg. log perplexity (nats/token) at each validation (update 0: the starting
checkpoint, from validate0.log in the run folder, written by fairseq-validate), the gap to the
reference, the first training interval's loss (the jump an upcycled start makes), the dropped-token
fraction early and late, the time per update, and the first validation from which a run stays ahead
of the reference, if any.
"""

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional

from fairseq_switch.logs import json_records

from .plots import pyplot, save
from .runs import neg_log_perplexity, read_log, validation_curve
from .tables import fmt, md_table


def summarize(lines: List[str], start: Optional[Path] = None) -> Dict:
    """One run's numbers; `start`: fairseq-validate's log of its starting checkpoint (update 0)."""
    curve = {int(u): q for u, (q, _) in validation_curve(lines).items()}
    if start is not None and start.is_file():
        first = [neg_log_perplexity(r) for r in json_records(start.read_text().splitlines(), "valid")]
        if first and first[0] is not None:
            curve[0] = first[0]
    inner = json_records(lines, "train_inner")
    walls = [r["train_wall"] for r in inner if isinstance(r.get("train_wall"), float)]
    updates = [r["num_updates"] for r in inner if isinstance(r.get("num_updates"), float)]
    dropped = [(int(r["num_updates"]), r["moe_dropped"]) for r in inner if isinstance(r.get("moe_dropped"), float)]
    first = inner[0] if inner else {}
    return {
        "curve": curve,
        "first_interval": {"updates": first.get("num_updates"), "loss": first.get("loss")},
        # train_wall is the wall time of each logging interval; the sum over the run, per update
        "seconds_per_update": (sum(walls) / updates[-1]) if walls and updates else None,
        "dropped_first": dropped[0][1] if dropped else None,
        "dropped_last": dropped[-1][1] if dropped else None,
    }


def stays_ahead_from(run: Dict[int, float], ref: Dict[int, float]) -> Optional[int]:
    """The first shared validation update from which `run` is above `ref` at every later one."""
    shared = sorted(set(run) & set(ref))
    start = None
    for u in shared:
        if run[u] > ref[u]:
            start = u if start is None else start
        else:
            start = None
    return start


def report(runs: Dict[str, Path], out: Path, title: str) -> Dict:
    data = {name: summarize(read_log(path, "NAME=")[1], path / "validate0.log" if path.is_dir() else None)
            for name, path in runs.items()}
    ref_name = next(iter(runs))
    ref = data[ref_name]["curve"]
    updates = sorted(set().union(*(d["curve"] for d in data.values())))
    for name, d in data.items():
        d["gap_to_reference"] = {u: d["curve"][u] - ref[u] for u in updates if u in d["curve"] and u in ref}
        d["ahead_of_reference_from"] = None if name == ref_name else stays_ahead_from(d["curve"], ref)
    lines = [f"# {title}", "",
             f"Validation neg. log perplexity (nats/token, higher is better); reference: {ref_name}.", ""]
    head = ["run", *[f"upd {u}" for u in updates], f"gap at {updates[-1] if updates else '-'}",
            "first-interval loss", "dropped (first / last log)", "s/update", "ahead from"]
    rows = []
    for name, d in data.items():
        last_gap = d["gap_to_reference"].get(updates[-1]) if updates else None
        dropped = f"{fmt(d['dropped_first'], '.2f')} / {fmt(d['dropped_last'], '.2f')}"
        rows.append([name, *[fmt(d["curve"].get(u)) for u in updates], fmt(last_gap, "+.3f"),
                     fmt(d["first_interval"]["loss"]), dropped,
                     fmt(d["seconds_per_update"], ".2f"), str(d["ahead_of_reference_from"] or "-")])
    lines += md_table(head, rows) + [""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps({"runs": {k: str(v) for k, v in runs.items()}, "data": data},
                                                indent=1) + "\n")
    if updates:
        plt = pyplot()
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        for name, d in data.items():
            us = sorted(d["curve"])
            a.plot(us, [d["curve"][u] for u in us], marker="o", label=name)
            gs = sorted(d["gap_to_reference"])
            b.plot(gs, [d["gap_to_reference"][u] for u in gs], marker="o", label=name)
        fig.suptitle(title, fontsize=11)  # over both panels: a long title would run off the left one
        a.set(xlabel="updates after the dense checkpoint", ylabel="valid neg. log perplexity (nats)",
              title="validation curves")
        b.axhline(0, color="grey", lw=0.5)
        b.set(xlabel="updates after the dense checkpoint", ylabel=f"minus {ref_name}", title="gap to the reference")
        a.legend()
        save(fig, out / "curves.png")
    print("\n".join(lines))
    return data


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="NAME=RUN", help="run folders (hydra_train.log) or logs; the first "
                                                                "is the reference")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--title", default="Upcycled starts vs the dense continuation")
    a = ap.parse_args(argv)
    runs = {}
    for spec in a.runs:
        name, sep, path = spec.partition("=")
        if not sep or not path:
            raise SystemExit(f"error: {spec!r} is not NAME=RUN")
        runs[name] = Path(path)
    report(runs, a.out, a.title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
