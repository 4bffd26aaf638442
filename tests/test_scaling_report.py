"""fairseq_switch/lab/reports/scaling.py (scripts/scaling_report.py) on synthetic Hydra sweeps: speed-ups
against hand-computed values, outputs, errors."""

import json
import math
import re
from pathlib import Path

import pytest

from fairseq_switch.lab.reports import scaling as sr
from fairseq_switch.lab.reports.runs import neg_log_perplexity

ROOT = Path(__file__).resolve().parents[1]
LN2 = math.log(2)


T = "[2026-11-25 20:10:05,123]"


def hydra_line(tag, rec):
    return f"{T}[{tag}][INFO] - {json.dumps(rec)}"


def plain_line(tag, rec):
    return f"2026-11-25 20:10:05 | INFO | {tag} | {json.dumps(rec)}"


def valid_rec(u, nlp, via_nll=False):
    rec = {"epoch": 1, "valid_loss": f"{-nlp / LN2 + 0.1:.6f}", "valid_num_updates": str(u)}
    if via_nll:  # only nll_loss (base 2), as fairseq logs it: the report computes -nll_loss * ln 2
        rec["valid_nll_loss"] = repr(-nlp / LN2)
    else:
        rec["valid_nll_loss"] = "1.0"  # must be ignored in favour of the logged neg_log_perplexity
        rec["valid_neg_log_perplexity"] = str(nlp)
    return rec


def write_log(path: Path, train, valid, params_line=None, fmt=hydra_line, via_nll=False):
    """train: [(num_updates, wall)], valid: [(num_updates, nlp)]; records interleaved by update count."""
    lines = [f"{T}[fairseq_cli.train][INFO] - {{'common': {{'log_format': 'json'}}}}"]
    if params_line:
        lines.append(f"{T}[fairseq_cli.train][INFO] - {params_line}")
    events = [(u, 0, ("train_inner", {"epoch": 1, "loss": "5.0", "num_updates": str(u), "wall": str(w)}))
              for u, w in train]
    events += [(u, 1, ("valid", valid_rec(u, q, via_nll))) for u, q in valid]
    for _, _, (tag, rec) in sorted(events, key=lambda e: e[:2]):
        lines.append(fmt(tag, rec))
        lines.append(f"{T}[fairseq_cli.train][INFO] - some other line")
    path.write_text("\n".join(lines) + "\n")


def make_job(job: Path, experts, train, valid, params_line=None, overrides_only=False, via_nll=False,
             capacity_factor=None):
    (job / ".hydra").mkdir(parents=True)
    model = "  _name: switch_tiny\n  encoder_embed_dim: ${model.d_model}\n"
    if not overrides_only and experts is not None:
        model += f"  moe_expert_count: {experts}\n"
    if capacity_factor is not None:
        model += f"  moe_capacity_factor: {capacity_factor}\n"
    (job / ".hydra" / "config.yaml").write_text(f"common:\n  log_format: json\n  seed: ${{seed}}\nmodel:\n{model}")
    ov = "- common.seed=1\n"
    if experts is not None:
        ov += f"- model.moe_expert_count={experts}\n"
    (job / ".hydra" / "overrides.yaml").write_text(ov)
    if train is not None:
        write_log(job / "hydra_train.log", train, valid, params_line, via_nll=via_nll)
    return job


