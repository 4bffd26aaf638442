"""fairseq_switch/lab/reports/multilingual_report.py (scripts/multilingual_report.py) on synthetic validation logs:
per-language numbers by hand, outputs, errors."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_switch.lab.reports import multilingual_report as mr

ROOT = Path(__file__).resolve().parents[1]

T = "[2026-01-01 00:00:00,000]"
UPDATES = [50, 100, 200, 300]

# per language: (dense curve, Switch curve) at UPDATES; hand-computed results in the comments
CURVES = {
    # dense final -4 at 300; Switch crosses it halfway between 200 (-4.5) and 300 (-3.5): 250 -> 1.2x
    "de": ([-6.5, -6.0, -5.0, -4.0], [-6.0, -5.5, -4.5, -3.5]),
    # dense final -5.2; Switch crosses halfway between 50 (-5.4) and 100 (-5.0): 75 -> 4x; +0.3
    "zh-cn": ([-7.0, -6.0, -5.5, -5.2], [-5.4, -5.0, -4.95, -4.9]),
    # dense final -5.5; Switch already there at its first validation: 50 -> 6x; +0.4
    "ja": ([-6.0, -5.8, -5.6, -5.5], [-5.4, -5.3, -5.2, -5.1]),
    # dense final -5.0; Switch reaches it at 100 (exactly -5.0) -> 3x, then falls back: final -5.2, -0.2
    "ko": ([-6.0, -5.5, -5.2, -5.0], [-5.4, -5.0, -4.9, -5.2]),
    # dense final -5.0; Switch never gets there: not reached, -0.3
    "fi": ([-6.0, -5.5, -5.2, -5.0], [-6.5, -6.0, -5.6, -5.3]),
}
# all-language curve: dense final -4.6, Switch exactly -4.6 at 200 -> 1.5x, +0.4
OVERALL = ([-7.0, -6.0, -5.0, -4.6], [-6.0, -5.0, -4.6, -4.2])


def hydra_line(tag, rec):
    return f"{T}[{tag}][INFO] - {json.dumps(rec)}"


def plain_line(tag, rec):
    return f"2026-01-01 00:00:00 | INFO | {tag} | {json.dumps(rec)}"


def write_log(path: Path, updates, langs, overall=None, fmt=hydra_line, extra=None):
    """langs: {lang: [nlp per update]}; overall: [nlp per update] or None; extra: {key: value} in every record."""
    lines = [f"{T}[fairseq_cli.train][INFO] - num. model params: 1,234 (num. trained: 1,234)"]
    for i, u in enumerate(updates):
        lines.append(fmt("train_inner", {"epoch": 1, "loss": "5.0", "num_updates": str(u), "wall": str(u / 10)}))
        rec = {"epoch": 1, "valid_loss": "7.1"}
        if overall is not None:
            rec["valid_neg_log_perplexity"] = str(overall[i])
        for lang, qs in langs.items():
            if qs[i] is not None:
                rec[f"valid_{lang}_neg_log_perplexity"] = str(qs[i])
        rec.update(extra or {})
        rec["valid_num_updates"] = str(u)
        lines.append(fmt("valid", rec))
        lines.append(f"{T}[fairseq_cli.train][INFO] - some other line")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def make_job(job: Path, updates, langs, overall=None, **kw):
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("common:\n  log_format: json\n")
    write_log(job / "hydra_train.log", updates, langs, overall, **kw)
    return job


def side(i, curves=CURVES):
    return {lang: c[i] for lang, c in curves.items()}


@pytest.fixture
def runs(tmp_path):
    dense = make_job(tmp_path / "dense", UPDATES, side(0), OVERALL[0])
    switch = make_job(tmp_path / "switch", UPDATES, side(1), OVERALL[1])
    return dense, switch


def test_hand_computed_values(runs, tmp_path, capsys):
    dense, switch = runs
    out = tmp_path / "out"
    s = mr.make_report(["--dense", str(dense), "--switch", str(switch), "--out", str(out), "--title", "ml test"])
    rows = {r["language"]: r for r in s["languages"]}
    # sorted by dense final quality, best first (ties by code)
    assert [r["language"] for r in s["languages"]] == ["de", "fi", "ko", "zh-cn", "ja"]

    de = rows["de"]
    assert de["dense_final"] == -4.0 and de["switch_final"] == -3.5 and de["difference"] == pytest.approx(0.5)
    assert de["dense_updates"] == 300
    assert de["updates_to_reach"] == pytest.approx(250) and de["step_speedup"] == pytest.approx(1.2)
    assert rows["zh-cn"]["updates_to_reach"] == pytest.approx(75) and rows["zh-cn"]["step_speedup"] == pytest.approx(4)
    assert rows["ja"]["updates_to_reach"] == 50 and rows["ja"]["step_speedup"] == pytest.approx(6)
    assert rows["ko"]["updates_to_reach"] == pytest.approx(100) and rows["ko"]["step_speedup"] == pytest.approx(3)
    assert rows["ko"]["difference"] == pytest.approx(-0.2)
    assert rows["fi"]["updates_to_reach"] is None and rows["fi"]["step_speedup"] is None
    assert rows["fi"]["difference"] == pytest.approx(-0.3)

    ov = s["overall"]
    assert ov["dense_final"] == -4.6 and ov["updates_to_reach"] == pytest.approx(200)
    assert ov["step_speedup"] == pytest.approx(1.5)

    assert s["compared_languages"] == 5
    assert s["improved"] == 3 and s["improved_share"] == pytest.approx(0.6)  # de, zh-cn, ja
    assert s["reached"] == 4
    assert s["mean_step_speedup"] == pytest.approx((1.2 + 4 + 6 + 3) / 4)
    assert s["median_step_speedup"] == pytest.approx(3.5)
    assert s["at_least_4x"] == 2 and s["share_at_least_4x"] == pytest.approx(0.4)  # zh-cn (exactly 4x), ja
    assert s["not_reached"] == ["fi"]
    assert s["only_dense"] == [] and s["only_switch"] == [] and s["warnings"] == []
    assert s["dense"]["params"] == 1234 and s["dense"]["final_update"] == 300

    for name in ("per_language.png", "speedup_hist.png", "report.md"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "per_language.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert md.startswith("# ml test")
    for line in [
        "| de | -4.0000 | -3.5000 | +0.5000 | 250.0 | 1.20x |",
        "| zh-cn | -5.2000 | -4.9000 | +0.3000 | 75.0 | 4.00x |",
        "| ja | -5.5000 | -5.1000 | +0.4000 | 50.0 | 6.00x |",
        "| ko | -5.0000 | -5.2000 | -0.2000 | 100.0 | 3.00x |",
        "| fi | -5.0000 | -5.3000 | -0.3000 | not reached | not reached |",
        "| **all languages** | -4.6000 | -4.2000 | +0.4000 | 200.0 | 1.50x |",
        "- Switch better than dense (higher final neg. log perplexity): 3 of 5 languages (60%).",
        "- Step speed-up over the 4 languages that reach the dense final quality: mean 3.55x, median 3.50x.",
        "- At 4x or more: 2 of all 5 languages (40%; languages not reached count as below).",
        "- Not reached (1): fi.",
    ]:
        assert line in md.splitlines(), line
    assert "![per-language final neg. log perplexity](per_language.png)" in md
    assert "Warning" not in md

    stdout = capsys.readouterr().out
    assert "| de | -4.0000 | -3.5000 | +0.5000 | 250.0 | 1.20x |" in stdout
    assert "- Not reached (1): fi." in stdout and "per_language.png" in stdout


def test_fairseq_train_format_log_files_and_json(tmp_path, capsys):
    d = write_log(tmp_path / "d" / "train.log", UPDATES, side(0), OVERALL[0], fmt=plain_line)
    w = write_log(tmp_path / "w" / "train.log", UPDATES, side(1), OVERALL[1], fmt=plain_line)
    mr.main(["--dense", str(d), "--switch", str(w.parent), "--out", str(tmp_path / "o"), "--json"])
    s = json.loads(capsys.readouterr().out)  # stdout is the JSON alone
    rows = {r["language"]: r for r in s["languages"]}
    assert rows["de"]["step_speedup"] == pytest.approx(1.2)
    assert rows["fi"]["step_speedup"] is None
    assert s["not_reached"] == ["fi"] and s["improved"] == 3 and s["at_least_4x"] == 2
    assert s["switch"]["log"] == str(w)
    assert (tmp_path / "o" / "speedup_hist.png").stat().st_size > 0


def test_language_keys():
    assert mr.language_of("zh-cn_neg_log_perplexity") == "zh-cn"
    assert mr.language_of("de_neg_log_perplexity") == "de"
    assert mr.language_of("neg_log_perplexity") is None
    assert mr.language_of("best_neg_log_perplexity") is None  # fairseq's valid_best_<checkpoint metric>
    assert mr.language_of("best_de_neg_log_perplexity") is None
    assert mr.language_of("nll_loss") is None


def test_best_metric_key_and_overall_from_nll_loss(tmp_path):
    # no plain neg_log_perplexity: the overall row comes from nll_loss (base 2); valid_best_... is no language
    extra = {"valid_best_neg_log_perplexity": "-1.0"}
    d = write_log(tmp_path / "d.log", UPDATES, {"de": CURVES["de"][0]}, extra={**extra, "valid_nll_loss": "8"})
    w = write_log(tmp_path / "w.log", UPDATES, {"de": CURVES["de"][1]}, extra={**extra, "valid_nll_loss": "4"})
    s = mr.make_report(["--dense", str(d), "--switch", str(w), "--out", str(tmp_path / "o"), "--json"])
    assert [r["language"] for r in s["languages"]] == ["de"]
    assert s["overall"]["dense_final"] == pytest.approx(-8 * 0.6931471805599453)
    assert s["overall"]["updates_to_reach"] == 50  # flat curves: the Switch run is there at once


def test_language_sets_differ_compare_common(tmp_path, capsys):
    d_langs = side(0)
    w_langs = {k: v for k, v in side(1).items() if k != "ko"}
    w_langs["sw"] = [-7.0, -6.0, -5.0, -4.0]
    d = make_job(tmp_path / "d", UPDATES, d_langs, OVERALL[0])
    w = make_job(tmp_path / "w", UPDATES, w_langs, OVERALL[1])
    s = mr.make_report(["--dense", str(d), "--switch", str(w), "--out", str(tmp_path / "o")])
    assert s["only_dense"] == ["ko"] and s["only_switch"] == ["sw"]
    assert s["compared_languages"] == 4 and "ko" not in {r["language"] for r in s["languages"]}
    assert s["at_least_4x"] == 2 and s["share_at_least_4x"] == pytest.approx(0.5)
    err = capsys.readouterr().err
    assert "only in --dense: ko" in err and "only in --switch: sw" in err and "comparing the 4 in common" in err
    assert "only in --dense: ko" in (tmp_path / "o" / "report.md").read_text()


def test_no_language_in_common_refuses(tmp_path):
    d = make_job(tmp_path / "d", UPDATES, {"de": CURVES["de"][0]}, OVERALL[0])
    w = make_job(tmp_path / "w", UPDATES, {"fr": CURVES["de"][1]}, OVERALL[1])
    with pytest.raises(SystemExit) as e:
        mr.main(["--dense", str(d), "--switch", str(w), "--out", str(tmp_path / "o")])
    msg = str(e.value)
    assert "no language in common" in msg and "has de" in msg and "has fr" in msg
    assert str(d / "hydra_train.log") in msg
    assert not (tmp_path / "o").exists()


def test_different_final_updates_warn_and_use_dense_final(tmp_path, capsys):
    # dense stops at 200 (de final -5); Switch runs on to 300 and crosses -5 at 150 -> 200 / 150
    d = make_job(tmp_path / "d", UPDATES[:3], {"de": CURVES["de"][0][:3]}, OVERALL[0][:3])
    w = make_job(tmp_path / "w", UPDATES, {"de": CURVES["de"][1]}, OVERALL[1])
    s = mr.make_report(["--dense", str(d), "--switch", str(w), "--out", str(tmp_path / "o")])
    de = s["languages"][0]
    assert de["dense_updates"] == 200 and de["updates_to_reach"] == pytest.approx(150)
    assert de["step_speedup"] == pytest.approx(4 / 3)
    assert any("different updates (dense 200, Switch 300)" in x for x in s["warnings"])
    assert "speed-ups compare at the dense run's final update" in capsys.readouterr().err


def test_missing_overall_warns(tmp_path, capsys):
    d = make_job(tmp_path / "d", UPDATES, side(0), None)
    w = make_job(tmp_path / "w", UPDATES, side(1), OVERALL[1])
    s = mr.make_report(["--dense", str(d), "--switch", str(w), "--out", str(tmp_path / "o")])
    assert s["overall"] is None
    assert "overall row omitted" in capsys.readouterr().err
    assert "**all languages**" not in (tmp_path / "o" / "report.md").read_text()


def test_error_missing_run(runs, tmp_path):
    dense, _ = runs
    with pytest.raises(SystemExit) as e:
        mr.main(["--dense", str(dense), "--switch", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert re.search(r"--switch .*nope: does not exist; pass the run's job dir", str(e.value))


def test_error_no_log_and_several_logs(tmp_path, runs):
    dense, _ = runs
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=re.escape(f"no training log in {tmp_path / 'empty'}")):
        mr.main(["--dense", str(dense), "--switch", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    two = tmp_path / "two"
    write_log(two / "a.log", UPDATES, side(1))
    write_log(two / "b.log", UPDATES, side(1))
    with pytest.raises(SystemExit) as e:
        mr.main(["--dense", str(dense), "--switch", str(two), "--out", str(tmp_path / "o")])
    assert "several logs" in str(e.value) and f"--switch {two}/NAME.log" in str(e.value)


def test_error_no_validation_records(tmp_path, runs):
    _, switch = runs
    d = tmp_path / "d" / "train.log"
    d.parent.mkdir()
    d.write_text(hydra_line("train_inner", {"num_updates": "100", "wall": "1"}) + "\n")
    with pytest.raises(SystemExit) as e:
        mr.main(["--dense", str(d.parent), "--switch", str(switch), "--out", str(tmp_path / "o")])
    assert "--dense: no validation records" in str(e.value) and str(d) in str(e.value)
    assert "dataset.validate_interval_updates" in str(e.value)


def test_error_no_per_language_keys(tmp_path, runs):
    dense, _ = runs
    w = make_job(tmp_path / "w", UPDATES, {}, OVERALL[1])
    with pytest.raises(SystemExit) as e:
        mr.main(["--dense", str(dense), "--switch", str(w), "--out", str(tmp_path / "o")])
    msg = str(e.value)
    assert "--switch" in msg and str(w / "hydra_train.log") in msg
    assert "no per-language" in msg and "multilingual span-corruption task" in msg


def test_cli_error_has_no_traceback(tmp_path, runs):
    dense, _ = runs
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "multilingual_report.py"), "--dense", str(dense),
         "--switch", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert res.returncode == 1
    assert "does not exist" in res.stderr and "Traceback" not in res.stderr
