"""Does upstream quality, or a zero-shot probe, predict fine-tuned quality? (Fedus et al. 2021,
Appendix E; the probe-selection paper)

Reads, for each pretraining run of a sweep (a job folder of fairseq-hydra-train, or of fairseq-train
with its log):
  * upstream: validation negative log perplexity at each update, from the training log;
  * probe:    per-point zero-shot rows, <run>/checkpoints/probe/<task>.jsonl (written at each validation
              with --probe, or by scripts/probe_checkpoints.py);
  * fine-tuned: <run>/finetune/<task>.jsonl (scripts/finetune_checkpoints.py), one score per checkpoint.
Each checkpoint that has all three is one point. The report (markdown + JSON + PNG) gives:
  * Pearson and Spearman correlations, with p-values, of upstream vs fine-tuned and probe vs fine-tuned;
  * the appendix E plot (fine-tuned score vs upstream neg. log perplexity, dense and Switch in colours);
  * for each budget B, the probe on B points chosen at random (many draws), by trajectory correlation
    and by polynomial-fit clustering (probe_selection.py): its correlation with the fine-tuned scores,
    how well it ranks the checkpoints (Spearman) and whether it picks the best one (top-1);
  * how well it ranks the runs (models) by their last checkpoint.

    python scripts/upstream_downstream.py runs/ud/pre_e0 runs/ud/pre_e8 --task bbc-topic --out runs/ud/report
    python scripts/upstream_downstream.py runs/ud/pre_e0 runs/ud/pre_e8 --task bbc-topic,spam \\
        --write-selection probe_points.json --budget 64 --method correlation   # for --probe-select

Selection only looks at the probe's own per-point trajectories, never at fine-tuned scores.
"""

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import probe_selection as sel
from . import plots
from .runs import collect_paths
from .scaling import experts_label, read_run
from .tables import md_row, md_table

# "-weighted": each selected point counts as many pool points as its cluster holds (stratified estimate)
METHODS = ("random", "correlation", "polyfit", "correlation-weighted", "polyfit-weighted")


@dataclass
class Point:
    run: str
    experts: int
    update: int
    upstream: float
    finetuned: Optional[float]


@dataclass
class TaskProbe:
    name: str
    kind: str
    split: str
    indices: List[int]
    values: np.ndarray     # [points, checkpoints] confidence in the gold label (classification) or ll
    ll: np.ndarray         # [points, checkpoints] gold target's mean log-likelihood per token
    correct: Optional[np.ndarray]


