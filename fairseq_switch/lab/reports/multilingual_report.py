"""Per-language dense vs Switch report for multilingual pretraining (paper Sec. 4.3, Figs. 7 and 8).

    python scripts/multilingual_report.py --dense runs/ml_dense --switch runs/ml_switch --out runs/ml_report

RUN (--dense, --switch): a job dir of fairseq(-hydra)-train (hydra_train.log or train.log in it) or the
log file itself. Training must log JSON (`common.log_format: json`) and validate with the multilingual
span-corruption task, whose validation records carry one `valid_<lang>_neg_log_perplexity` per language
next to the all-language `valid_neg_log_perplexity` (language codes are whatever precedes
`_neg_log_perplexity`, e.g. `zh-cn`; fairseq's own `valid_best_...` keys are not languages).

Writes into --out: per_language.png (Fig. 7: final neg. log perplexity per language, dense vs Switch,
languages sorted by the dense run's quality), speedup_hist.png (Fig. 8: histogram of per-language step
speed-ups) and report.md; prints the report (or, with --json, the numbers as JSON) on stdout.

Per language (only the languages both runs validate on; the others are listed and warned about):
  * final = the language's neg. log perplexity at the run's last validation that logged it (nats/token,
    higher is better); difference = Switch final - dense final (> 0: Switch better, "improved").
  * step speed-up = dense final update / the first update at which the Switch run reaches the dense
    run's final quality for that language, linearly interpolated between the two validations around the
    crossing (`crossing()` of fairseq_switch/lab/reports/scaling.py; the Switch run's first validation if already
    there).
    A language the Switch run never reaches has no speed-up: it is listed as "not reached", left out of
    the mean and median, and counted as below 4x in the share of languages at 4x or more.
The all-language row is computed the same way from the plain `neg_log_perplexity` (else -nll_loss x ln 2).
If the runs stop at different update counts the report warns: speed-ups are measured at the dense run's
final update, whatever the Switch run did later.
"""

import argparse
import json
import math
import re
import statistics
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_switch.logs import model_params
from . import plots
from .runs import VALIDATE_HINT, finite, neg_log_perplexity, read_log, validation_records
from .scaling import crossing
from .tables import fmt, md_table

LANG_KEY = re.compile(r"(?P<lang>.+)_neg_log_perplexity")
THRESHOLD = 4.0  # the paper's "91% of languages at 4x or more"
EPS = 1e-9  # speed-ups within rounding of 4x count as 4x
PER_LANGUAGE_HINT = (
    "train with the multilingual span-corruption task (task: multilingual_span_corruption), whose "
    "validation logs valid_<lang>_neg_log_perplexity for every language, with common.log_format: json"
)

Curve = Tuple[List[float], List[float]]  # (num_updates increasing, neg. log perplexity)


@dataclass
class Run:
    flag: str  # "--dense" / "--switch"
    path: Path
    log: Path
    params: Optional[int]
    final_update: float  # last validation's num_updates
    overall: Optional[Curve]  # all-language curve; None if no record carries it
    langs: Dict[str, Curve]


# ----------------------------------------------------------------------------------------------
# reading


def language_of(key: str) -> Optional[str]:
    """The language code of a (prefix-stripped) valid record key, or None if the key is not per-language."""
    m = LANG_KEY.fullmatch(key)
    if m is None:
        return None
    lang = m.group("lang")
    if lang == "best" or lang.startswith("best_"):  # fairseq's valid_best_<checkpoint metric>
        return None
    return lang


def _curve(points: Dict[float, float]) -> Curve:
    us = sorted(points)
    return us, [points[u] for u in us]


def read_run(path: Path, flag: str) -> Run:
    """The per-language and all-language validation curves of the run given as option `flag`."""
    if not path.exists():
        raise SystemExit(
            f"error: {flag} {path}: does not exist; pass the run's job dir (with hydra_train.log or "
            f"train.log) or its log file"
        )
    log, lines = read_log(path, option=f"{flag} ")

    updates, overall = set(), {}
    langs: Dict[str, Dict[float, float]] = {}
    for u, rec in validation_records(lines):  # a repeated update count (resumed run): the last record wins
        updates.add(u)
        q = neg_log_perplexity(rec)
        if q is not None and math.isfinite(q):
            overall[u] = q
        for k, v in rec.items():
            lang = language_of(k)
            if lang is not None and finite(v):
                langs.setdefault(lang, {})[u] = float(v)
    if not updates:
        raise SystemExit(f"error: {flag}: no validation records (JSON `valid` lines with num_updates) in {log}: "
                         f"{VALIDATE_HINT}")
    if not langs:
        raise SystemExit(f"error: {flag}: the validation records in {log} carry no per-language "
                         f"neg. log perplexity (valid_<lang>_neg_log_perplexity): {PER_LANGUAGE_HINT}")
    return Run(
        flag=flag, path=path, log=log, params=model_params(lines), final_update=max(updates),
        overall=_curve(overall) if overall else None, langs={k: _curve(v) for k, v in langs.items()},
    )


