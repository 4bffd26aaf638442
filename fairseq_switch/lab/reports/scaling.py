"""Scaling report for a sweep over the number of experts (paper Figs. 4 and 5).

    fairseq-hydra-train -m --config-dir config --config-name pretrain_tiny model.moe_expert_count=0,2,8,32
    python scripts/scaling_report.py multirun/2026-11-25/20-10-00

Inputs (any mix):
  * SWEEP_DIR: a Hydra multirun directory; each subdirectory holding `.hydra/` or a `*.log` is a job.
  * a job directory itself (`.hydra/config.yaml` + `hydra_train.log`), or a plain fairseq-train run
    directory / log file (expert count then read from the `moe_expert_count=N` in the logged config).
  * `--run EXPERTS=PATH`: a run directory or log file with its expert count given explicitly.

Runs are told apart by their expert count. Two sparse runs with the same count are allowed when their
configs give different `model.moe_capacity_factor`s (the paper's Table 1 arms); their labels then
carry the factor, e.g. "8 experts (capacity factor 2)".

Training must log JSON (`common.log_format: json`) and validate at least once
(`dataset.validate_interval_updates`). Writes into --out (default: <first path>/report):
nlp_vs_steps.png, nlp_vs_time.png, loss_vs_params.png, report.md, report.json.

Quality is the validation negative log perplexity (natural log, = -NLL per token in nats; higher is
better): the logged `neg_log_perplexity` if present, else -nll_loss * ln 2 (fairseq logs base 2).

Wall-clock time of a validation point: fairseq's valid records carry no time, so it is interpolated
linearly in (num_updates, wall) over the train_inner and end-of-epoch train records (`wall` = seconds
since training started, validation time included; where several records share an update count the
last logged wins). Before the first such record the interpolation runs from (0 updates, 0 s); past the
last one it extrapolates along the last two records (with a single record: at that record's
seconds per update).

Resumed runs: fairseq 0.12 logs `wall` 0 after a mid-epoch resume (and from 0 again after one at an
epoch's end); the plugin fixes that for new runs (checkpoints/resume.py: continue_wall_clock). Where any
run's `wall` goes back as its updates go on, every run of the report is timed instead by its summed
`train_wall` (the seconds of the training steps of each logged train_inner interval, validation and saves left
out; a repeated interval counts once, the last logged), and the report says so.

Gap to dense: at every update where a run and the dense run both validated, the run's neg. log
perplexity minus dense's (positive = the run is ahead), against input tokens seen (updates x
`--tokens-per-update`, by default the dense run's `dataset.max_tokens`); the overtake point is the first
such update with a positive gap, and the report says whether the run stays ahead after it.

`--common-budget` compares runs stopped at different points (a study cut short by time) at the last
update that every run reached: later validation points are dropped before anything is computed.

Speed-ups (Fedus et al. 2021, Sec. 3): q* = the dense (0 experts) run's final validation neg. log perplexity.
Step speed-up of M = dense final update count / the first update at which M reaches q*, linearly
interpolated between the two validation points around the crossing (if M is already at q* at its first
validation, that point is used). Time speed-up: the same in wall-clock seconds. A run that never
reaches q* reports "not reached" (null in report.json).

Speed-up at the end (the paper's Fig. 4 read the other way): the update at which dense first reaches M's
final quality (interpolated as above) / M's final update count; below 1 where M ends behind dense,
"beyond dense" where dense never gets there. The time version divides dense's seconds to that quality by
M's seconds.
"""

import argparse
import json
import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import yaml

from fairseq_switch.logs import json_records, logged_arg, model_params
from . import plots
from .runs import VALIDATE_HINT, collect_paths, read_log, validation_curve
from .tables import fmt, md_table


# ----------------------------------------------------------------------------------------------
# data


@dataclass
class Run:
    experts: int
    path: Path  # run directory (or the log file given directly)
    log: Path
    params: Optional[int]
    updates: List[float]  # validation points, increasing num_updates
    nlp: List[float]  # validation neg. log perplexity (nats) at those points
    loss: List[float]  # validation loss as logged (base 2)
    wall: Optional[List[float]]  # interpolated wall seconds at those points; None without time records
    train_time: Optional[List[float]] = None  # the same from the summed train_wall (see the module docstring)
    wall_goes_back: bool = False  # a resume reset the logged wall (fairseq's defect): use train_time
    capacity_factor: Optional[float] = None  # model.moe_capacity_factor from .hydra/config.yaml, if any
    name: Optional[str] = None  # set by read_runs where the expert count alone is ambiguous

    @property
    def label(self) -> str:
        return self.name or experts_label(self.experts)


