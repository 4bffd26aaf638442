"""Zero-shot probe (fairseq_switch/probe.py), its offline script and the upstream/downstream report."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from fairseq_switch import probe as P

from tests.helpers import build, make_dictionary

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BBC = ROOT / "data" / "downstream" / "bbc-topic"


class TableModel(nn.Module):
    """Stub seq2seq model: every target position gets log-softmax(w), whatever the input."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float))

    def forward(self, src_tokens, src_lengths, prev_output_tokens):
        B, T = prev_output_tokens.shape
        return (self.w.expand(B, T, -1),)

    def get_normalized_probs(self, out, log_probs=True):
        return torch.log_softmax(out[0], -1)


def _t(*ids):
    return torch.tensor(ids, dtype=torch.long)


def test_classification_scores_by_hand():
    d = make_dictionary(4)  # 0 <s> 1 <pad> 2 </s> 3 <unk> 4..7 w0..w3
    w = [0.0, 0.0, 1.0, 0.0, 2.0, 0.5, -1.0, 0.0]
    lp = torch.log_softmax(torch.tensor(w), -1).double().numpy()
    cands = [_t(4, 2), _t(5, 5, 2), _t(6, 2)]  # labels a, b, c
    task = P.ProbeTask("t", "classification", "valid", np.arange(2), [_t(7, 2), _t(7, 7, 7, 2)],
                       [cands[1], cands[2]], labels=["a", "b", "c"], candidates=cands, gold_label=np.array([1, 2]))
    model = TableModel(w).train()
    res = P.run_probe(model, d, task, batch_size=2)
    assert model.training  # mode restored
    scores = np.array([lp[4] + lp[2], 2 * lp[5] + lp[2], lp[6] + lp[2]])
    np.testing.assert_allclose(res.scores, np.stack([scores, scores]), rtol=1e-6)
    probs = np.exp(scores) / np.exp(scores).sum()
    np.testing.assert_allclose(res.value, [probs[1], probs[2]], rtol=1e-6)
    # a (-0.x) beats b and c: neither point is right
    assert res.correct.tolist() == [False, False]
    np.testing.assert_allclose(res.ll, [(2 * lp[5] + lp[2]) / 3, (lp[6] + lp[2]) / 2], rtol=1e-6)
    m = res.metrics()
    assert m["acc"] == 0.0 and m["conf"] == pytest.approx((probs[1] + probs[2]) / 2)


def test_tied_candidates_are_not_correct():
    d = make_dictionary(4)
    cands = [_t(4, 2), _t(5, 2)]
    task = P.ProbeTask("t", "classification", "valid", np.arange(1), [_t(7, 2)], [cands[0]], labels=["a", "b"],
                       candidates=cands, gold_label=np.array([0]))
    res = P.run_probe(TableModel([0.0] * 8), d, task)
    assert res.value[0] == pytest.approx(0.5) and not res.correct[0]


@pytest.mark.parametrize("experts", [0, 4])
def test_batched_scores_equal_one_at_a_time(experts):
    """Padding, batching and collate's length sort must not change any pair's score."""
    extra = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
             "--decoder-ffn-embed-dim", "64", "--moe-expert-count", str(experts), "--moe-eval-no-drop"]
    _, task, model = build("switch_tiny", extra)
    d = task.target_dictionary
    g = torch.Generator().manual_seed(0)
    srcs = [torch.cat([torch.randint(4, len(d), (n,), generator=g), _t(2)]) for n in (3, 9, 5, 12, 1)]
    tgts = [torch.cat([torch.randint(4, len(d), (n,), generator=g), _t(2)]) for n in (2, 6, 1, 4, 3)]
    model.eval()
    with torch.no_grad():
        got, count = P.score_pairs(model, d, srcs, tgts, batch_size=3)
        for i, (s, t) in enumerate(zip(srcs, tgts)):
            prev = torch.cat([_t(2), t[:-1]]).unsqueeze(0)
            out = model(s.unsqueeze(0), torch.tensor([s.numel()]), prev)
            lp = model.get_normalized_probs(out, log_probs=True)[0].float()
            want = lp.gather(-1, t.unsqueeze(-1)).sum().item()
            assert got[i] == pytest.approx(want, abs=1e-4), i
            assert count[i] == t.numel()


def test_spec_parsing_and_errors(tmp_path):
    assert P.parse_probe_spec("a=x/y, data/downstream/spam/") == [("a", "x/y"), ("spam", "data/downstream/spam/")]
    with pytest.raises(ValueError, match="twice"):
        P.parse_probe_spec("x=a,x=b")
    with pytest.raises(ValueError, match="may only hold"):
        P.parse_probe_spec("a b=x")
    with pytest.raises(FileNotFoundError, match="no test2 split.*valid.jsonl"):
        P.split_file(str(BBC), "test2")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        P.split_file(str(tmp_path / "nope"), "valid")


