"""Switch-minus-dense gap of this project against transformers' implementation, on the same batches.

    bash scripts/run_reference_gap.sh        # trains the 8 runs below, then runs this report
    python scripts/reference_gap_report.py runs/reference_gap

The folder holds, for each seed S:
  ours_e0_sS, ours_e8_sS: fairseq-hydra-train runs of pretrain_tiny (dense twin and 8 experts);
  hf_e0_sS, hf_e8_sS: scripts/reference_transformers.py runs (transformers' T5 and SwitchTransformers from
  the same initial weights, on the same batches, with the same recipe; their log.jsonl).
Gap = Switch minus dense validation negative log perplexity (nats per target token; positive: Switch
ahead). Seed noise is how far the two seeds' gaps lie apart within one implementation; the two
implementations agree when their mean gaps differ by no more than the larger of those spreads.
Writes <folder>/report.md and report.json.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Dict, List, Optional

from .runs import read_log, validation_curve
from .tables import md_table

RUN_NAME = re.compile(r"(ours|hf)_e(\d+)_s(\d+)")


def ours_curve(run_dir: Path) -> Dict[float, float]:
    """{update: valid neg. log perplexity} of a fairseq(-hydra)-train run."""
    _, lines = read_log(run_dir, "a run folder ")
    return {u: q for u, (q, _) in validation_curve(lines).items()}


def hf_rows(run_dir: Path) -> List[Dict]:
    """The rows of a reference_transformers.py run's log.jsonl."""
    log = run_dir / "log.jsonl"
    if not log.is_file():
        raise SystemExit(f"error: {log} not found; run scripts/reference_transformers.py --out {run_dir}")
    return [json.loads(line) for line in log.read_text().splitlines()]


def hf_curve(run_dir: Path) -> Dict[float, float]:
    """{update: valid neg. log perplexity} of a reference_transformers.py run (its log.jsonl)."""
    out = {}
    for rec in hf_rows(run_dir):
        q = rec.get("valid_neg_log_perplexity")
        if isinstance(q, (int, float)) and rec.get("update"):
            out[float(rec["update"])] = float(q)
    return out


def read_study(folder: Path) -> Dict[str, Dict[int, Dict[int, Dict[float, float]]]]:
    """{impl: {seed: {experts: curve}}} of the runs in `folder`."""
    if not folder.is_dir():
        raise SystemExit(f"error: {folder} is not a folder; pass the folder scripts/run_reference_gap.sh wrote")
    study: Dict[str, Dict[int, Dict[int, Dict[float, float]]]] = {"ours": {}, "hf": {}}
    for run in sorted(folder.iterdir()):
        m = RUN_NAME.fullmatch(run.name)
        if not m or not run.is_dir():
            continue
        impl, experts, seed = m.group(1), int(m.group(2)), int(m.group(3))
        curve = ours_curve(run) if impl == "ours" else hf_curve(run)
        study[impl].setdefault(seed, {})[experts] = curve
    if not any(study.values()):
        raise SystemExit(f"error: no ours_eE_sS or hf_eE_sS run folders in {folder}")
    return study


def gaps(study: Dict, impl: str) -> Dict[int, Dict[float, Dict[str, float]]]:
    """{seed: {update: {dense, switch, gap}}} at the updates both models of a seed validated."""
    out = {}
    for seed, by_experts in sorted(study[impl].items()):
        dense = by_experts.get(0)
        sparse = [e for e in by_experts if e != 0]
        if dense is None or not sparse:
            continue
        switch = by_experts[max(sparse)]
        out[seed] = {u: {"dense": dense[u], "switch": switch[u], "gap": switch[u] - dense[u]}
                     for u in sorted(set(dense) & set(switch))}
    return out