def experts_label(n: int) -> str:
    return "dense" if n == 0 else f"{n} experts" if n != 1 else "1 expert"


# ----------------------------------------------------------------------------------------------
# pure functions: interpolation, crossings, speed-ups


def time_points(lines: Sequence[str], key: str = "wall") -> List[Tuple[float, float]]:
    """(num_updates, seconds) from train_inner and end-of-epoch train records, increasing in updates.

    Records are taken in log order; for a repeated update count the last logged one wins. key "wall":
    the logged wall; "train_wall": the running sum of the train_inner intervals' train_wall (an epoch's
    train record holds the epoch's sum, so it is left out).
    """
    pts: Dict[float, float] = {}
    order = []  # records in log order, so that "last logged" is well defined across both tags
    for line in lines:
        order += json_records([line], "train_inner") or (json_records([line], "train") if key == "wall" else [])
    for r in order:
        u, w = r.get("num_updates"), r.get(key)
        if isinstance(u, (int, float)) and isinstance(w, (int, float)):
            pts[float(u)] = float(w)
    out = sorted(pts.items())
    if key == "train_wall":
        total = 0.0
        for i, (u, w) in enumerate(out):
            total += w
            out[i] = (u, total)
    return out


def goes_back(points: Sequence[Tuple[float, float]]) -> bool:
    """Whether the seconds ever decrease as the updates increase (a resume that reset the clock)."""
    return any(b[1] < a[1] for a, b in zip(points, points[1:]))


def interp_wall(points: Sequence[Tuple[float, float]], u: float) -> Optional[float]:
    """Wall seconds at update u from (updates, wall) points (see the module docstring)."""
    if not points:
        return None
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    if u <= xs[0]:
        return ys[0] * u / xs[0] if xs[0] > 0 else ys[0]
    for i in range(1, len(xs)):
        if u <= xs[i]:
            return ys[i - 1] + (u - xs[i - 1]) * (ys[i] - ys[i - 1]) / (xs[i] - xs[i - 1])
    if len(xs) == 1:
        return ys[0] * u / xs[0] if xs[0] > 0 else ys[0]
    slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    return ys[-1] + (u - xs[-1]) * slope


def crossing(xs: Sequence[float], qs: Sequence[float], target: float) -> Optional[float]:
    """First x at which the curve qs(xs) reaches target (qs >= target), linearly interpolated between
    the two points around the crossing; xs[0] if already reached at the first point; None if never."""
    for i, q in enumerate(qs):
        if q >= target:
            if i == 0:
                return float(xs[0])
            q0, q1 = qs[i - 1], q
            frac = (target - q0) / (q1 - q0)
            return xs[i - 1] + frac * (xs[i] - xs[i - 1])
    return None


def speedups(runs: Sequence[Run]) -> Optional[Dict]:
    """Speed-ups over the dense run (the paper's Sec. 3), per run label; None if there is no dense run."""
    dense = next((r for r in runs if r.experts == 0), None)
    if dense is None:
        return None
    q_star = dense.nlp[-1]
    d_updates = dense.updates[-1]
    d_wall = dense.wall[-1] if dense.wall else None
    out = {"q_star": q_star, "dense_updates": d_updates, "dense_wall": d_wall, "runs": {}}
    for r in runs:
        if r is dense:
            u_cross, t_cross = d_updates, d_wall
        else:
            u_cross = crossing(r.updates, r.nlp, q_star)
            t_cross = crossing(r.wall, r.nlp, q_star) if r.wall else None
        u_match = crossing(dense.updates, dense.nlp, r.nlp[-1])
        t_match = crossing(dense.wall, dense.nlp, r.nlp[-1]) if dense.wall else None
        t_final = r.wall[-1] if r.wall else None
        out["runs"][r.label] = {
            "dense_updates_to_match": u_match,
            "end_step_speedup": u_match / r.updates[-1] if u_match is not None else None,
            "end_time_speedup": t_match / t_final if (t_match is not None and t_final) else None,
            "updates_to_reach": u_cross,
            "seconds_to_reach": t_cross,
            "step_speedup": d_updates / u_cross if u_cross else None,
            "time_speedup": d_wall / t_cross if (d_wall is not None and t_cross) else None,
        }
    return out