def test_task_kind_from_meta_or_targets(tmp_path):
    assert P.task_kind(str(BBC), ["x"]) == "classification"
    assert P.task_kind(str(ROOT / "data" / "downstream" / "debian"), ["a", "a", "a"]) == "generation"
    assert P.task_kind(str(tmp_path), ["yes", "no", "yes", "no", "yes"]) == "classification"
    assert P.task_kind(str(tmp_path), ["one summary", "another", "a third"]) == "generation"


@pytest.fixture(scope="module")
def encoder(pretrain_data):
    from fairseq.data import Dictionary

    data = Path(pretrain_data[0])
    d = Dictionary.load(str(data / "dict.txt"))
    return P.Encoder(str(data / "spm.model"), d, "{input} <extra_id_0>", "<extra_id_0> {target} <extra_id_1>", 24)


def test_encoder_templates_and_truncation(encoder, pretrain_data):
    d = encoder.dictionary
    s0, s1, eos = d.index("<extra_id_0>"), d.index("<extra_id_1>"), d.eos()
    src = encoder.source("Call me Ishmael. " * 20)
    assert src.numel() == 24 and src[-1] == eos and src[-2] == s0  # truncated input, template kept
    short = encoder.source("Call me Ishmael.")
    assert short.numel() < 24 and short[-2] == s0 and s0 not in short[:-2].tolist()
    assert short[:-2].tolist() == [d.index(p) for p in encoder.sp.encode("Call me Ishmael.", out_type=str)]
    tgt = encoder.target("whale")
    assert tgt.tolist() == [s0, *[d.index(p) for p in encoder.sp.encode("whale", out_type=str)], s1, eos]
    assert d.unk() not in tgt.tolist()
    spm = str(Path(pretrain_data[0]) / "spm.model")
    with pytest.raises(ValueError, match=r"must contain \{input\} exactly once"):
        P.Encoder(spm, d, "no slot", "{target}", 24)
    with pytest.raises(ValueError, match="leaves no room for the input"):
        P.Encoder(spm, d, "{input} " + "<extra_id_0> " * 30, "{target}", 24)


def test_point_subsets_and_selection_errors(encoder):
    a = P.load_probe_task("bbc", str(BBC), encoder, "valid", points=10, seed=3)
    b = P.load_probe_task("bbc", str(BBC), encoder, "valid", points=10, seed=3)
    c = P.load_probe_task("bbc", str(BBC), encoder, "valid", points=10, seed=4)
    assert a.indices.tolist() == b.indices.tolist() != c.indices.tolist()
    assert a.indices.size == 10 and np.all(np.diff(a.indices) > 0)
    assert a.kind == "classification" and a.labels == ["business", "entertainment", "politics", "sport", "tech"]
    lines = (BBC / "valid.jsonl").read_text().splitlines()
    for i, g in zip(a.indices, a.gold_label):
        assert a.labels[g] == json.loads(lines[i])["target"]
    full = P.load_probe_task("bbc", str(BBC), encoder, "valid", points=0)
    assert full.indices.size == len(lines)
    picked = P.load_probe_task("bbc", str(BBC), encoder, "valid", selection={"split": "test", "indices": [0, 5]})
    assert picked.split == "test" and picked.indices.tolist() == [0, 5]
    with pytest.raises(ValueError, match="must lie in 0..149"):
        P.load_probe_task("bbc", str(BBC), encoder, "valid", selection={"indices": [3, 150]})
    with pytest.raises(ValueError, match="weights must be 2 non-negative numbers"):
        P.load_probe_task("bbc", str(BBC), encoder, "valid", selection={"indices": [3, 4], "weights": [1]})


def test_weighted_selection_weights_the_metrics():
    d = make_dictionary(4)
    cands = [_t(4, 2), _t(5, 2)]
    task = P.ProbeTask("t", "classification", "valid", np.arange(2), [_t(7, 2), _t(7, 2)], [cands[0], cands[1]],
                       labels=["a", "b"], candidates=cands, gold_label=np.array([0, 1]), weights=np.array([3.0, 1.0]))
    res = P.run_probe(TableModel([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]), d, task)
    assert res.correct.tolist() == [True, False]
    m = res.metrics()
    assert m["acc"] == pytest.approx(75.0) and m["conf"] == pytest.approx(0.75 * res.value[0] + 0.25 * res.value[1])
    assert res.row()["weights"] == [3.0, 1.0]