# ----------------------------------------------------------------------------------------------
# comparison


def compare_curves(dense: Curve, switch: Curve) -> Dict:
    """Final qualities, difference and step speed-up of one language (or the overall curve)."""
    d_updates, d_q = dense[0][-1], dense[1][-1]
    u = crossing(switch[0], switch[1], d_q)
    return {
        "dense_final": d_q,
        "switch_final": switch[1][-1],
        "difference": switch[1][-1] - d_q,
        "dense_updates": d_updates,
        "updates_to_reach": u,
        "step_speedup": d_updates / u if u else None,
    }


def summarize(dense: Run, switch: Run, title: str) -> Dict:
    only_dense = sorted(set(dense.langs) - set(switch.langs))
    only_switch = sorted(set(switch.langs) - set(dense.langs))
    common = set(dense.langs) & set(switch.langs)
    if not common:
        raise SystemExit(
            f"error: no language in common: {dense.log} (--dense) has {', '.join(sorted(dense.langs))}; "
            f"{switch.log} (--switch) has {', '.join(sorted(switch.langs))}. Validate both runs on the same "
            "languages (same data and language list)"
        )
    warnings = []
    if only_dense or only_switch:
        warnings.append(
            f"the runs validate on different languages: only in --dense: {', '.join(only_dense) or 'none'}; "
            f"only in --switch: {', '.join(only_switch) or 'none'}; comparing the {len(common)} in common"
        )
    if dense.final_update != switch.final_update:
        warnings.append(
            f"the runs end at different updates (dense {dense.final_update:g}, Switch {switch.final_update:g}): "
            f"speed-ups compare at the dense run's final update"
        )

    rows = []
    for lang in common:
        rows.append({"language": lang, **compare_curves(dense.langs[lang], switch.langs[lang])})
    rows.sort(key=lambda r: (-r["dense_final"], r["language"]))  # best dense quality first

    n = len(rows)
    sps = [r["step_speedup"] for r in rows if r["step_speedup"] is not None]
    improved = sum(r["difference"] > 0 for r in rows)
    at4 = sum(s >= THRESHOLD - EPS for s in sps)
    overall = compare_curves(dense.overall, switch.overall) if dense.overall and switch.overall else None
    if overall is None:
        missing = " and ".join(r.flag for r in (dense, switch) if r.overall is None)
        warnings.append(f"no all-language neg_log_perplexity (nor nll_loss) in {missing}: overall row omitted")

    def run_info(r: Run):
        return {"path": str(r.path), "log": str(r.log), "params": r.params, "final_update": r.final_update,
                "languages": len(r.langs)}

    return {
        "title": title,
        "dense": run_info(dense),
        "switch": run_info(switch),
        "languages": rows,
        "overall": overall,
        "compared_languages": n,
        "improved": improved,
        "improved_share": improved / n,
        "reached": len(sps),
        "mean_step_speedup": statistics.mean(sps) if sps else None,
        "median_step_speedup": statistics.median(sps) if sps else None,
        "at_least_4x": at4,
        "share_at_least_4x": at4 / n,
        "not_reached": sorted(r["language"] for r in rows if r["step_speedup"] is None),
        "only_dense": only_dense,
        "only_switch": only_switch,
        "warnings": warnings,
    }


# ----------------------------------------------------------------------------------------------
# report


def markdown_table(s: Dict) -> str:
    head = ["language", "dense final", "Switch final", "difference", "updates to reach", "step speed-up"]

    def row(label: str, r: Dict) -> List[str]:
        nr = "not reached"
        return [label, f"{r['dense_final']:.4f}", f"{r['switch_final']:.4f}", f"{r['difference']:+.4f}",
                fmt(r["updates_to_reach"], ".1f", nr), fmt(r["step_speedup"], ".2f", nr, "x")]

    rows = [row(r["language"], r) for r in s["languages"]]
    if s["overall"] is not None:
        rows.append(row("**all languages**", s["overall"]))
    return "\n".join(md_table(head, rows, numeric=True))


def summary_lines(s: Dict) -> List[str]:
    n = s["compared_languages"]
    out = [f"- Switch better than dense (higher final neg. log perplexity): {s['improved']} of {n} languages "
           f"({100 * s['improved_share']:.0f}%)."]
    if s["reached"]:
        out.append(f"- Step speed-up over the {s['reached']} languages that reach the dense final quality: "
                   f"mean {s['mean_step_speedup']:.2f}x, median {s['median_step_speedup']:.2f}x.")
    else:
        out.append("- Step speed-up: no language reaches the dense final quality.")
    out.append(f"- At {THRESHOLD:g}x or more: {s['at_least_4x']} of all {n} languages "
               f"({100 * s['share_at_least_4x']:.0f}%; languages not reached count as below).")
    nr = s["not_reached"]
    out.append(f"- Not reached ({len(nr)}): {', '.join(nr) if nr else 'none'}.")
    return out