DENSE_VALID = [(100, -4.0), (200, -3.5), (300, -3.2), (400, -3.0)]
DENSE_TRAIN = [(100, 10), (200, 20), (300, 30), (400, 40)]
# crosses q* = -3.0 at 200 + (0.2 / 0.3) * 100 = 266.67 updates -> 400 / 266.67 = 1.5x
SWITCH_VALID = [(100, -3.5), (200, -3.2), (300, -2.9)]
# 0.12 s/update, logged at 50, 150, 250: validation walls 12, 24 (interpolated), 36 (extrapolated);
# crossing at 24 + (2/3) * 12 = 32 s -> 40 / 32 = 1.25x
SWITCH_TRAIN = [(50, 6), (150, 18), (250, 30)]
NEVER_VALID = [(100, -3.6), (200, -3.3), (300, -3.1)]
NEVER_TRAIN = [(100, 11), (200, 22), (300, 33)]


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun" / "2026-11-25" / "20-10-00"
    make_job(root / "0", 0, DENSE_TRAIN, DENSE_VALID,
             "num. model params: 1,000,000 (num. trained: 1,000,000)")
    make_job(root / "1", 2, NEVER_TRAIN, NEVER_VALID,
             "num. shared model params: 1,000,000 (num. trained: 1,000,000)", overrides_only=True)
    make_job(root / "2", 8, SWITCH_TRAIN, SWITCH_VALID,
             "num. expert model params: 2000000 (num. trained: 2000000)", via_nll=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def by_experts(summary):
    return {r["experts"]: r for r in summary["runs"]}


def test_speedups_against_hand_computed_values(sweep, capsys):
    # Nothing here is timed: the "wall" seconds are numbers written into the synthetic logs of the
    # `sweep` fixture, and the expected values are interpolated by hand from them.
    summary = sr.make_report([str(sweep)])
    rows = by_experts(summary)
    assert list(rows) == [0, 2, 8]
    assert summary["dense_final_neg_log_perplexity"] == pytest.approx(-3.0)

    dense = rows[0]
    assert dense["label"] == "dense" and dense["params"] == 1_000_000
    assert dense["updates"] == 400 and dense["wall_seconds"] == pytest.approx(40)
    assert dense["sec_per_update"] == pytest.approx(0.1)
    assert dense["step_speedup"] == pytest.approx(1.0) and dense["time_speedup"] == pytest.approx(1.0)

    sw = rows[8]
    assert sw["label"] == "8 experts"
    assert sw["params"] is None  # only the expert line was logged: no total
    assert sw["final_valid_neg_log_perplexity"] == pytest.approx(-2.9)  # computed from nll_loss
    assert [p["wall"] for p in sw["curve"]] == pytest.approx([12, 24, 36])
    assert sw["updates_to_reach"] == pytest.approx(800 / 3)
    assert sw["step_speedup"] == pytest.approx(1.5)
    assert sw["seconds_to_reach"] == pytest.approx(32)
    assert sw["time_speedup"] == pytest.approx(1.25)
    assert sw["wall_seconds"] == pytest.approx(36) and sw["sec_per_update"] == pytest.approx(0.12)

    never = rows[2]  # expert count from overrides.yaml; shared line only -> total = shared
    assert never["params"] == 1_000_000
    assert never["updates_to_reach"] is None and never["step_speedup"] is None
    assert never["seconds_to_reach"] is None and never["time_speedup"] is None

    # at the end, read the other way: dense reaches 2 experts' final -3.1 at 300 + 0.5 * 100 = 350 updates
    # (35 s of its 10 s/100-update walls) against 2 experts' 300 updates (33 s): 1.167x and 1.061x;
    # 8 experts end at -2.9, which dense never reaches; dense itself matches at its final point
    assert never["dense_updates_to_match"] == pytest.approx(350)
    assert never["end_step_speedup"] == pytest.approx(350 / 300)
    assert never["end_time_speedup"] == pytest.approx(35 / 33)
    assert sw["dense_updates_to_match"] is None and sw["end_step_speedup"] is None and sw["end_time_speedup"] is None
    assert dense["end_step_speedup"] == pytest.approx(1.0) and dense["end_time_speedup"] == pytest.approx(1.0)

    out = sweep / "report"
    for name in ("nlp_vs_steps.png", "nlp_vs_time.png", "loss_vs_params.png", "report.md", "report.json"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "report.json").read_text())["runs"][2]["step_speedup"] == pytest.approx(1.5)
    md = (out / "report.md").read_text()
    assert "| 8 experts |" in md and "1.50x" in md and "1.25x" in md and "not reached" in md
    assert "| 1.17x | 1.06x |" in md and "beyond dense" in md
    assert "q* = " in md
    stdout = capsys.readouterr().out
    assert "| 2 experts |" in stdout and "not reached" in stdout

    # rerunning over the same sweep ignores the report/ directory it wrote
    assert len(sr.make_report([str(sweep)])["runs"]) == 3


def test_pure_functions():
    assert sr.crossing([100, 200, 300], [-3.5, -3.2, -2.9], -3.0) == pytest.approx(800 / 3)
    assert sr.crossing([100, 200], [-2.0, -1.0], -3.0) == 100  # reached at the first validation
    assert sr.crossing([100, 200], [-4.0, -3.5], -3.0) is None
    pts = [(50, 6.0), (150, 18.0), (250, 30.0)]
    assert sr.interp_wall(pts, 100) == pytest.approx(12)
    assert sr.interp_wall(pts, 25) == pytest.approx(3)  # from (0, 0)
    assert sr.interp_wall(pts, 300) == pytest.approx(36)  # extrapolated along the last two
    assert sr.interp_wall([(100, 10.0)], 200) == pytest.approx(20)
    assert sr.interp_wall([], 5) is None
    assert neg_log_perplexity({"nll_loss": 2.0}) == pytest.approx(-2 * LN2)
    assert neg_log_perplexity({"nll_loss": 2.0, "neg_log_perplexity": -1.0}) == -1.0