def gap_curve(run: Run, dense: Run, tokens_per_update: Optional[int]) -> List[Dict]:
    """Run minus dense validation neg. log perplexity at the updates where both validated."""
    dense_at = dict(zip(dense.updates, dense.nlp))
    return [{"num_updates": u, "tokens": u * tokens_per_update if tokens_per_update else None,
             "dense": dense_at[u], "run": q, "gap": q - dense_at[u]}
            for u, q in zip(run.updates, run.nlp) if u in dense_at]


def overtake(gaps: Sequence[Dict]) -> Dict:
    """The first update with a positive gap and whether every later point stays positive."""
    first = next((i for i, g in enumerate(gaps) if g["gap"] > 0), None)
    if first is None:
        return {"first_ahead": None, "stays_ahead": False, "compared_to": gaps[-1]["num_updates"] if gaps else None}
    return {"first_ahead": gaps[first]["num_updates"], "first_ahead_tokens": gaps[first]["tokens"],
            "stays_ahead": all(g["gap"] > 0 for g in gaps[first:]), "compared_to": gaps[-1]["num_updates"]}


def describe_overtake(label: str, ov: Dict, tokens_per_update: Optional[int]) -> str:
    def at(u: float) -> str:
        return f"update {u:g}" + (f" ({u * tokens_per_update / 1e6:.1f}M input tokens)" if tokens_per_update else "")

    if ov["compared_to"] is None:
        return f"{label}: no validation point in common with the dense run."
    if ov["first_ahead"] is None:
        return f"{label} did not overtake dense within the budget ({at(ov['compared_to'])})."
    stays = "and stays ahead to the end" if ov["stays_ahead"] else "but falls behind again later"
    return f"{label} overtakes dense at {at(ov['first_ahead'])} {stays} ({at(ov['compared_to'])})."


def truncate(run: Run, max_update: float) -> Run:
    """The run's validation points up to max_update."""
    keep = [i for i, u in enumerate(run.updates) if u <= max_update]
    def cut(xs: Optional[List[float]]) -> Optional[List[float]]:
        return [xs[i] for i in keep] if xs else None

    return Run(experts=run.experts, path=run.path, log=run.log, params=run.params,
               updates=[run.updates[i] for i in keep], nlp=[run.nlp[i] for i in keep],
               loss=[run.loss[i] for i in keep], wall=cut(run.wall), train_time=cut(run.train_time),
               wall_goes_back=run.wall_goes_back, capacity_factor=run.capacity_factor, name=run.name)


def hydra_section(run_dir: Path, name: str) -> Dict:
    """One top-level section of .hydra/config.yaml ({} without one). Plain YAML: ${...} interpolations
    stay strings."""
    cfg_path = run_dir / ".hydra" / "config.yaml"
    cfg = (yaml.safe_load(cfg_path.read_text()) or {}) if cfg_path.is_file() else {}
    section = cfg.get(name) if isinstance(cfg, dict) else None
    return section if isinstance(section, dict) else {}


def tokens_per_update_from_config(run_dir: Path) -> Optional[int]:
    """dataset.max_tokens from .hydra/config.yaml (span_corruption batches are full: 32 x 128 = 4096)."""
    return _as_int(hydra_section(run_dir, "dataset").get("max_tokens"))


def capacity_factor_from_config(run_dir: Path) -> Optional[float]:
    """model.moe_capacity_factor from .hydra/config.yaml; None without one."""
    v = hydra_section(run_dir, "model").get("moe_capacity_factor")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def expert_count_from_config(run_dir: Path) -> Optional[int]:
    """model.moe_expert_count from .hydra/config.yaml, else from .hydra/overrides.yaml; None if neither."""
    n = _as_int(hydra_section(run_dir, "model").get("moe_expert_count"))
    if n is not None:
        return n
    ov_path = run_dir / ".hydra" / "overrides.yaml"
    if ov_path.is_file():
        for item in yaml.safe_load(ov_path.read_text()) or []:
            m = re.fullmatch(r"\+{0,2}model\.moe_expert_count=(.+)", str(item).strip())
            if m:
                n = _as_int(m.group(1).strip())
                if n is not None:
                    return n
    return None


