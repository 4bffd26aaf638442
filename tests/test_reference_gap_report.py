"""fairseq_switch/lab/reports/reference_gap.py on synthetic runs: gaps, seed noise and the verdict by hand."""

import json

import pytest

from fairseq_switch.lab.reports import reference_gap as rg

T = "[2026-12-05 10:00:00,000]"


def ours(folder, experts, seed, curve):
    run = folder / f"ours_e{experts}_s{seed}"
    run.mkdir(parents=True)
    lines = [f'{T}[valid][INFO] - ' + json.dumps({"epoch": 1, "valid_neg_log_perplexity": str(q),
                                                  "valid_num_updates": str(u)}) for u, q in curve]
    (run / "hydra_train.log").write_text("\n".join(lines) + "\n")


def hf(folder, experts, seed, curve):
    run = folder / f"hf_e{experts}_s{seed}"
    run.mkdir(parents=True)
    rows = [{"update": 0, "valid_neg_log_perplexity": -9.0, "train_loss": None}]
    rows += [{"update": u, "valid_neg_log_perplexity": q, "train_loss": 5.0} for u, q in curve]
    rows.append({"update": curve[-1][0], "valid_neg_log_perplexity": curve[-1][1], "seconds_per_update": 1.0})
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def study(tmp_path, hf_switch_s2=-4.66, hf_switch_s1=-4.72):
    ours(tmp_path, 0, 1, [(100, -5.0), (500, -4.70)])
    ours(tmp_path, 8, 1, [(100, -5.1), (500, -4.74)])
    ours(tmp_path, 0, 2, [(100, -5.0), (500, -4.68)])
    ours(tmp_path, 8, 2, [(100, -5.2), (500, -4.70)])
    hf(tmp_path, 0, 1, [(100, -5.0), (500, -4.70)])
    hf(tmp_path, 8, 1, [(100, -5.0), (500, hf_switch_s1)])
    hf(tmp_path, 0, 2, [(100, -5.0), (500, -4.68)])
    hf(tmp_path, 8, 2, [(100, -5.0), (500, hf_switch_s2)])
    (tmp_path / "ours_e0_s1.out").write_text("ignored: not a folder")
    return tmp_path


def test_gaps_and_verdict_against_hand_computed_values(tmp_path, capsys):
    assert rg.main([str(study(tmp_path))]) == 0
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["gaps"]["ours"]["1"]["100"]["gap"] == pytest.approx(-0.1)
    final = summary["final"]
    # ours: -0.04 and -0.02 -> mean -0.03, spread 0.02; transformers: -0.02 and +0.02 -> mean 0, spread 0.04
    assert final["ours"]["mean_gap"] == pytest.approx(-0.03) and final["ours"]["seed_spread"] == pytest.approx(0.02)
    assert final["hf"]["mean_gap"] == pytest.approx(0.0) and final["hf"]["seed_spread"] == pytest.approx(0.04)
    assert summary["verdict"]["difference"] == pytest.approx(-0.03) and summary["verdict"]["agree"] is True
    out = capsys.readouterr().out
    assert "| 2 | 500 | -4.6800 | -4.7000 | -0.0200 | -4.6800 | -4.6600 | +0.0200 |" in out
    assert "agree within seed noise" in out


def test_gaps_beyond_seed_noise_are_reported_as_differing(tmp_path, capsys):
    rg.main([str(study(tmp_path, hf_switch_s2=-4.50))])  # transformers: -0.02 and +0.18 -> mean +0.08, spread 0.2
    v = json.loads((tmp_path / "report.json").read_text())["verdict"]
    assert v["difference"] == pytest.approx(-0.11) and v["seed_noise"] == pytest.approx(0.2) and v["agree"]
    # transformers: +0.04 and +0.04 -> mean +0.04, spread 0; ours' spread 0.02 is the noise
    rg.main([str(study(tmp_path / "b", hf_switch_s1=-4.66, hf_switch_s2=-4.64))])
    v = json.loads((tmp_path / "b" / "report.json").read_text())["verdict"]
    assert v["difference"] == pytest.approx(-0.07) and v["seed_noise"] == pytest.approx(0.02)
    assert not v["agree"] and "differ by more than seed noise" in capsys.readouterr().out


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(SystemExit, match="is not a folder"):
        rg.main([str(tmp_path / "missing")])
    with pytest.raises(SystemExit, match="no ours_eE_sS or hf_eE_sS"):
        rg.main([str(tmp_path)])
    (tmp_path / "hf_e0_s1").mkdir()
    with pytest.raises(SystemExit, match="log.jsonl not found"):
        rg.main([str(tmp_path)])


def test_routing_table_window_means_and_the_replayed_capacity(tmp_path, capsys):
    run = tmp_path / "ours_e8_s1"
    run.mkdir()
    inner = [{"num_updates": str(u), "moe_dropped": str(d), "moe_dropped_0": "0.0", "moe_dropped_1": str(2 * d),
              "moe_load_max_0": "1.5", "moe_load_max_1": "3.0"} for u, d in ((24, 0.5), (25, 0.1), (26, 0.2))]
    (run / "hydra_train.log").write_text("".join(f"{T}[train_inner][INFO] - {json.dumps(r)}\n" for r in inner))
    hf(tmp_path, 8, 1, [(25, -8.0)])
    rows = [json.loads(x) for x in (tmp_path / "hf_e8_s1" / "log.jsonl").read_text().splitlines()]
    # one encoder layer, 8 experts, 80 tokens: ceil(80 / 8 * 1.25) = 13 slots; 20 - 13 = 7 dropped by the batch rule
    per_update = {"update": 25, "train_update_loss": 5.0, "moe_dropped": 0.2, "moe_dropped_0": 0.2,
                  "moe_load_max_0": 2.0, "moe_counts_0": [20, 10, 10, 10, 10, 10, 5, 5]}
    (tmp_path / "hf_e8_s1" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:1] + [per_update]
                                                             + rows[1:]))
    assert rg.hf_routing(tmp_path / "hf_e8_s1")[25]["moe_dropped_batch_capacity"] == pytest.approx(7 / 80)
    assert rg.hf_curve(tmp_path / "hf_e8_s1") == {25.0: -8.0}  # the per-update rows leave the curve alone
    assert rg.main([str(tmp_path), "--routing"]) == 0
    table = (tmp_path / "routing.md").read_text()
    # update 25: ours is the mean of updates 24 and 25 (the 25 ending there), transformers its one logged update
    assert "| 1 | 25 | 30.0% | 20.0% | 0.0% | 20.0% | 60.0% |  | 1.50 | 2.00 | 3.00 |  | 8.8% |" in table
    assert "| 1 | 50 |" not in table  # past the last logged update
    capsys.readouterr()