def _rows(path: Path) -> List[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def probe_file(run: Path, task: str) -> Path:
    for cand in (run / "checkpoints" / "probe" / f"{task}.jsonl", run / "probe" / f"{task}.jsonl"):
        if cand.is_file():
            return cand
    raise SystemExit(f"error: no probe rows for task {task!r} in {run} (looked for checkpoints/probe/{task}.jsonl "
                     f"and probe/{task}.jsonl): pretrain with --probe or run scripts/probe_checkpoints.py on its "
                     f"checkpoints")


def finetune_file(run: Path, task: str) -> Optional[Path]:
    path = run / "finetune" / f"{task}.jsonl"
    return path if path.is_file() else None


FINETUNED_KEYS = {"test": "test split", "valid_best": "peak validation", "mean": "mean of test and peak validation",
                  "valid_nlp": "best validation neg. log perplexity of the gold targets"}


def finetuned_value(row: dict, key: str) -> float:
    """The fine-tuned score of one row: its test score, its peak validation score, or their mean."""
    if key == "mean":
        return 0.5 * (float(row["test"]) + float(row["valid_best"]))
    return float(row[key])


def load_sweep(paths: Sequence[Path], tasks: Sequence[str], finetune_task: Optional[str],
               finetuned_key: str = "test") -> Tuple[List[Point], Dict[str, TaskProbe], List[int]]:
    """Points (checkpoints with upstream, probe and, if any, fine-tuned scores) and per-task trajectories."""
    points: List[Point] = []
    per_task: Dict[str, list] = {t: [] for t in tasks}
    segments = []
    for path in collect_paths(paths):
        run = read_run(path)
        run_dir = path if path.is_dir() else path.parent
        upstream = dict(zip((int(u) for u in run.updates), run.nlp))
        probes = {}
        for t in tasks:
            rows = {}
            for r in _rows(probe_file(run_dir, t)):
                rows[int(r["update"])] = r  # a re-scored update: the last row wins
            probes[t] = rows
        ft = {}
        if finetune_task:
            f = finetune_file(run_dir, finetune_task)
            if f is None:
                raise SystemExit(f"error: no fine-tuned scores in {run_dir}/finetune/{finetune_task}.jsonl; run "
                                 f"scripts/finetune_checkpoints.py on this run's checkpoints "
                                 f"(or leave out --finetune-task)")
            ft = {int(r["update"]): finetuned_value(r, finetuned_key) for r in _rows(f)}
        updates = sorted(u for u in upstream if all(u in probes[t] for t in tasks) and (not ft or u in ft))
        if not updates:
            raise SystemExit(f"error: {run_dir}: no update has upstream, probe{' and fine-tuned' if ft else ''} scores "
                             f"together (upstream at {sorted(upstream)[:5]}..., probe at "
                             f"{sorted(probes[tasks[0]])[:5]}...)")
        segments.append(len(updates))
        for u in updates:
            points.append(Point(str(run_dir.name), run.experts, u, upstream[u], ft.get(u)))
            for t in tasks:
                per_task[t].append(probes[t][u])
    out = {}
    for t, rows in per_task.items():
        first = rows[0]
        for r in rows:
            if r["indices"] != first["indices"] or r.get("split") != first.get("split"):
                raise SystemExit(f"error: task {t}: checkpoints were probed on different points (split "
                                 f"{first.get('split')} vs {r.get('split')}); probe every checkpoint on the same "
                                 f"points (same --probe-split/--probe-points/--seed, or one --probe-select)")
        values = np.array([r["value"] for r in rows], dtype=np.float64).T
        ll = np.array([r["ll"] for r in rows], dtype=np.float64).T
        correct = np.array([r["correct"] for r in rows], dtype=np.float64).T if "correct" in first else None
        out[t] = TaskProbe(t, first["kind"], first.get("split"), first["indices"], values, ll, correct)
    return points, out, segments


def _corr(x: np.ndarray, y: np.ndarray) -> dict:
    try:
        r, p = sel.pearson(x, y)
        rho, q = sel.spearman(x, y)
    except ValueError as e:  # constant series: report why instead of a NaN
        return {"error": str(e)}
    return {"pearson": r, "pearson_p": p, "spearman": rho, "spearman_p": q}


def subset_score(tp: TaskProbe, idx: np.ndarray, score: str, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """The probe's score of each checkpoint on the points `idx` (weighted by `weights` if given): mean
    confidence, accuracy or ll."""
    src = {"acc": tp.correct, "ll": tp.ll}.get(score, tp.values)
    return np.average(src[idx], axis=0, weights=weights)


def select(method: str, tp: TaskProbe, budget: int, seed: int,
           segments: Sequence[int]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(indices, weights or None) chosen by `method` from the task's trajectories."""
    n = tp.values.shape[0]
    weighted = method.endswith("-weighted")
    base = method[: -len("-weighted")] if weighted else method
    if base == "random":
        return sel.select_random(n, budget, seed), None
    if base == "correlation":
        out = sel.select_by_correlation(tp.values, budget, with_weights=weighted)
    else:
        degree = max(0, min(2, min(segments) - 1))
        out = sel.select_by_polyfit(tp.values, budget, seed, degree=degree, segments=segments, with_weights=weighted)
    return out if weighted else (out, None)


def evaluate_budget(tp: TaskProbe, target: np.ndarray, budget: int, segments: Sequence[int], score: str, draws: int,
                    full: np.ndarray) -> Dict[str, dict]:
    """Per method: correlation with `target` (fine-tuned), ranking Spearman, top-1, fidelity to the full pool."""
    out = {}
    for method in METHODS:
        seeds = range(draws) if method == "random" else range(5) if method.startswith("polyfit") else range(1)
        rs, rhos, top1, fidelity = [], [], [], []
        for s in seeds:
            idx, w = select(method, tp, budget, s, segments)
            x = subset_score(tp, idx, score, w)
            c = _corr(x, target)
            rs.append(c.get("pearson", np.nan))
            rhos.append(c.get("spearman", np.nan))
            top1.append(sel.top1_agreement(x, target))
            f = _corr(x, full)
            fidelity.append(f.get("pearson", np.nan))
        rs, rhos = np.array(rs), np.array(rhos)
        out[method] = {"draws": len(rs), "pearson": float(np.nanmean(rs)), "pearson_sd": float(np.nanstd(rs)),
                       "spearman": float(np.nanmean(rhos)), "spearman_sd": float(np.nanstd(rhos)),
                       "top1": float(np.mean(top1)), "fidelity": float(np.nanmean(fidelity)),
                       "undefined": int(np.isnan(rs).sum())}
        if method == "random":
            out[method]["spearman_all"] = rhos.tolist()
    for method in METHODS[1:]:
        rnd = np.array(out["random"]["spearman_all"])
        rnd = rnd[~np.isnan(rnd)]
        if rnd.size:  # where the selected points' Spearman falls among the random draws'
            out[method]["random_below"] = float(np.mean(rnd < out[method]["spearman"]))
    return out


def model_ranking(points: List[Point], probe_score: np.ndarray) -> Optional[dict]:
    """Rank the runs by their last checkpoint: probe vs fine-tuned."""
    last = {}
    for i, p in enumerate(points):
        if p.run not in last or p.update > points[last[p.run]].update:
            last[p.run] = i
    if len(last) < 2:
        return None
    idx = list(last.values())
    pred, true = probe_score[idx], np.array([points[i].finetuned for i in idx])
    out = {"runs": [points[i].run for i in idx], "probe": pred.tolist(), "finetuned": true.tolist(),
           "top1": sel.top1_agreement(pred, true)}
    try:
        out["spearman"] = sel.ranking_spearman(pred, true)
    except ValueError as e:
        out["spearman"] = None
        out["note"] = str(e)
    return out


def plot(points: List[Point], probe_score: np.ndarray, task: str, budgets_result: dict, out: Path,
         finetuned_key: str = "test") -> List[Path]:
    plt = plots.pyplot()
    written = []
    runs = sorted({(p.experts, p.run) for p in points})
    sparse = iter(["tab:blue", "tab:purple", "tab:cyan", "navy", "tab:pink"])
    colours = {run: "tab:green" if experts == 0 else next(sparse, None) for experts, run in runs}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for experts, run in runs:
        sub = [(i, p) for i, p in enumerate(points) if p.run == run]
        c = colours[run]
        label = f"{experts_label(experts)} ({run})"
        xs = [p.upstream for _, p in sub]
        ys = [p.finetuned for _, p in sub]
        axes[0].plot(xs, ys, "o-", label=label, color=c, alpha=0.8)
        axes[1].plot([probe_score[i] for i, _ in sub], ys, "o-", label=label, color=c, alpha=0.8)
        for (_, p), x, y in zip(sub, xs, ys):
            axes[0].annotate(str(p.update), (x, y), fontsize=6, alpha=0.6)
    axes[0].set_xlabel("upstream neg. log perplexity (valid)")
    axes[0].set_ylabel(f"fine-tuned {task}: {FINETUNED_KEYS[finetuned_key]}", fontsize=8)
    axes[0].set_title("Upstream vs downstream (appendix E, Fig. 13)")
    axes[1].set_xlabel("zero-shot probe score (all pool points)")
    axes[1].set_title("Zero-shot probe vs downstream")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    written.append(plots.save(fig, out / f"upstream_downstream_{task}.png"))

    fig, ax = plt.subplots(figsize=(5, 4))
    budgets = sorted(budgets_result)
    for method, style in zip(METHODS, ("o-", "s-", "^-", "s--", "^--")):
        m = [budgets_result[b][method]["spearman"] for b in budgets]
        ax.plot(budgets, m, style, label=method)
        if method == "random":
            sd = np.array([budgets_result[b][method]["spearman_sd"] for b in budgets])
            ax.fill_between(budgets, np.array(m) - sd, np.array(m) + sd, alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("probe budget (points)")
    ax.set_ylabel("Spearman with fine-tuned score")
    ax.set_title(f"Point selection ({task})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    written.append(plots.save(fig, out / f"selection_{task}.png"))
    return written


def _fmt_corr(c: dict) -> str:
    if "error" in c:
        return f"undefined ({c['error']})"
    return (f"Pearson {c['pearson']:+.3f} (p={c['pearson_p']:.2g}), "
            f"Spearman {c['spearman']:+.3f} (p={c['spearman_p']:.2g})")


def report(points: List[Point], probes: Dict[str, TaskProbe], segments: Sequence[int], task: str, score: str,
           budgets: Sequence[int], draws: int) -> dict:
    """Correlations, point-selection results per budget and model ranking of one task (see the module docstring)."""
    tp = probes[task]
    target = np.array([p.finetuned for p in points], dtype=np.float64)
    upstream = np.array([p.upstream for p in points])
    full = subset_score(tp, np.arange(tp.values.shape[0]), score)
    res = {"task": task, "score": score, "points": [p.__dict__ for p in points], "pool": tp.values.shape[0],
           "probe_full": full.tolist(),
           "upstream_vs_finetuned": _corr(upstream, target),
           "probe_vs_finetuned": _corr(full, target),
           "upstream_vs_finetuned_by_run": {}, "budgets": {}}
    for run in dict.fromkeys(p.run for p in points):
        mask = np.array([p.run == run for p in points])
        if mask.sum() >= 3:
            res["upstream_vs_finetuned_by_run"][run] = _corr(upstream[mask], target[mask])
    res["probe_top1_checkpoint"] = sel.top1_agreement(full, target)
    res["models"] = model_ranking(points, full)
    for b in budgets:
        if b > tp.values.shape[0]:
            continue
        res["budgets"][b] = evaluate_budget(tp, target, b, segments, score, draws, full)
    # the probe-selection paper's Objective 2: how related the tasks are, and what that does to the budget
    if len(probes) > 1:
        trajs = {t: p.values for t, p in probes.items()}
        res["task_relatedness"] = {"tasks": list(trajs), "matrix": sel.task_relatedness(trajs).tolist(),
                                   "split": {b: sel.split_budget(trajs, b) for b in budgets
                                             if len(trajs) <= b <= sum(v.shape[0] for v in trajs.values())}}
    return res


def markdown(res: dict) -> str:
    lines = [f"# Upstream, zero-shot probe and fine-tuned quality: {res['task']}", "",
             f"{len(res['points'])} checkpoints; probe pool {res['pool']} points; probe score = "
             f"{'mean confidence in the gold label' if res['score'] == 'conf' else res['score']}; fine-tuned = "
             f"{FINETUNED_KEYS[res.get('finetuned_key', 'test')]}.", ""]
    lines += md_table(["run", "experts", "update", "upstream neg. log ppl", "probe (all points)", "fine-tuned"],
                      [[p["run"], str(p["experts"]), str(p["update"]), f"{p['upstream']:.4f}", f"{s:.4f}",
                        f"{p['finetuned']:.2f}"] for p, s in zip(res["points"], res["probe_full"])])
    lines += ["", "## Correlations with the fine-tuned score (all checkpoints)", "",
              f"- upstream neg. log perplexity: {_fmt_corr(res['upstream_vs_finetuned'])}",
              f"- zero-shot probe, all points: {_fmt_corr(res['probe_vs_finetuned'])}; picks the best checkpoint: "
              f"{'yes' if res['probe_top1_checkpoint'] else 'no'}"]
    for run, c in res["upstream_vs_finetuned_by_run"].items():
        lines.append(f"- upstream, {run} only: {_fmt_corr(c)}")
    if res["models"]:
        m = res["models"]
        lines.append(f"- models (last checkpoint of each run): probe picks the best fine-tuned run: "
                     f"{'yes' if m['top1'] else 'no'}; ranking Spearman "
                     f"{m['spearman'] if m['spearman'] is None else format(m['spearman'], '+.2f')}")
    if "task_relatedness" in res:
        rel = res["task_relatedness"]
        lines += ["", "## Task relatedness (correlation of mean probe trajectories) and budget split", "",
                  "| |" + md_row(rel["tasks"])[1:], "|---" * (len(rel["tasks"]) + 1) + "|"]
        lines += [md_row([t] + [f"{v:+.2f}" for v in row]) for t, row in zip(rel["tasks"], rel["matrix"])]
        for b, split in rel["split"].items():
            lines.append(f"\nbudget {b}: " + ", ".join(f"{t} {n}" for t, n in split.items()))
    lines += ["", "## Point selection at equal budget", "",
              "Spearman/Pearson: probe on the selected points vs fine-tuned score, across checkpoints "
              "(random: mean ± sd over draws). Top-1: share of selections whose best checkpoint is the best "
              "fine-tuned one. Fidelity: Pearson with the probe on all points. Beats random: share of random "
              "draws with a lower Spearman.", ""]
    rows = []
    for b, per in res["budgets"].items():
        for method in METHODS:
            r = per[method]
            sd = f" ± {r['spearman_sd']:.3f}" if r["draws"] > 1 else ""
            beats = f"{100 * r['random_below']:.0f}%" if "random_below" in r else "-"
            rows.append([str(b), method, f"{r['spearman']:+.3f}{sd}", f"{r['pearson']:+.3f}", f"{r['top1']:.2f}",
                         f"{r['fidelity']:.3f}", beats])
    lines += md_table(["budget", "method", "Spearman", "Pearson", "top-1", "fidelity", "beats random"], rows)
    return "\n".join(lines) + "\n"


def write_selection(probes: Dict[str, TaskProbe], segments: Sequence[int], budget: int, method: str,
                    seed: int) -> dict:
    """{task: {"split", "indices"}} for --probe-select; the budget is split across tasks by relatedness."""
    trajs = {t: tp.values for t, tp in probes.items()}
    share = (sel.split_budget(trajs, budget) if len(trajs) > 1
             else {t: min(budget, v.shape[0]) for t, v in trajs.items()})
    out = {}
    for t, tp in probes.items():
        idx, w = select(method, tp, share[t], seed, segments)
        out[t] = {"split": tp.split, "indices": [int(tp.indices[i]) for i in idx], "method": method,
                  "budget": share[t]}
        if w is not None:
            out[t]["weights"] = [float(x) for x in w]
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="pretraining job folders (or a sweep folder holding them)")
    p.add_argument("--task", required=True, help="probe task name(s), comma-separated (the <task>.jsonl names)")
    p.add_argument("--finetune-task", default=None, help="fine-tuned scores to predict (default: the first --task)")
    p.add_argument("--finetuned", choices=tuple(FINETUNED_KEYS), default="test",
                   help="fine-tuned score to predict: test split (default), peak validation, their mean (twice the "
                        "examples, so less sampling noise), or the best validation neg. log perplexity of the gold "
                        "targets (continuous: the least noisy)")
    p.add_argument("--score", choices=("conf", "acc", "ll"), default="conf",
                   help="probe score of a checkpoint: mean gold-label confidence (default), accuracy, or mean ll")
    p.add_argument("--budgets", default="16,64,256", help="probe budgets to compare (default 16,64,256)")
    p.add_argument("--draws", type=int, default=200, help="random selections per budget (default 200)")
    p.add_argument("--out", type=Path, default=None, help="folder for report.md, report.json and PNGs")
    p.add_argument("--write-selection", type=Path, default=None,
                   help="write the selected points as JSON for the task option --probe-select, and stop")
    p.add_argument("--budget", type=int, default=64, help="with --write-selection: points in all (split across tasks)")
    p.add_argument("--method", choices=METHODS, default="correlation", help="with --write-selection")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    if not tasks:
        raise SystemExit("error: --task names no task")
    try:
        budgets = sorted({int(b) for b in args.budgets.split(",") if b.strip()})
    except ValueError:
        raise SystemExit(f"error: --budgets {args.budgets!r}: expected integers like 16,64,256") from None

    if args.write_selection:
        points, probes, segments = load_sweep(args.runs, tasks, None)
        if len(points) < 2:
            raise SystemExit("error: selection needs per-point trajectories over at least 2 checkpoints")
        chosen = write_selection(probes, segments, args.budget, args.method, args.seed)
        args.write_selection.parent.mkdir(parents=True, exist_ok=True)
        args.write_selection.write_text(json.dumps(chosen, indent=1) + "\n")
        print(f"wrote {args.write_selection}: "
              + ", ".join(f"{t} {len(v['indices'])} points" for t, v in chosen.items()))
        return 0

    ft_task = args.finetune_task or tasks[0]
    points, probes, segments = load_sweep(args.runs, tasks, ft_task, args.finetuned)
    if len(points) < 3:
        raise SystemExit(f"error: {len(points)} checkpoint(s) with all scores; correlations need at least 3")
    if args.score == "acc" and probes[tasks[0]].correct is None:
        raise SystemExit(f"error: --score acc needs a classification task; {tasks[0]} is {probes[tasks[0]].kind}")
    res = report(points, probes, segments, tasks[0], args.score, budgets, args.draws)
    res["finetuned_key"] = args.finetuned
    text = markdown(res)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.md").write_text(text)
        slim = json.loads(json.dumps(res, default=float))
        for b in slim["budgets"].values():
            b["random"].pop("spearman_all", None)
        (args.out / "report.json").write_text(json.dumps(slim, indent=1) + "\n")
        for path in plot(points, np.array(res["probe_full"]), tasks[0], res["budgets"], args.out, args.finetuned):
            print(f"wrote {path}")
    return 0
