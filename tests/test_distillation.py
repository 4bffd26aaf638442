"""Distillation (Fedus et al. 2021, Sec. 4.2): the loss on hand-built logits, student initialisation, the frozen
teacher, vocabulary checks, the top-k cache, and runs through fairseq-train."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from fairseq.data import Dictionary

from fairseq_switch.criterions.switch_distillation import SwitchDistillationCriterion, soft_cross_entropy
from fairseq_switch.data.teacher_cache import TeacherCache, example_key
from fairseq_switch.models.student_init import plan_student_init
from fairseq_switch.models.teacher import check_teacher_vocabulary, freeze

from tests.helpers import build, make_dictionary, random_batch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LN2 = math.log(2)


class Fixed(nn.Module):
    """A 'model' whose output logits are given: enough for a criterion's forward."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, **net_input):
        return self.logits + self.w, {}

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        return torch.log_softmax(net_output[0].float(), -1)

    def get_targets(self, sample, net_output):
        return sample["target"]


def _criterion(task, **kw):
    c = SwitchDistillationCriterion(task, sentence_avg=False, label_smoothing=0.0, distill_weight=0.0)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def _one_token(d):
    """Student p = (1/4, 1/4, 1/2), teacher q = (1/2, 1/4, 1/4) over three real symbols; gold = the third.
    CE(gold) = ln 2; CE(q, p) = 1/2 ln 4 + 1/4 ln 4 + 1/4 ln 2 = 1.75 ln 2."""
    V = len(d)
    a, b, c = d.nspecial, d.nspecial + 1, d.nspecial + 2
    s = torch.full((1, 1, V), -1e4)
    t = torch.full((1, 1, V), -1e4)
    s[0, 0, [a, b, c]] = torch.tensor([0.0, 0.0, LN2])
    t[0, 0, [a, b, c]] = torch.tensor([LN2, 0.0, 0.0])
    sample = {"net_input": {"src_tokens": torch.tensor([[a, d.eos()]]), "src_lengths": torch.tensor([2]),
                            "prev_output_tokens": torch.tensor([[d.eos()]])},
              "target": torch.tensor([[c]]), "ntokens": 1}
    return s, t, sample


@pytest.mark.parametrize("w, expected", [(0.0, 1.0), (0.25, 0.75 + 0.25 * 1.75), (1.0, 1.75)])
def test_loss_on_hand_built_logits(w, expected):
    d = make_dictionary(10)
    _, task, _ = build("t5_tiny", dictionary=d)
    s, t, sample = _one_token(d)
    crit = _criterion(task, distill_weight=w, _teacher=[Fixed(t)])
    loss, sample_size, log = crit(Fixed(s), sample)
    assert sample_size == 1
    assert loss.item() == pytest.approx(expected * LN2, abs=1e-5)
    assert log["gt_loss"].item() == pytest.approx(LN2, abs=1e-5)
    assert log["kd_loss"].item() == pytest.approx(1.75 * LN2, abs=1e-5)
    assert log["nll_loss"].item() == pytest.approx(LN2, abs=1e-5)  # quality is always measured on the gold


def test_without_teacher_the_loss_is_switch_cross_entropy():
    d = make_dictionary(10)
    _, task, _ = build("t5_tiny", dictionary=d)
    s, _, sample = _one_token(d)
    loss, _, log = _criterion(task)(Fixed(s), sample)
    assert loss.item() == pytest.approx(LN2, abs=1e-5) and "kd_loss" not in log


def test_temperature_and_topk():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    full = soft_cross_entropy(s, mask, 2.0, teacher_logits=t)
    by_hand = -(torch.softmax(t / 2, -1) * torch.log_softmax(s / 2, -1)).sum(-1)[mask].sum() * 4
    assert full.item() == pytest.approx(by_hand.item(), rel=1e-6)
    v, i = t.topk(7, dim=-1)  # k = V is the full distribution
    assert soft_cross_entropy(s, mask, 2.0, topk_logits=v, topk_index=i).item() == pytest.approx(full.item(), rel=1e-6)
    v, i = t.topk(1, dim=-1)  # k = 1: cross-entropy with the teacher's argmax
    one = -torch.log_softmax(s, -1).gather(-1, i).squeeze(-1)[mask].sum()
    assert soft_cross_entropy(s, mask, topk_logits=v, topk_index=i).item() == pytest.approx(one.item(), rel=1e-6)