def summarize(study: Dict) -> Dict:
    per_impl = {impl: gaps(study, impl) for impl in ("ours", "hf")}
    final: Dict[str, Dict] = {}
    for impl, by_seed in per_impl.items():
        last = {seed: curve[max(curve)] | {"update": max(curve)} for seed, curve in by_seed.items() if curve}
        if last:
            vals = [v["gap"] for v in last.values()]
            final[impl] = {"by_seed": last, "mean_gap": sum(vals) / len(vals),
                           "seed_spread": max(vals) - min(vals)}
    verdict: Optional[Dict] = None
    if "ours" in final and "hf" in final:
        diff = final["ours"]["mean_gap"] - final["hf"]["mean_gap"]
        noise = max(final["ours"]["seed_spread"], final["hf"]["seed_spread"])
        verdict = {"difference": diff, "seed_noise": noise, "agree": abs(diff) <= noise}
    return {"gaps": {impl: {str(s): {f"{u:g}": v for u, v in c.items()} for s, c in g.items()}
                     for impl, g in per_impl.items()},
            "final": final, "verdict": verdict}


def report_markdown(summary: Dict) -> str:
    head = ["seed", "update", "ours dense", "ours Switch", "ours gap", "transformers dense",
            "transformers Switch", "transformers gap"]
    rows: List[List[str]] = []
    seeds = sorted(set(summary["gaps"]["ours"]) | set(summary["gaps"]["hf"]), key=int)
    for seed in seeds:
        ours, hf = summary["gaps"]["ours"].get(seed, {}), summary["gaps"]["hf"].get(seed, {})
        for u in sorted(set(ours) | set(hf), key=float):
            cells = [seed, u]
            for g in (ours.get(u), hf.get(u)):
                cells += [f"{g['dense']:.4f}", f"{g['switch']:.4f}", f"{g['gap']:+.4f}"] if g else ["", "", ""]
            rows.append(cells)
    lines = ["# Switch minus dense: this project against transformers, same batches", "",
             "Validation negative log perplexity (nats per target token); gap = Switch minus dense.", ""]
    lines += md_table(head, rows) + [""]
    for impl, name in (("ours", "this project"), ("hf", "transformers")):
        f = summary["final"].get(impl)
        if f:
            lines.append(f"- {name}: mean final gap {f['mean_gap']:+.4f} over seeds "
                         + ", ".join(f"{s}: {v['gap']:+.4f}" for s, v in f["by_seed"].items())
                         + f" (spread {f['seed_spread']:.4f})")
    v = summary["verdict"]
    if v:
        lines.append(f"- difference of the mean gaps {v['difference']:+.4f} against seed noise {v['seed_noise']:.4f}: "
                     + ("the two implementations agree within seed noise." if v["agree"]
                        else "the gaps differ by more than seed noise."))
    return "\n".join(lines) + "\n"


# -- routing: dropped tokens and the busiest expert, per update, both implementations ------------------
ROUTING = ("moe_dropped", "moe_dropped_0", "moe_dropped_1", "moe_load_max_0", "moe_load_max_1")
ROUTING_UPDATES = (25, 50, 100, 200, 300, 400, 500)


def ours_routing(run_dir: Path) -> Dict[int, Dict[str, float]]:
    """{update: routing metrics} from a fairseq run's train_inner records (per update with common.log_interval=1;
    a longer interval gives one record per interval, pooled by the criterion)."""
    from fairseq_switch.logs import json_records

    _, lines = read_log(run_dir, "a run folder ")
    out = {}
    for rec in json_records(lines, "train_inner"):
        u = rec.get("num_updates")
        vals = {k: float(rec[k]) for k in ROUTING if k in rec}
        if u is not None and vals:
            out[int(float(u))] = vals
    return out


def batch_capacity_dropped(counts: List[List[int]], capacity_factor: float) -> float:
    """Dropped fraction had these per-layer expert token counts met this project's per-batch capacity,
    ceil(tokens / N * factor) per expert (Sec. 2.2): the same routing, the other capacity rule."""
    from fairseq_switch.modules.routing import expert_capacity

    n = dropped = 0
    for c in counts:
        cap = expert_capacity(sum(c), len(c), capacity_factor, 4)  # RouterConfig's default min_capacity
        n += sum(c)
        dropped += sum(max(0, x - cap) for x in c)
    return dropped / max(n, 1)