def _as_int(v: Any) -> Optional[int]:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and re.fullmatch(r"\d+", v.strip()):
        return int(v)
    return None


# ----------------------------------------------------------------------------------------------
# reading runs


def read_run(path: Path, experts: Optional[int] = None) -> Run:
    """One run's validation curve, wall times and parameter count; `experts` read from its config if None."""
    if not path.exists():
        raise SystemExit(f"error: {path} does not exist; pass a Hydra sweep dir, a job dir or --run EXPERTS=PATH")
    log, lines = read_log(path)
    run_dir = path if path.is_dir() else path.parent

    if experts is None:
        experts = expert_count_from_config(run_dir)
    if experts is None:
        experts = _as_int(logged_arg(lines, "moe_expert_count"))
    if experts is None:
        raise SystemExit(
            f"error: cannot tell the expert count of {path}: no model.moe_expert_count in "
            f"{run_dir}/.hydra/config.yaml or overrides.yaml, nor in the config logged in {log}; "
            f"give it explicitly with --run EXPERTS={path}"
        )

    valid = validation_curve(lines)
    if not valid:
        raise SystemExit(f"error: no validation records (with num_updates and nll_loss) in {log}: {VALIDATE_HINT}")
    updates = sorted(valid)
    pts = time_points(lines)
    wall = [interp_wall(pts, u) for u in updates] if pts else None
    train_pts = time_points(lines, "train_wall")
    train_time = [interp_wall(train_pts, u) for u in updates] if train_pts else None
    losses = [valid[u][1].get("loss") for u in updates]
    loss = [v if isinstance(v, (int, float)) else float("nan") for v in losses]
    return Run(
        experts=experts, path=path, log=log, params=model_params(lines), updates=updates,
        nlp=[valid[u][0] for u in updates], loss=loss, wall=wall, train_time=train_time,
        wall_goes_back=goes_back(pts), capacity_factor=capacity_factor_from_config(run_dir),
    )


def choose_clock(runs: Sequence[Run]) -> str:
    """"wall", or "train_wall" where some run's wall goes back: then every run is timed by its summed
    train_wall (one clock for all runs), in place."""
    if not any(r.wall_goes_back for r in runs):
        return "wall"
    for r in runs:
        r.wall = r.train_time
    return "train_wall"


def parse_run_arg(s: str) -> Tuple[int, Path]:
    label, sep, path = s.partition("=")
    n = _as_int(label)
    if not sep or n is None or not path:
        raise SystemExit(f"error: --run {s!r}: expected EXPERTS=PATH with EXPERTS an integer (0 = dense)")
    return n, Path(path)


def read_runs(paths: Sequence[Path], run_args: Sequence[str]) -> List[Run]:
    runs = [read_run(p) for p in collect_paths(paths)]
    runs += [read_run(p, n) for n, p in (parse_run_arg(s) for s in run_args)]
    by_count: Dict[int, List[Run]] = {}
    for r in runs:
        by_count.setdefault(r.experts, []).append(r)
    for n, group in by_count.items():
        if len(group) == 1:
            continue
        factors = [r.capacity_factor for r in group]
        if n == 0 or None in factors or len(set(factors)) < len(factors):
            same = "" if n == 0 else " and the same (or no) capacity factor"
            raise SystemExit(
                f"error: two runs with {n} experts{same}: {group[0].path} and {group[1].path}; "
                "pass only one of them (or give one an explicit --run EXPERTS=PATH)"
            )
        for r in group:  # Table 1's arms: same experts, different capacity factors
            r.name = f"{experts_label(n)} (capacity factor {r.capacity_factor:g})"
    return sorted(runs, key=lambda r: (r.experts, r.capacity_factor or 0.0))


# ----------------------------------------------------------------------------------------------
# report