def test_bad_options_fail_clearly():
    d = make_dictionary(10)
    _, task, _ = build("t5_tiny", dictionary=d)
    base = dict(sentence_avg=False, label_smoothing=0.0)
    with pytest.raises(ValueError, match=r"--distill-weight must be in \[0, 1\], got 1.5"):
        SwitchDistillationCriterion(task, **base, distill_weight=1.5, teacher_path="x.pt")
    with pytest.raises(ValueError, match="--distill-weight > 0 needs --teacher-path"):
        SwitchDistillationCriterion(task, **base)
    with pytest.raises(ValueError, match=r"--teacher-topk must be in \[0, 14\]"):
        SwitchDistillationCriterion(task, **base, distill_weight=0.0, teacher_topk=99)
    with pytest.raises(FileNotFoundError, match="--teacher-path /nonexistent.pt: no such checkpoint"):
        SwitchDistillationCriterion(task, **base, teacher_path="/nonexistent.pt")


def test_frozen_teacher_gets_no_gradient():
    d = make_dictionary(40)
    small = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
             "--decoder-ffn-embed-dim", "64"]
    _, task, student = build("t5_tiny", small, dictionary=d)
    _, _, teacher = build("switch_tiny", small + ["--moe-expert-count", "4"], dictionary=d)
    teacher.train()  # freeze() must put it in eval mode itself
    crit = _criterion(task, distill_weight=0.25, _teacher=[freeze(teacher)])
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    loss, _, log = crit(student, random_batch(d, bsz=4))
    loss.backward()
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert list(crit.parameters()) == []  # not trained, not saved with the student, not wrapped in DDP
    assert all(torch.equal(p, before[n]) for n, p in teacher.named_parameters())
    assert log["kd_loss"] > 0
    # the teacher routes every token: no capacity limit, nothing dropped
    for f in teacher.switch_ffns:
        r = f.last_routing
        assert r.capacity >= r.stats.num_tokens.item() and r.stats.num_dropped.item() == 0


# -- student initialisation -----------------------------------------------------------------------
def _pair(ffn=64):
    d = make_dictionary(40)
    dims = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32"]
    _, _, teacher = build("switch_tiny", dims + ["--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
                                                 "--moe-expert-count", "4"], dictionary=d)
    _, _, student = build("t5_tiny", dims + ["--encoder-ffn-embed-dim", str(ffn), "--decoder-ffn-embed-dim",
                                             str(ffn)], dictionary=d)
    return teacher.state_dict(), student.state_dict()


@pytest.mark.parametrize("ffn_init", ["random", "expert", "mean"])
def test_init_copies_exactly_the_matching_weights(ffn_init):
    t, s = _pair()
    values, report = plan_student_init(s, t, ffn_init, ffn_expert=2)
    switch_ffn = {"encoder.layers.1", "decoder.layers.1"}  # moe_freq 2 of 2 layers
    for name, mine in s.items():
        host, _, rest = name.rpartition(".fc")
        in_switch_ffn = host in switch_ffn and rest[:1] in "12" and ".fc" in name and "attn" not in name
        if not in_switch_ffn:
            assert name in t and torch.equal(values[name], t[name]), name
            continue
        k, p = rest.split(".")
        experts = [t[f"{host}.fc1.experts.{e}.fc{k}.{p}"] for e in range(4)]
        if ffn_init == "random":
            assert name not in values and "random" in report.not_copied[name]
        elif ffn_init == "expert":
            assert torch.equal(values[name], experts[2])
        else:
            assert torch.allclose(values[name], torch.stack(experts).mean(0))
    assert set(values) | set(report.not_copied) == set(s)
    unused_experts = {"random": {0, 1, 2, 3}, "expert": {0, 1, 3}, "mean": set()}[ffn_init]
    assert set(report.unused) == {n for n in t if ".router." in n or
                                  (".experts." in n and int(n.split(".experts.")[1].split(".")[0]) in unused_experts)}


def test_init_refuses_a_student_of_other_shapes_and_a_missing_expert():
    t, s = _pair(ffn=32)
    with pytest.raises(ValueError, match="does not have the teacher's non-expert shapes"):
        plan_student_init(s, t, "mean")
    t, s = _pair()
    with pytest.raises(ValueError, match=r"--student-ffn-expert 7: the teacher's Switch layers have experts 0..3"):
        plan_student_init(s, t, "expert", ffn_expert=7)