DEFINITION = (
    "Final = the language's validation negative log perplexity (nats/token, higher is better) at the run's "
    "last validation; difference = Switch - dense. Step speed-up = dense final update / the first update "
    "at which the Switch run reaches the dense final quality of that language (linear interpolation "
    "between the two validations around the crossing); 'not reached': never, no speed-up."
)


def report_markdown(s: Dict, images: bool = True) -> str:
    d, w = s["dense"], s["switch"]

    def who(label: str, r: Dict) -> str:
        params = f", {r['params']:,} params" if r["params"] else ""
        return f"- {label}: `{r['path']}` ({r['languages']} languages, final update {r['final_update']:g}{params})"

    parts = [f"# {s['title']}", "", who("dense", d), who("Switch", w), ""]
    if s["warnings"]:
        parts += [f"**Warning:** {x}" for x in s["warnings"]] + [""]
    parts += [markdown_table(s), ""] + summary_lines(s) + ["", DEFINITION, ""]
    if images:
        parts += ["![per-language final neg. log perplexity](per_language.png)",
                  "![per-language step speed-ups](speedup_hist.png)", ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# plots


def plot_all(s: Dict, out: Path) -> None:
    """per_language.png and speedup_hist.png (the paper's Figs. 7 and 8) into `out`."""
    plt = plots.pyplot()
    from matplotlib.ticker import MaxNLocator

    title = textwrap.fill(s["title"], 70)
    rows = s["languages"]
    n = len(rows)

    # Fig. 7 analogue: paired markers per language, languages sorted by dense quality
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.28 * n + 2), 30.0), 4.5))
    xs = range(n)
    dq = [r["dense_final"] for r in rows]
    sq = [r["switch_final"] for r in rows]
    ax.vlines(xs, dq, sq, color="gray", lw=0.8, zorder=1)
    ax.scatter(xs, dq, color="black", s=18, label="dense", zorder=2)
    ax.scatter(xs, sq, color="tab:orange", marker="D", s=18, label="Switch", zorder=3)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["language"] for r in rows], rotation=90 if n > 12 else 0, fontsize=8)
    ax.set_xlabel("language (sorted by dense final quality)")
    ax.set_ylabel("final neg. log perplexity (validation)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    plots.save(fig, out / "per_language.png")

    # Fig. 8 analogue: histogram of the step speed-ups of the languages that reach
    sps = [r["step_speedup"] for r in rows if r["step_speedup"] is not None]
    nr = len(s["not_reached"])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if sps:
        width = 0.5 if max(sps) <= 15 else float(math.ceil(max(sps) / 30))  # 4x always falls on a bin edge
        edges = [i * width for i in range(int(math.floor(max(sps) / width)) + 2)]
        ax.hist(sps, bins=edges, color="tab:orange", edgecolor="black")
        ax.axvline(s["mean_step_speedup"], color="black", ls="--", lw=1,
                   label=f"mean {s['mean_step_speedup']:.2f}x")
        ax.axvline(THRESHOLD, color="gray", ls=":", lw=1.5,
                   label=f"{THRESHOLD:g}x: {s['at_least_4x']} of {n} languages at or above")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend
        ax.legend(fontsize=8, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no language reaches the dense final quality", transform=ax.transAxes,
                ha="center", va="center")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step speed-up over dense (per language)")
    ax.set_ylabel("languages")
    ax.set_title(f"{title}\n{len(sps)} of {n} languages reach the dense final quality"
                 + (f"; {nr} not reached (not shown)" if nr else ""), fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    plots.save(fig, out / "speedup_hist.png")


# ----------------------------------------------------------------------------------------------


def make_report(argv: Optional[Sequence[str]] = None) -> Dict:
    """The command line's work: compare the two runs, write the report files, print it; returns the numbers."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dense", type=Path, required=True, metavar="RUN", help="dense run: job dir or log file")
    ap.add_argument("--switch", type=Path, required=True, metavar="RUN", help="Switch run: job dir or log file")
    ap.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    ap.add_argument("--title", default="Multilingual: Switch vs dense per language", help="plot and report title")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON instead of the markdown report")
    a = ap.parse_args(argv)

    dense = read_run(a.dense, "--dense")
    switch = read_run(a.switch, "--switch")
    s = summarize(dense, switch, a.title)
    for w in s["warnings"]:
        print(f"warning: {w}", file=sys.stderr)

    a.out.mkdir(parents=True, exist_ok=True)
    plot_all(s, a.out)
    (a.out / "report.md").write_text(report_markdown(s))
    if a.json:
        print(json.dumps(s, indent=2))
    else:
        print(report_markdown(s, images=False))
        print(f"wrote {a.out}/{{per_language.png,speedup_hist.png,report.md}}")
    return s


def main(argv: Optional[List[str]] = None) -> int:
    make_report(argv)
    return 0