def summarize(runs: Sequence[Run], tokens_per_update: Optional[int] = None) -> Dict:
    sp = speedups(runs)
    dense = next((r for r in runs if r.experts == 0), None)
    rows = []
    for r in runs:
        wall = r.wall[-1] if r.wall else None
        row = {
            "experts": r.experts,
            "label": r.label,
            "capacity_factor": r.capacity_factor,
            "path": str(r.path),
            "log": str(r.log),
            "params": r.params,
            "updates": r.updates[-1],
            "final_valid_loss": r.loss[-1] if not math.isnan(r.loss[-1]) else None,
            "final_valid_neg_log_perplexity": r.nlp[-1],
            "wall_seconds": wall,
            "sec_per_update": wall / r.updates[-1] if wall is not None and r.updates[-1] else None,
            "curve": [
                {"num_updates": u, "wall": (r.wall[i] if r.wall else None), "neg_log_perplexity": q,
                 "loss": (r.loss[i] if not math.isnan(r.loss[i]) else None)}
                for i, (u, q) in enumerate(zip(r.updates, r.nlp))
            ],
        }
        if sp is not None:
            row.update(sp["runs"][r.label])
        if dense is not None and r is not dense:
            row["gap_to_dense"] = gap_curve(r, dense, tokens_per_update)
            row["overtake"] = overtake(row["gap_to_dense"])
        rows.append(row)
    return {
        "tokens_per_update": tokens_per_update,
        "dense_final_neg_log_perplexity": sp["q_star"] if sp else None,
        "speedup_definition": SPEEDUP_TEXT if sp else None,
        "runs": rows,
    }


SPEEDUP_TEXT = (
    "q* = the dense run's final validation negative log perplexity. Step speed-up = dense final update "
    "count / the first update at which the run reaches q* (linear interpolation between the two "
    "validation points around the crossing); time speed-up = the same in wall-clock seconds (validation "
    "wall times are interpolated from the train_inner/train records' `wall`, which includes validation "
    "time). 'not reached': the run never got to q*. Speed-up at the end = the update (or second) at which "
    "dense first reaches the run's final quality / the run's final update count (seconds); below 1: the run "
    "ends behind dense; 'beyond dense': dense never gets there."
)


def markdown_table(summary: Dict) -> str:
    with_sp = summary["dense_final_neg_log_perplexity"] is not None
    head = ["experts", "params", "updates", "final valid loss", "final valid neg. log ppl", "wall s", "s/update"]
    if with_sp:
        head += ["updates to q*", "step speed-up", "s to q*", "time speed-up", "dense updates to match",
                 "step speed-up at end", "time speed-up at end"]
    rows = []
    for r in summary["runs"]:
        cells = [
            r["label"], fmt(r["params"], ",", "?"), f"{r['updates']:g}", fmt(r["final_valid_loss"]),
            fmt(r["final_valid_neg_log_perplexity"], ".4f"), fmt(r["wall_seconds"], ".0f"),
            fmt(r["sec_per_update"], ".3f"),
        ]
        if with_sp:
            nr = "not reached"
            no_time = nr if r["updates_to_reach"] is None else "no wall time"
            cells += [
                fmt(r["updates_to_reach"], ".1f", nr), fmt(r["step_speedup"], ".2f", nr, "x"),
                fmt(r["seconds_to_reach"], ".0f", no_time), fmt(r["time_speedup"], ".2f", no_time, "x"),
            ]
            beyond = "beyond dense"
            no_end_time = beyond if r["dense_updates_to_match"] is None else "no wall time"
            cells += [
                fmt(r["dense_updates_to_match"], ".1f", beyond), fmt(r["end_step_speedup"], ".2f", beyond, "x"),
                fmt(r["end_time_speedup"], ".2f", no_end_time, "x"),
            ]
        rows.append(cells)
    return "\n".join(md_table(head, rows))