def test_teacher_vocabulary_must_match_the_student(tmp_path):
    d = make_dictionary(40)
    state = {"model": {"encoder.embed_tokens.weight": torch.zeros(len(d) + 3, 4)}, "cfg": {"task": {"data": ""}}}
    with pytest.raises(ValueError, match=r"vocabulary has 47 symbols but the student's dictionary has 44"):
        check_teacher_vocabulary("t.pt", state, d)
    other = make_dictionary(40)
    other.symbols[10] = "zz"  # same size, one symbol different
    other.save(str(tmp_path / "dict.txt"))
    state = {"model": {"encoder.embed_tokens.weight": torch.zeros(len(d), 4)}, "cfg": {"task": {"data": str(tmp_path)}}}
    with pytest.raises(ValueError, match=r"differ at index 10 \('zz' vs 'w6'\).*--pretrained"):
        check_teacher_vocabulary("t.pt", state, d)
    d.save(str(tmp_path / "dict.txt"))
    check_teacher_vocabulary("t.pt", state, Dictionary.load(str(tmp_path / "dict.txt")))


# -- the top-k cache -------------------------------------------------------------------------------
def test_cache_round_trip_and_refuses_another_teacher(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"teacher a")
    b.write_bytes(b"teacher b")
    cache = TeacherCache(str(tmp_path / "c"), str(a), k=3)
    k1 = example_key(torch.tensor([5, 6, 2]), torch.tensor([2, 7]))
    k2 = example_key(torch.tensor([5, 6]), torch.tensor([2, 2, 7]))  # same tokens, other split: another key
    assert k1 != k2
    v, i = torch.randn(2, 3), torch.randint(0, 50, (2, 3))
    cache.put([(k1, v, i)])
    got = cache.get([k2, k1])
    assert got[0] is None and torch.equal(got[1][0], v) and torch.equal(got[1][1], i) and len(cache) == 1
    cache.close()
    with pytest.raises(ValueError, match="holds top-3 outputs of another teacher.*nothing was overwritten"):
        TeacherCache(str(tmp_path / "c"), str(b), k=3)
    with pytest.raises(ValueError, match="another teacher"):
        TeacherCache(str(tmp_path / "c"), str(a), k=4)
    with pytest.raises(ValueError, match="needs --teacher-topk > 0"):
        TeacherCache(str(tmp_path / "d"), str(a), k=0)
    assert len(TeacherCache(str(tmp_path / "c"), str(a), k=3)) == 1


# -- through fairseq-train ------------------------------------------------------------------------
DIMS = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
        "--decoder-ffn-embed-dim", "64"]