def hf_routing(run_dir: Path, capacity_factor: float = 1.25) -> Dict[int, Dict[str, float]]:
    """{update: routing metrics} from a reference_transformers.py log.jsonl (its per-update rows), with
    moe_dropped_batch_capacity: its routing replayed under this project's per-batch capacity."""
    out = {}
    for rec in hf_rows(run_dir):
        if "train_update_loss" in rec:
            row = {k: float(rec[k]) for k in ROUTING if k in rec}
            counts = [rec[k] for k in sorted(rec) if k.startswith("moe_counts_")]
            if counts:
                row["moe_dropped_batch_capacity"] = batch_capacity_dropped(counts, capacity_factor)
            out[int(rec["update"])] = row
    return out


def window_mean(curve: Dict[int, Dict[str, float]], update: int, key: str, width: int) -> Optional[float]:
    """Mean of `key` over the logged updates in (update - width, update]; None when none is logged."""
    vals = [v[key] for u, v in curve.items() if update - width < u <= update and key in v]
    return sum(vals) / len(vals) if vals else None


def routing_markdown(folder: Path, width: int = 25) -> str:
    """Per seed and update: dropped fraction and busiest expert's share (encoder layer 0, decoder layer 1),
    this project against transformers, each the mean over the `width` updates ending there."""
    runs: Dict[int, Dict[str, Dict[int, Dict[str, float]]]] = {}
    for run in sorted(folder.iterdir()):
        m = RUN_NAME.fullmatch(run.name)
        if m and run.is_dir() and int(m.group(2)) > 0 and (m.group(1) == "ours" or (run / "log.jsonl").is_file()):
            impl, seed = m.group(1), int(m.group(3))
            runs.setdefault(seed, {})[impl] = ours_routing(run) if impl == "ours" else hf_routing(run)
    if not runs:
        raise SystemExit(f"error: no ours_eE_sS or hf_eE_sS Switch run folders in {folder}")

    def cell(curve: Optional[Dict], u: int, key: str, pct: bool) -> str:
        v = window_mean(curve or {}, u, key, width)
        return "" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.2f}")

    head = ["seed", "update"] + [f"{name} {impl}" for name in ("dropped", "dropped enc", "dropped dec",
                                                                "max load enc", "max load dec")
                                 for impl in ("ours", "transformers")] + ["dropped transformers, per-batch capacity"]
    rows = []
    for seed, by_impl in sorted(runs.items()):
        last = max(max(c) for c in by_impl.values() if c) if any(by_impl.values()) else 0
        for u in [u for u in ROUTING_UPDATES if u <= last]:
            rows.append([str(seed), str(u)] + [cell(by_impl.get(impl), u, key, key.startswith("moe_dropped"))
                                               for key in ROUTING for impl in ("ours", "hf")]
                        + [cell(by_impl.get("hf"), u, "moe_dropped_batch_capacity", True)])
    lines = ["# Dropped tokens and the busiest expert: this project against transformers, same batches", "",
             f"Each cell is the mean over the {width} updates ending at `update` of the per-update value, over "
             "real (non-padding) tokens. dropped: tokens that found their expert full (Sec. 2.2), pooled over "
             "both Switch layers; max load: the busiest expert's tokens over the mean per expert, before drops. "
             "The last column replays transformers' routing under this project's per-batch capacity.",
             ""]
    return "\n".join(lines + md_table(head, rows)) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="the folder of ours_eE_sS and hf_eE_sS runs")
    ap.add_argument("--routing", action="store_true",
                    help="compare the Switch runs' dropped tokens and busiest expert instead (writes routing.md)")
    a = ap.parse_args(argv)
    if a.routing:
        md = routing_markdown(a.folder)
        (a.folder / "routing.md").write_text(md)
        print(md, end="")
        print(f"wrote {a.folder}/routing.md")
        return 0
    summary = summarize(read_study(a.folder))
    md = report_markdown(summary)
    (a.folder / "report.md").write_text(md)
    (a.folder / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(md, end="")
    print(f"wrote {a.folder}/report.md, report.json")
    return 0