def gap_table(summary: Dict) -> List[str]:
    """Markdown: the gap to dense at every common validation point, then one overtake line per run."""
    sparse = [r for r in summary["runs"] if r.get("gap_to_dense")]
    if not sparse:
        return []
    tpu = summary["tokens_per_update"]
    head = ["update"] + (["input tokens seen"] if tpu else []) + ["dense"]
    head += [h for r in sparse for h in (r["label"], f"gap ({r['label']})")]
    by_update: Dict[float, Dict] = {}
    for r in sparse:
        for g in r["gap_to_dense"]:
            by_update.setdefault(g["num_updates"], {"dense": g["dense"]})[r["label"]] = g
    rows = []
    for u in sorted(by_update):
        cells = [f"{u:g}"] + ([f"{u * tpu / 1e6:.1f}M"] if tpu else []) + [f"{by_update[u]['dense']:.4f}"]
        for r in sparse:
            g = by_update[u].get(r["label"])
            cells += [f"{g['run']:.4f}", f"{g['gap']:+.4f}"] if g else ["", ""]
        rows.append(cells)
    lines = ["## Gap to dense", "", "Validation neg. log perplexity; gap = run minus dense (positive: the run "
             "is ahead).", ""] + md_table(head, rows) + [""]
    lines += [describe_overtake(r["label"], r["overtake"], tpu) for r in sparse] + [""]
    lines += ["![gap to dense vs tokens seen](gap_vs_tokens.png)", ""]
    return lines


def report_markdown(summary: Dict, title: str) -> str:
    parts = [f"# {title}", "", markdown_table(summary), ""]
    if summary.get("common_budget") is not None:
        parts += [f"All runs compared at update {summary['common_budget']:g}, the last one every run reached "
                  f"(--common-budget).", ""]
    if summary.get("clock") == "train_wall":
        parts += [TRAIN_WALL_NOTE, ""]
    q = summary["dense_final_neg_log_perplexity"]
    if q is not None:
        parts += [f"Speed-ups over the dense run (q* = {q:.4f} nats/token):", "", SPEEDUP_TEXT, ""]
    else:
        parts += [NO_DENSE_NOTE, ""]
    parts += [
        "Neg. log perplexity = -(validation NLL per token in nats), higher is better; from the logged "
        "`neg_log_perplexity`, else -nll_loss x ln 2. 'wall s' is the interpolated wall-clock time at the "
        "final validation; 's/update' = wall s / updates. Params: fairseq's logged model parameter count.",
        "",
        "![neg. log perplexity vs updates](nlp_vs_steps.png)",
        "![neg. log perplexity vs wall-clock time](nlp_vs_time.png)",
        "![final neg. log perplexity vs parameters](loss_vs_params.png)",
        "",
    ]
    parts += gap_table(summary)
    return "\n".join(parts)


NO_DENSE_NOTE = "No dense run (0 experts) in the sweep: speed-up columns omitted."
TRAIN_WALL_NOTE = (
    "A run's logged wall goes back after a resume (fairseq 0.12 logs wall 0 after one), so every run's "
    "seconds here are its summed train_wall: the training steps' time, validation and saves left out."
)


# ----------------------------------------------------------------------------------------------
# plots