def train(data, save, updates, extra, check=True):
    cmd = [BIN / "fairseq-train", data, "--user-dir", ROOT / "fairseq_switch", "--task", "span_corruption",
           "--input-length", "64", *DIMS, "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "1024",
           "--max-update", updates, "--save-dir", save, "--no-epoch-checkpoints", "--disable-validation",
           "--log-format", "json", "--log-interval", "1", "--no-progress-bar", "--num-workers", "0", "--seed", "1",
           "--cpu", *extra]
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT, timeout=600)
    if check:
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def teacher_ckpt(pretrain_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("kd_teacher")
    train(pretrain_data[0], save, 15, ["--arch", "switch_tiny", "--moe-expert-count", "4",
                                       "--criterion", "switch_cross_entropy"])
    return save / "checkpoint_last.pt"


def _losses(res, key="loss"):
    from fairseq_switch.logs import json_records

    return [r[key] for r in json_records(res.stdout.splitlines() + res.stderr.splitlines(), "train_inner")]


def test_distillation_run_through_fairseq_train(pretrain_data, teacher_ckpt, tmp_path):
    """Student t5_tiny from the teacher's non-expert weights, top-k teacher: the loss falls; filling the
    cache on the way, or reading it after precompute_teacher.py, gives exactly the same losses."""
    kd = ["--arch", "t5_tiny", "--criterion", "switch_distillation", "--teacher-path", teacher_ckpt,
          "--student-init-from", teacher_ckpt, "--student-ffn-init", "mean", "--teacher-topk", "8"]
    plain = train(pretrain_data[0], tmp_path / "a", 12, kd)
    log = plain.stdout + plain.stderr
    assert "student initialised from" in log and "<- mean of 4 experts" in log
    assert "frozen, eval mode, no token dropped" in log
    losses = _losses(plain)
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3]), losses
    cache = ["--teacher-cache-dir", tmp_path / "cache"]
    first = train(pretrain_data[0], tmp_path / "b", 12, kd + cache)  # fills the cache as it goes
    assert _losses(first) == losses and set(_losses(first, "teacher_cache_hit")) == {0.0}
    # precomputed once by scripts/precompute_teacher.py: the run reads every teacher output
    pre = subprocess.run([sys.executable, ROOT / "scripts" / "precompute_teacher.py", "--epochs", "1", "--",
                          pretrain_data[0], "--user-dir", ROOT / "fairseq_switch", "--task", "span_corruption",
                          "--input-length", "64", *DIMS, *kd, "--teacher-cache-dir", tmp_path / "pre", "--max-tokens",
                          "1024", "--seed", "1", "--num-workers", "0", "--cpu", "--optimizer", "adam", "--lr", "3e-3"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert pre.returncode == 0, pre.stdout[-3000:] + pre.stderr[-3000:]
    assert "[precompute] train epoch 1:" in pre.stdout and " 0 already cached" in pre.stdout
    pre_run = train(pretrain_data[0], tmp_path / "d", 12, kd + ["--teacher-cache-dir", tmp_path / "pre"])
    assert set(_losses(pre_run, "teacher_cache_hit")) == {1.0} and _losses(pre_run) == losses
    # the student checkpoint holds the student only, and fairseq-generate needs neither teacher nor init file
    state = torch.load(tmp_path / "a" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert not any(".experts." in n for n in state["model"]) and state["criterion"] is None
    from fairseq import checkpoint_utils

    models, _ = checkpoint_utils.load_model_ensemble([str(tmp_path / "a" / "checkpoint_last.pt")],
                                                     arg_overrides={"student_init_from": "/gone/teacher.pt"})
    assert torch.equal(models[0].state_dict()["encoder.layers.0.fc1.weight"],
                       state["model"]["encoder.layers.0.fc1.weight"])


def test_mismatched_teacher_vocabulary_fails_before_training(pretrain_data, teacher_ckpt, tmp_path):
    data = tmp_path / "bin"
    data.mkdir()
    for f in Path(pretrain_data[0]).iterdir():
        if f.is_file():
            (data / f.name).write_bytes(f.read_bytes())
    lines = (data / "dict.txt").read_text().splitlines(keepends=True)
    (data / "dict.txt").write_text("".join(lines[:-5]))
    res = train(data, tmp_path / "s", 2, ["--arch", "t5_tiny", "--criterion", "switch_distillation",
                                          "--teacher-path", teacher_ckpt], check=False)
    assert res.returncode != 0
    assert "the teacher's vocabulary has 600 symbols but the student's dictionary has 595" in res.stderr
    assert "begin training" not in res.stdout + res.stderr
    assert "fairseq-switch: error: --teacher-path" in res.stderr and "Traceback" not in res.stderr


# -- fairseq_switch/lab/reports/distillation.py (scripts/distill_report.py) ----------------------------
def _job(path, choice, params, valid, expert_params=0):
    (path / ".hydra").mkdir(parents=True)
    if choice:
        (path / ".hydra" / "overrides.yaml").write_text(f"- distill={choice}\n- criterion.teacher_path=/t.pt\n")
    lines = [f"[2026-01-01 00:00:00,000][fairseq_cli.train][INFO] - num. shared model params: {params:,} "
             f"(num. trained: {params:,})",
             f"[2026-01-01 00:00:00,000][fairseq_cli.train][INFO] - num. expert model params: {expert_params} "
             f"(num. trained: {expert_params})"]
    for u, nlp in valid:
        rec = {"epoch": 1, "valid_loss": "1", "valid_neg_log_perplexity": str(nlp), "valid_num_updates": str(u)}
        lines.append(f"[2026-01-01 00:00:0{u % 10},000][valid][INFO] - {json.dumps(rec)}")
    (path / "hydra_train.log").write_text("\n".join(lines) + "\n")


def test_distill_report_rows(tmp_path):
    """Teacher -4.0 (10M params), baseline -5.0, students -4.8 and -4.7 (2M): 20% and 30% of the
    gain preserved at 80% compression; the baseline preserves 0% by definition."""
    from fairseq_switch.lab.reports import distillation as report
    sweep = tmp_path / "sweep"
    _job(sweep / "0_none", "none", 2_000_000, [(100, -5.5), (200, -5.0)])
    _job(sweep / "1_init", "init", 2_000_000, [(100, -5.2), (200, -4.8)])
    _job(sweep / "2_mix", "mix", 2_000_000, [(100, -5.1), (200, -4.7)])
    _job(tmp_path / "teacher", None, 1_000_000, [(400, -4.0)], expert_params=9_000_000)
    out = tmp_path / "t.md"
    report.main([str(sweep), "--teacher", str(tmp_path / "teacher"), "--out", str(out)])
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines()[2:]]
    cells = [[c.strip() for c in r] for r in rows]
    assert cells[0] == ["teacher (Switch)", "10,000,000", "400", "-4.0000", "100%", "-"]
    assert cells[1] == ["dense baseline (no distillation)", "2,000,000", "200", "-5.0000", "0%", "80%"]
    assert cells[2][0].startswith("+ teacher's non-expert") and cells[2][3:] == ["-4.8000", "20%", "80%"]
    assert cells[3][0].startswith("+ init, 0.75") and cells[3][3:] == ["-4.7000", "30%", "80%"]
    # at an earlier update: -5.2 vs baseline -5.5 against the teacher's -4.0 -> 20%
    t, b, rows_, gain = report.build_rows([("none", sweep / "0_none"), ("init", sweep / "1_init")],
                                          tmp_path / "teacher", None, 100)
    assert gain == pytest.approx(1.5) and rows_[0].preserved == pytest.approx(20.0)
    with pytest.raises(SystemExit, match="no validation at update 150; it has 100, 200"):
        report.build_rows([("none", sweep / "0_none")], tmp_path / "teacher", None, 150)
    with pytest.raises(SystemExit, match="no distill=none job; pass --baseline"):
        report.build_rows([("init", sweep / "1_init")], tmp_path / "teacher", None, None)


def test_two_rank_switch_student_with_local_teacher_and_cache(tmp_path):
    """Under torch.distributed (2 gloo ranks) the student's experts are split across ranks while the
    teacher holds all of its own in each rank and exchanges nothing, so ranks that read the cache and
    ranks that run the teacher cannot hang each other. A rerun reads every teacher output from the
    cache and gives the same losses."""
    from . import ep_harness as H

    data = tmp_path / "data"
    H.write_corpus(str(data))
    base = ["--task", "span_corruption", "--arch", "switch_tiny", *DIMS, "--moe-expert-count", "4",
            "--input-length", "32", "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "512", "--seed", "7",
            "--disable-validation", "--log-format", "json", "--log-interval", "1", "--no-progress-bar",
            "--num-workers", "0", "--no-epoch-checkpoints", "--cpu"]

    def run(save, world, extra):
        argv = [data, "--user-dir", ROOT / "fairseq_switch", *base, "--save-dir", save, *extra]
        rc, out, err = H.run_process_group(H.fairseq_train_cmd(argv, world), cwd=ROOT)
        assert rc == 0, out[-3000:] + err[-3000:]
        return out + err

    run(tmp_path / "teacher", 1, ["--criterion", "switch_cross_entropy", "--max-update", "4"])
    teacher = tmp_path / "teacher" / "checkpoint_last.pt"
    kd = ["--criterion", "switch_distillation", "--teacher-path", teacher, "--teacher-topk", "4",
          "--teacher-cache-dir", tmp_path / "cache", "--max-update", "4"]
    first = run(tmp_path / "s1", 2, kd)
    assert "expert parallelism: 2 ranks, 2 expert(s) per rank" in first
    assert "8 Switch layers" not in first and "2 Switch layers x 4 experts; frozen" in first
    second = run(tmp_path / "s2", 2, kd)
    from fairseq_switch.logs import json_records

    recs = [json_records(log.splitlines(), "train_inner") for log in (first, second)]
    assert [r["loss"] for r in recs[0]] == [r["loss"] for r in recs[1]] and len(recs[0]) == 4
    assert {r["teacher_cache_hit"] for r in recs[0]} == {0.0} and {r["teacher_cache_hit"] for r in recs[1]} == {1.0}