def test_time_points_last_logged_wins_and_train_records_count():
    lines = [
        hydra_line("train_inner", {"num_updates": "100", "wall": "10"}),
        hydra_line("valid", {"valid_num_updates": "100", "valid_nll_loss": "3"}),
        hydra_line("train", {"train_num_updates": "100", "train_wall": "13", "train_train_wall": "9"}),
    ]
    assert sr.time_points(lines) == [(100.0, 13.0)]


def test_no_dense_run_omits_speedups(tmp_path, capsys):
    make_job(tmp_path / "s" / "0", 8, SWITCH_TRAIN, SWITCH_VALID)
    make_job(tmp_path / "s" / "1", 32, SWITCH_TRAIN, NEVER_VALID)
    summary = sr.make_report([str(tmp_path / "s"), "--out", str(tmp_path / "out"), "--title", "no dense"])
    assert summary["dense_final_neg_log_perplexity"] is None
    assert all("step_speedup" not in r for r in summary["runs"])
    out = capsys.readouterr().out
    assert "speed-up columns omitted" in out and "speed-up" not in out.splitlines()[0]
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.startswith("# no dense") and "step speed-up" not in md


def test_plain_fairseq_train_runs_via_run_and_logged_config(tmp_path):
    dense = tmp_path / "dense"
    dense.mkdir()
    write_log(dense / "train.log", DENSE_TRAIN, DENSE_VALID, fmt=plain_line)
    sw = tmp_path / "switch"
    sw.mkdir()
    write_log(sw / "train.log", SWITCH_TRAIN, SWITCH_VALID, fmt=plain_line)
    with (sw / "train.log").open("a") as f:  # expert count from the config fairseq logs at start-up
        f.write("2026 | INFO | fairseq_cli.train | Namespace(arch='switch_tiny', moe_expert_count=8, moe_freq=2)\n")
    summary = sr.make_report([str(sw), "--run", f"0={dense / 'train.log'}", "--out", str(tmp_path / "r")])
    assert by_experts(summary)[8]["step_speedup"] == pytest.approx(1.5)
    assert by_experts(summary)[8]["time_speedup"] == pytest.approx(1.25)