def plot_all(runs: Sequence[Run], summary: Dict, out: Path, title: str) -> List[str]:
    """The three PNGs of the report (paper Figs. 4 and 5); returns notes on runs left out of a plot."""
    plt = plots.pyplot()
    notes = []
    cmap = plt.get_cmap("viridis")
    sparse = [r for r in runs if r.experts != 0]
    colors = {r.label: cmap(0.1 + 0.75 * i / max(len(sparse) - 1, 1)) for i, r in enumerate(sparse)}
    colors[experts_label(0)] = "black"
    q_star = summary["dense_final_neg_log_perplexity"]
    title = textwrap.fill(title, 60)  # long titles wrap instead of running off the figure

    def curve_plot(fname: str, xlabel: str, xs_of: Callable[[Run], Optional[List[float]]]) -> None:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for r in runs:
            xs = xs_of(r)
            if xs is None:
                notes.append(f"note: {r.label} ({r.path}) has no wall time records; left out of {fname}")
                continue
            ax.plot(xs, r.nlp, marker="o", ms=3, color=colors[r.label], label=r.label)
        if q_star is not None:
            ax.axhline(q_star, color="gray", ls=":", lw=1, label="dense final")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("neg. log perplexity (validation)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend()
        plots.save(fig, out / fname)

    curve_plot("nlp_vs_steps.png", "training step (updates)", lambda r: r.updates)
    curve_plot("nlp_vs_time.png", "training time (seconds)", lambda r: r.wall)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    pts = [(r.params, r.nlp[-1], r) for r in runs if r.params]
    for r in runs:
        if not r.params:
            notes.append(f"note: no parameter count logged for {r.label} ({r.log}); left out of loss_vs_params.png")
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color="gray", lw=1, zorder=1)
        for p, q, r in pts:
            ax.scatter([p], [q], color=colors[r.label], zorder=2)
            ax.annotate(r.label, (p, q), textcoords="offset points", xytext=(5, -12), fontsize=8)
        ax.set_xscale("log")
        ax.margins(x=0.15, y=0.1)
    ax.set_xlabel("model parameters")
    ax.set_ylabel("final neg. log perplexity (validation)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    plots.save(fig, out / "loss_vs_params.png")

    sparse_rows = [r for r in summary["runs"] if r.get("gap_to_dense")]
    if sparse_rows:
        tpu = summary["tokens_per_update"]
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for r in sparse_rows:
            xs = [g["num_updates"] * tpu / 1e6 if tpu else g["num_updates"] for g in r["gap_to_dense"]]
            ax.plot(xs, [g["gap"] for g in r["gap_to_dense"]], marker="o", ms=3, color=colors[r["label"]],
                    label=r["label"])
        ax.axhline(0, color="black", lw=1, label="dense")
        ax.set_xlabel("input tokens seen (millions)" if tpu else "training step (updates)")
        ax.set_ylabel("neg. log perplexity minus dense's (validation)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend()
        plots.save(fig, out / "gap_vs_tokens.png")
    return notes


# ----------------------------------------------------------------------------------------------


def make_report(argv: Optional[Sequence[str]] = None) -> Dict:
    """The command line's work: read the runs, write the report files, print the table; returns the summary."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", type=Path, help="Hydra sweep dirs (multirun/DATE/TIME) or job/run dirs")
    ap.add_argument("--run", action="append", default=[], metavar="EXPERTS=PATH",
                    help="a run dir or log file with its expert count (0 = dense); repeatable")
    ap.add_argument("--out", type=Path, help="output directory (default: <first path>/report)")
    ap.add_argument("--title", default="Switch Transformer scaling", help="plot and report title")
    ap.add_argument("--common-budget", action="store_true",
                    help="compare all runs at the last update every run reached (runs stopped at different points)")
    ap.add_argument("--tokens-per-update", type=int, default=None,
                    help="input tokens per update for the gap table (default: the dense run's dataset.max_tokens)")
    a = ap.parse_args(argv)
    if a.tokens_per_update is not None and a.tokens_per_update <= 0:
        ap.error(f"--tokens-per-update must be > 0, got {a.tokens_per_update}")
    if not a.paths and not a.run:
        ap.error("give at least one sweep/run directory or --run EXPERTS=PATH")

    runs = read_runs(a.paths, a.run)
    if a.out is None:
        first = a.paths[0] if a.paths else parse_run_arg(a.run[0])[1]
        a.out = (first if first.is_dir() else first.parent) / "report"
    a.out.mkdir(parents=True, exist_ok=True)

    budget = None
    if a.common_budget:
        budget = min(r.updates[-1] for r in runs)
        runs = [truncate(r, budget) for r in runs]
    tpu = a.tokens_per_update
    dense = next((r for r in runs if r.experts == 0), None)
    if tpu is None and dense is not None:
        tpu = tokens_per_update_from_config(dense.path if dense.path.is_dir() else dense.path.parent)
    clock = choose_clock(runs)
    summary = summarize(runs, tpu)
    summary["common_budget"] = budget
    summary["clock"] = clock
    summary["title"] = a.title
    notes = plot_all(runs, summary, a.out, a.title)
    (a.out / "report.md").write_text(report_markdown(summary, a.title))
    (a.out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(markdown_table(summary))
    for r in summary["runs"]:
        if "overtake" in r:
            print(describe_overtake(r["label"], r["overtake"], summary["tokens_per_update"]))
    if summary["dense_final_neg_log_perplexity"] is None:
        print(f"note: {NO_DENSE_NOTE}")
    if clock == "train_wall":
        print(f"note: {TRAIN_WALL_NOTE}")
    for n in notes:
        print(n)
    gap_png = "gap_vs_tokens.png," if any("gap_to_dense" in r for r in summary["runs"]) else ""
    print(f"wrote {a.out}/{{nlp_vs_steps.png,nlp_vs_time.png,loss_vs_params.png,{gap_png}report.md,report.json}}")
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    make_report(argv)
    return 0