# -- through fairseq-train and the scripts -----------------------------------------------------------
DIMS = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
        "--decoder-ffn-embed-dim", "64"]
PROBE = ["--probe", f"bbc={BBC}", "--probe-points", "6"]


@pytest.fixture(scope="module")
def probed_run(pretrain_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("probed")
    cmd = [BIN / "fairseq-train", pretrain_data[0], "--user-dir", ROOT / "fairseq_switch", "--task", "span_corruption",
           "--input-length", "64", *DIMS, "--arch", "switch_tiny", "--moe-expert-count", "4",
           "--criterion", "switch_cross_entropy", "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "1024",
           "--max-update", "8", "--validate-interval-updates", "4", "--save-interval-updates", "4",
           "--keep-interval-updates", "-1", "--no-epoch-checkpoints", "--save-dir", save, "--log-format", "json",
           "--log-interval", "1", "--no-progress-bar", "--num-workers", "0", "--seed", "1", "--cpu", *PROBE]
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return save, res.stdout + res.stderr


def test_probe_metrics_logged_at_each_validation(probed_run):
    from fairseq_switch.logs import json_records

    save, log = probed_run
    valid = json_records(log.splitlines(), "valid")
    assert [int(r["num_updates"]) for r in valid] == [4, 8]
    rows = P.read_rows(str(save / "probe" / "bbc.jsonl"))
    assert [r["update"] for r in rows] == [4, 8]
    for rec, row in zip(valid, rows):
        assert len(row["value"]) == 6 and row["kind"] == "classification"
        assert rec["probe_bbc_acc"] == pytest.approx(100 * np.mean(row["correct"]), abs=1e-3)
        assert rec["probe_bbc_conf"] == pytest.approx(np.mean(row["value"]), abs=1e-4)
        assert rec["probe_bbc_ll"] == pytest.approx(np.mean(row["ll"]), abs=1e-4)
    assert rows[0]["value"] != rows[1]["value"]  # the model moved between validations


def test_offline_probe_equals_in_training_probe(probed_run, tmp_path):
    save, _ = probed_run
    script = [sys.executable, ROOT / "scripts" / "probe_checkpoints.py", *PROBE, "--seed", "1", "--cpu"]
    res = subprocess.run([str(c) for c in script + ["--out", tmp_path, save]], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    offline = {r["update"]: r for r in P.read_rows(str(tmp_path / "bbc.jsonl"))}
    assert sorted(offline) == [4, 8]  # checkpoint_last (update 8) is not scored twice
    for row in P.read_rows(str(save / "probe" / "bbc.jsonl")):
        o = offline[row["update"]]
        assert o["indices"] == row["indices"] and o["correct"] == row["correct"]
        np.testing.assert_allclose(o["value"], row["value"], atol=1e-5)
        np.testing.assert_allclose(o["ll"], row["ll"], atol=1e-5)
    # next to the checkpoints, where the run wrote its own rows: nothing new to score
    again = subprocess.run([str(c) for c in script + [save]], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0 and again.stdout.count("already scored") == 3, again.stdout[-2000:]


def test_probe_errors_are_one_line(pretrain_data, tmp_path):
    cmd = [BIN / "fairseq-train", pretrain_data[0], "--user-dir", ROOT / "fairseq_switch", "--task", "span_corruption",
           "--input-length", "64", *DIMS, "--arch", "t5_tiny", "--optimizer", "adam", "--lr", "1e-3",
           "--max-tokens", "1024", "--max-update", "1", "--save-dir", tmp_path, "--no-save", "--num-workers", "0",
           "--cpu", "--probe", f"{tmp_path}/missing"]
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode != 0
    assert "fairseq-switch: error: --probe: no such folder" in res.stderr and "Traceback" not in res.stderr


# -- the report -------------------------------------------------------------------------------------
def _probe_rows(run: Path, task: str, updates, values, correct):
    P.write_rows(str(run / "checkpoints" / "probe" / f"{task}.jsonl"),
                 [{"update": n, "task": task, "kind": "classification", "split": "valid",
                   "indices": list(range(values.shape[0])), "value": values[:, j].tolist(),
                   "ll": np.log(values[:, j]).tolist(), "correct": correct[:, j].tolist()}
                  for j, n in enumerate(updates)])


def _fake_run(root: Path, name: str, experts: int, updates, upstream, finetuned, values, correct):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(f"model:\n  moe_expert_count: {experts}\n")
    log = [f'[2026-01-01 00:00:00,000][valid][INFO] - {{"epoch": 1, "valid_nll_loss": "{-u / math.log(2):.6f}", '
           f'"valid_neg_log_perplexity": "{u:.6f}", "valid_num_updates": "{n}"}}' for n, u in zip(updates, upstream)]
    (run / "hydra_train.log").write_text("\n".join(log) + "\n")
    (run / "checkpoints" / "probe").mkdir(parents=True)
    (run / "finetune").mkdir()
    _probe_rows(run, "t", updates, values, correct)
    P.write_rows(str(run / "finetune" / "t.jsonl"), [{"update": n, "test": f} for n, f in zip(updates, finetuned)])


def test_upstream_downstream_report(tmp_path):
    from scipy import stats

    from fairseq_switch.lab.reports import upstream_downstream as ud
    rng = np.random.default_rng(0)
    ups = [100, 200, 300, 400]
    up_a, up_b = [-6.0, -5.5, -5.2, -5.0], [-6.1, -5.4, -5.0, -4.9]
    ft_a, ft_b = [40.0, 52.0, 55.0, 61.0], [38.0, 50.0, 60.0, 58.0]
    vals = rng.uniform(0.05, 0.95, size=(40, 8))
    corr = (vals > 0.5).astype(float)
    _fake_run(tmp_path, "dense", 0, ups, up_a, ft_a, vals[:, :4], corr[:, :4])
    _fake_run(tmp_path, "switch", 8, ups, up_b, ft_b, vals[:, 4:], corr[:, 4:])
    out = tmp_path / "report"
    assert ud.main([str(tmp_path / "dense"), str(tmp_path / "switch"), "--task", "t", "--budgets", "4,16,64",
                    "--draws", "20", "--out", str(out)]) == 0
    res = json.loads((out / "report.json").read_text())
    r, p = stats.pearsonr(up_a + up_b, ft_a + ft_b)
    rho, q = stats.spearmanr(up_a + up_b, ft_a + ft_b)
    u = res["upstream_vs_finetuned"]
    assert u["pearson"] == pytest.approx(r) and u["pearson_p"] == pytest.approx(p)
    assert u["spearman"] == pytest.approx(rho) and u["spearman_p"] == pytest.approx(q)
    full = vals.mean(axis=0)
    np.testing.assert_allclose(res["probe_full"], full, atol=1e-5)
    assert res["probe_vs_finetuned"]["pearson"] == pytest.approx(stats.pearsonr(full, ft_a + ft_b)[0], abs=1e-5)
    assert sorted(res["budgets"]) == ["16", "4"]  # 64 > the 40 pool points: skipped
    assert res["budgets"]["16"]["random"]["draws"] == 20 and res["models"]["runs"] == ["dense", "switch"]
    # models: each run's last checkpoint; dense fine-tunes better (61 vs 58), so the probe is right iff it
    # scores dense's last checkpoint higher
    m = res["models"]
    assert m["finetuned"] == [61.0, 58.0] and m["probe"] == pytest.approx([full[3], full[7]], abs=1e-5)
    assert m["top1"] == bool(full[3] > full[7]) and m["spearman"] == (1.0 if full[3] > full[7] else -1.0)
    assert (out / "upstream_downstream_t.png").stat().st_size > 0 and (out / "selection_t.png").is_file()
    assert "task_relatedness" not in res  # one task

    other = rng.uniform(0.05, 0.95, size=(10, 8))  # a second task: relatedness and the budget split
    _probe_rows(tmp_path / "dense", "u", ups, other[:, :4], other[:, :4] > 0.5)
    _probe_rows(tmp_path / "switch", "u", ups, other[:, 4:], other[:, 4:] > 0.5)
    assert ud.main([str(tmp_path / "dense"), str(tmp_path / "switch"), "--task", "t,u", "--budgets", "16",
                    "--draws", "5", "--out", str(out)]) == 0
    rel = json.loads((out / "report.json").read_text())["task_relatedness"]
    assert rel["tasks"] == ["t", "u"] and np.allclose(np.diag(rel["matrix"]), 1.0)
    assert sum(rel["split"]["16"].values()) == 16 and min(rel["split"]["16"].values()) >= 1

    sel_file = tmp_path / "sel.json"
    assert ud.main([str(tmp_path / "dense"), str(tmp_path / "switch"), "--task", "t", "--write-selection",
                    str(sel_file), "--budget", "7", "--method", "polyfit"]) == 0
    chosen = json.loads(sel_file.read_text())["t"]
    assert chosen["split"] == "valid" and len(set(chosen["indices"])) == 7 and max(chosen["indices"]) < 40
    assert "weights" not in chosen
    assert ud.main([str(tmp_path / "dense"), str(tmp_path / "switch"), "--task", "t", "--write-selection",
                    str(sel_file), "--budget", "7", "--method", "correlation-weighted"]) == 0
    chosen = json.loads(sel_file.read_text())["t"]
    assert len(chosen["weights"]) == 7 and sum(chosen["weights"]) == 40


def test_report_refuses_mismatched_points(tmp_path):
    from fairseq_switch.lab.reports import upstream_downstream as ud
    vals = np.full((5, 3), 0.5) + np.arange(3) * 0.1
    _fake_run(tmp_path, "a", 0, [1, 2, 3], [-3, -2, -1], [1, 2, 3], vals, vals > 0.55)
    rows = P.read_rows(str(tmp_path / "a" / "checkpoints" / "probe" / "t.jsonl"))
    rows[1]["indices"] = [0, 1, 2, 3, 9]
    (tmp_path / "a" / "checkpoints" / "probe" / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit, match="probed on different points"):
        ud.main([str(tmp_path / "a"), "--task", "t"])
    with pytest.raises(SystemExit, match="no probe rows for task 'u'"):
        ud.main([str(tmp_path / "a"), "--task", "u"])


def test_finetune_checkpoints_writes_one_row_per_update(probed_run, tmp_path):
    save, _ = probed_run
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("checkpoint_1_4.pt", "checkpoint_last.pt"):  # last holds update 8
        (run / "checkpoints" / name).symlink_to(save / name)
    cmd = [sys.executable, ROOT / "scripts" / "finetune_checkpoints.py", "--task", f"bbc={BBC}", "--prefix",
           "classify: ", "--updates", "2", "--validate-every", "2", run]
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = [json.loads(x) for x in (run / "finetune" / "bbc.jsonl").read_text().splitlines()]
    assert sorted(r["update"] for r in rows) == [4, 8]
    assert all(r["metric"] == "acc" and 0 <= r["test"] <= 100 and r["experts"] == 4 for r in rows)
    assert all(0 <= r["valid_best"] <= 100 and r["valid_nlp"] < 0 for r in rows)
    assert not list((run / "finetune").glob("bbc-u*/*.pt"))  # fine-tuned checkpoints removed once scored
    again = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0 and again.stdout.count("skipped") == 2
    rows_file = run / "finetune" / "bbc.jsonl"
    rows_file.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "valid_nlp"}) + "\n" for r in rows))
    fresh = subprocess.run([str(c) for c in cmd + ["--refresh"]], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert fresh.returncode == 0 and "2 rows refreshed" in fresh.stdout
    assert [json.loads(x) for x in rows_file.read_text().splitlines()] == rows  # recomputed from the kept logs


def test_probe_under_expert_parallelism_matches_offline(pretrain_data, tmp_path):
    """2 gloo ranks, 2 experts each: every rank scores the same points (the all-to-alls line up), only
    rank 0 writes, and the rows equal the offline probe of the saved (per-rank) checkpoint."""
    from . import ep_harness as H

    argv = [pretrain_data[0], "--user-dir", ROOT / "fairseq_switch", "--task", "span_corruption",
            "--input-length", "64", *DIMS, "--arch", "switch_tiny", "--moe-expert-count", "4",
            "--criterion", "switch_cross_entropy", "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "512",
            "--max-update", "2", "--validate-interval-updates", "2", "--no-epoch-checkpoints", "--save-dir", tmp_path,
            "--log-format", "json", "--log-interval", "1", "--no-progress-bar", "--num-workers", "0", "--seed", "1",
            "--cpu", *PROBE, "--probe-points", "4"]
    rc, out, err = H.run_process_group(H.fairseq_train_cmd(argv, 2), cwd=ROOT)
    assert rc == 0, out[-3000:] + err[-3000:]
    assert "expert parallelism: 2 ranks, 2 expert(s) per rank" in out + err
    rows = P.read_rows(str(tmp_path / "probe" / "bbc.jsonl"))
    assert len(rows) == 1 and rows[0]["update"] == 2 and len(rows[0]["value"]) == 4
    script = [sys.executable, ROOT / "scripts" / "probe_checkpoints.py", *PROBE, "--probe-points", "4", "--cpu",
              "--out", tmp_path / "offline", tmp_path / "checkpoint_last.pt"]
    res = subprocess.run([str(c) for c in script], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    offline = P.read_rows(str(tmp_path / "offline" / "bbc.jsonl"))[0]
    np.testing.assert_allclose(offline["value"], rows[0]["value"], atol=1e-5)
    np.testing.assert_allclose(offline["ll"], rows[0]["ll"], atol=1e-5)