def test_error_missing_path(tmp_path):
    with pytest.raises(SystemExit, match=r"nope does not exist"):
        sr.main([str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match=r"nope2 does not exist"):
        sr.main(["--run", f"0={tmp_path / 'nope2'}", "--out", str(tmp_path / "r")])


def test_error_no_validation_records(tmp_path):
    job = make_job(tmp_path / "s" / "0", 0, DENSE_TRAIN, [])
    with pytest.raises(SystemExit) as e:
        sr.main([str(tmp_path / "s")])
    assert str(job / "hydra_train.log") in str(e.value)
    assert "dataset.validate_interval_updates" in str(e.value)


def test_error_job_without_log(tmp_path):
    job = make_job(tmp_path / "s" / "0", 0, None, None)
    with pytest.raises(SystemExit, match=re.escape(f"no training log in {job}")):
        sr.main([str(tmp_path / "s")])


def test_error_duplicate_expert_counts(tmp_path):
    a = make_job(tmp_path / "s" / "0", 8, SWITCH_TRAIN, SWITCH_VALID)
    b = make_job(tmp_path / "s" / "1", 8, SWITCH_TRAIN, SWITCH_VALID)
    with pytest.raises(SystemExit) as e:
        sr.main([str(tmp_path / "s")])
    assert "two runs with 8 experts" in str(e.value)
    assert str(a) in str(e.value) and str(b) in str(e.value)


def test_capacity_factor_arms_share_an_expert_count(tmp_path):
    # The paper's Table 1 arms: 8 experts at capacity factors 1.25 and 2.0 beside dense. Each arm keeps
    # its own speed-up (the 2.0 arm is SWITCH_VALID: 1.5x, as hand-computed above) and gap column.
    root = tmp_path / "s"
    make_job(root / "e0", 0, DENSE_TRAIN, DENSE_VALID, capacity_factor=1.25)
    make_job(root / "e8", 8, NEVER_TRAIN, NEVER_VALID, capacity_factor=1.25)
    make_job(root / "e8_cf2", 8, SWITCH_TRAIN, SWITCH_VALID, capacity_factor=2.0)
    summary = sr.make_report([str(root)])
    rows = {r["label"]: r for r in summary["runs"]}
    assert list(rows) == ["dense", "8 experts (capacity factor 1.25)", "8 experts (capacity factor 2)"]
    assert rows["8 experts (capacity factor 2)"]["step_speedup"] == pytest.approx(1.5)
    assert rows["8 experts (capacity factor 1.25)"]["step_speedup"] is None
    assert rows["8 experts (capacity factor 2)"]["capacity_factor"] == 2.0
    md = (root / "report" / "report.md").read_text()
    # at update 300: dense -3.2, cf 1.25 -3.1 (+0.1), cf 2 -2.9 (+0.3), one column pair per arm
    row = next(line for line in md.splitlines() if line.startswith("| 300 |"))
    assert row.endswith("| -3.2000 | -3.1000 | +0.1000 | -2.9000 | +0.3000 |"), row


def _timed_job(job: Path, experts, records, valid, epoch_end=None):
    """records: [(num_updates, wall, train_wall)] in log order (a resume repeats updates); epoch_end: the same
    for the epoch's train record, whose train_wall is the epoch's sum."""
    make_job(job, experts, None, None)
    lines = [hydra_line("train_inner", {"num_updates": str(u), "wall": str(w), "train_wall": str(tw)})
             for u, w, tw in records]
    if epoch_end:
        u, w, tw = epoch_end
        lines.append(hydra_line("train", {"train_num_updates": str(u), "train_wall": str(w),
                                          "train_train_wall": str(tw)}))  # fairseq prefixes the epoch's keys
    lines += [hydra_line("valid", valid_rec(u, q)) for u, q in valid]
    (job / "hydra_train.log").write_text("\n".join(lines) + "\n")


def test_a_resumed_run_is_timed_by_its_summed_train_wall(tmp_path):
    # dense was killed after update 300 and resumed from its save at 200: fairseq logged wall 0 from then on.
    # Summed train_wall (the repeated interval 200-300 counted once, the last logged): 8, 16, 25, 33 at 100-400.
    # 8 experts: 5, 15, 25 at 50, 150, 250 -> 10, 20, 30 at 100, 200, 300 (extrapolated); it reaches
    # q* = -3.0 at 266.67 updates, 20 + (2/3) * 10 = 26.67 s -> time speed-up 33 / 26.67 = 1.2375.
    root = tmp_path / "s"
    _timed_job(root / "0", 0, [(100, 10, 8), (200, 20, 8), (300, 30, 8), (300, 0, 9), (400, 0, 8)], DENSE_VALID,
               epoch_end=(400, 0, 17))  # the resumed process's sum, 9 + 8: not one more interval
    _timed_job(root / "8", 8, [(50, 6, 5), (150, 18, 10), (250, 30, 10)], SWITCH_VALID)
    summary = sr.make_report([str(root)])
    assert summary["clock"] == "train_wall"
    rows = by_experts(summary)
    assert rows[0]["wall_seconds"] == pytest.approx(33)
    assert rows[8]["seconds_to_reach"] == pytest.approx(80 / 3)
    assert rows[8]["time_speedup"] == pytest.approx(33 / (80 / 3))
    assert sr.TRAIN_WALL_NOTE in (root / "report" / "report.md").read_text()
    # without the resume the logged wall is used: dense 40 s, 8 experts 32 s to q* (the hand-computed 1.25x)
    _timed_job(tmp_path / "t" / "0", 0, [(u, w, 1) for u, w in DENSE_TRAIN], DENSE_VALID)
    _timed_job(tmp_path / "t" / "8", 8, [(u, w, 1) for u, w in SWITCH_TRAIN], SWITCH_VALID)
    summary = sr.make_report([str(tmp_path / "t")])
    assert summary["clock"] == "wall" and by_experts(summary)[8]["time_speedup"] == pytest.approx(1.25)


def test_error_duplicate_capacity_factor(tmp_path):
    make_job(tmp_path / "s" / "0", 8, SWITCH_TRAIN, SWITCH_VALID, capacity_factor=2.0)
    make_job(tmp_path / "s" / "1", 8, SWITCH_TRAIN, SWITCH_VALID, capacity_factor=2.0)
    with pytest.raises(SystemExit, match="two runs with 8 experts and the same"):
        sr.main([str(tmp_path / "s")])


def test_error_unknown_expert_count_and_empty_sweep(tmp_path):
    job = make_job(tmp_path / "s" / "0", None, DENSE_TRAIN, DENSE_VALID)
    with pytest.raises(SystemExit, match=re.escape(f"cannot tell the expert count of {job}")):
        sr.main([str(tmp_path / "s")])
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no job directories in"):
        sr.main([str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="EXPERTS=PATH"):
        sr.main(["--run", f"eight={job}"])


def gap_study(tmp_path):
    """dense to 2000 updates, 8 experts ahead at 1000 and 2000 only, 32 experts stopped at 1000, never ahead."""
    root = tmp_path / "study"
    make_job(root / "0", 0, [(500, 50), (1000, 100), (1500, 150), (2000, 200)],
             [(500, -5.0), (1000, -4.5), (1500, -4.2), (2000, -4.0)])
    make_job(root / "1", 8, [(500, 60), (1000, 120), (1500, 180), (2000, 240)],
             [(500, -5.1), (1000, -4.4), (1500, -4.25), (2000, -3.9)])
    make_job(root / "2", 32, [(500, 70), (1000, 140)], [(500, -5.2), (1000, -4.6)])
    return root


def test_gap_to_dense_and_overtake_against_hand_computed_values(tmp_path, capsys):
    root = gap_study(tmp_path)
    rows = by_experts(sr.make_report([str(root), "--tokens-per-update", "4096"]))
    gaps = [(g["num_updates"], g["tokens"], g["gap"]) for g in rows[8]["gap_to_dense"]]
    assert [g[:2] for g in gaps] == [(500, 2_048_000), (1000, 4_096_000), (1500, 6_144_000), (2000, 8_192_000)]
    assert [g[2] for g in gaps] == pytest.approx([-0.1, 0.1, -0.05, 0.1])
    assert rows[8]["overtake"] == {"first_ahead": 1000, "first_ahead_tokens": 4_096_000, "stays_ahead": False,
                                   "compared_to": 2000}
    assert rows[32]["overtake"] == {"first_ahead": None, "stays_ahead": False, "compared_to": 1000}
    assert "gap_to_dense" not in rows[0]
    out = capsys.readouterr().out
    assert "8 experts overtakes dense at update 1000 (4.1M input tokens) but falls behind again later" in out
    assert "32 experts did not overtake dense within the budget (update 1000 (4.1M input tokens))" in out
    md = (root / "report" / "report.md").read_text()
    assert "## Gap to dense" in md and "| 1500 | 6.1M | -4.2000 | -4.2500 | -0.0500 |" in md
    assert (root / "report" / "gap_vs_tokens.png").stat().st_size > 0


def test_common_budget_compares_runs_at_the_last_update_all_reached(tmp_path):
    summary = sr.make_report([str(gap_study(tmp_path)), "--common-budget"])
    rows = by_experts(summary)
    assert summary["common_budget"] == 1000 and summary["tokens_per_update"] is None  # no max_tokens in config
    assert summary["dense_final_neg_log_perplexity"] == pytest.approx(-4.5)
    assert [r["updates"] for r in summary["runs"]] == [1000, 1000, 1000]
    # 8 experts reaches -4.5 between 500 (-5.1) and 1000 (-4.4): 500 + 500 * 0.6 / 0.7
    assert rows[8]["updates_to_reach"] == pytest.approx(500 + 500 * 6 / 7)
    assert rows[8]["step_speedup"] == pytest.approx(1000 / (500 + 500 * 6 / 7))
    assert rows[8]["overtake"]["stays_ahead"] is True and rows[8]["overtake"]["first_ahead"] == 1000
    assert rows[32]["updates_to_reach"] is None
    assert "compared at update 1000" in (tmp_path / "study" / "report" / "report.md").read_text()


def test_tokens_per_update_is_read_from_the_dense_config_and_checked(tmp_path):
    root = gap_study(tmp_path)
    cfg = root / "0" / ".hydra" / "config.yaml"
    cfg.write_text(cfg.read_text() + "dataset:\n  max_tokens: 4096\n")
    assert sr.make_report([str(root)])["tokens_per_update"] == 4096
    with pytest.raises(SystemExit):
        sr.make_report([str(root), "--tokens-per-update", "0"])
