"""Raw text -> prepare_pretraining_data.py -> span_corruption task -> fairseq-hydra-train multirun ->
scaling_report.py."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fairseq_switch.data.corpus import CorpusError, read_documents
from fairseq_switch.tasks.span_corruption import SpanCorruptionConfig, SpanCorruptionTask

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PREPARE = ROOT / "scripts" / "prepare_pretraining_data.py"


def prepare(out, *inputs, extra=()):
    cmd = [sys.executable, str(PREPARE), "--out", str(out), "--vocab-size", "600",
           "--valid-words", "4000", "--test-words", "2000", *extra, *map(str, inputs)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def data(pretrain_data):
    return pretrain_data  # conftest.py: Moby-Dick prepared once per session


def task_for(data_dir, **overrides):
    cfg = OmegaConf.structured(SpanCorruptionConfig(data=str(data_dir), input_length=64, seed=1,
                                                    dataset_impl=None))
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return SpanCorruptionTask.setup_task(cfg)


def test_prepare_reports_counts_and_is_idempotent(data):
    out, log = data
    assert "documents" in log and "tokens" in log
    stamp = json.loads((out / "prepare.json").read_text())
    assert set(stamp) == {"split", "spm", "encode", "binarize"}
    assert stamp["encode"]["stats"]["tokens"]["train"] > 100_000
    # sentinels are reserved right after fairseq's specials, so dictionary ids equal SentencePiece ids
    lines = (out / "dict.txt").read_text().splitlines()
    assert [l.split()[0] for l in lines[:100]] == [f"<extra_id_{i}>" for i in range(100)]
    again = subprocess.run([sys.executable, str(PREPARE), "--out", str(out), "--vocab-size", "600",
                            "--valid-words", "4000", "--test-words", "2000",
                            str(ROOT / "data" / "moby_dick" / "moby_dick.txt")],
                           capture_output=True, text=True, cwd=ROOT, check=True)
    assert again.stdout.count("up to date") == 4, again.stdout


def test_task_examples_are_deterministic_and_decode_to_text(data):
    out, _ = data
    import sentencepiece as spm

    task = task_for(out)
    task.load_dataset("valid")
    ds = task.dataset("valid")
    assert ds.size(0) == (64, 15)  # raw 70 tokens: 10 noise in 3 spans; 3 + 1 sentinels, EOS
    again = task_for(out)
    again.load_dataset("valid")
    for i in (0, 7, len(ds) - 1):
        assert torch.equal(ds[i]["source"], again.dataset("valid")[i]["source"])
        assert torch.equal(ds[i]["target"], again.dataset("valid")[i]["target"])
    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    text = sp.decode(ds[0]["source"].tolist()[:-1])
    assert "<extra_id_0>" in text and "<extra_id_1>" in text
    target = sp.decode(ds[0]["target"].tolist()[:-1])
    assert target.startswith("<extra_id_0>")


def test_task_rejects_dictionary_without_sentinels(data, tmp_path):
    out, _ = data
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = (out / "dict.txt").read_text().splitlines()
    (bad / "dict.txt").write_text("\n".join(l for l in lines if not l.startswith("<extra_id_")) + "\n")
    with pytest.raises(ValueError, match=r"lacks sentinel tokens.*<extra_id_0>.*prepare_pretraining_data\.py"):
        task_for(bad)
    with pytest.raises(FileNotFoundError, match=r"no dictionary at .*prepare_pretraining_data\.py"):
        task_for(tmp_path / "nowhere")


def test_prepare_rejects_empty_and_missing_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    res = prepare(tmp_path / "out", empty)
    assert res.returncode != 0 and "no text found" in res.stderr and "Traceback" not in res.stderr, res.stderr
    res = prepare(tmp_path / "out2", tmp_path / "missing.txt")
    assert res.returncode != 0 and "missing.txt: no such file" in res.stderr and "Traceback" not in res.stderr


def test_corpus_formats(tmp_path):
    (tmp_path / "lines.txt").write_text("first  doc\nsecond doc\n\n")
    (tmp_path / "paras.txt").write_text("doc one\nstill one\n\ndoc two\n")
    with gzip.open(tmp_path / "c4.json.gz", "wt") as f:
        f.write(json.dumps({"text": "a b\nc", "url": "x"}) + "\n" + json.dumps({"text": " "}) + "\n")
    assert list(read_documents(tmp_path / "lines.txt")) == ["first doc", "second doc"]
    assert list(read_documents(tmp_path / "paras.txt")) == ["doc one still one", "doc two"]
    assert list(read_documents(tmp_path / "paras.txt", "lines")) == ["doc one", "still one", "doc two"]
    assert list(read_documents(tmp_path / "c4.json.gz")) == ["a b c"]
    with pytest.raises(CorpusError, match="no 'content' field; pass --json-field"):
        list(read_documents(tmp_path / "c4.json.gz", json_field="content"))


def test_hydra_multirun_over_expert_counts_then_scaling_report(data, tmp_path):
    out, _ = data
    sweep = tmp_path / "sweep"
    cmd = [str(BIN / "fairseq-hydra-train"), "-m", "--config-dir", str(ROOT / "config"),
           "--config-name", "pretrain_tiny", f"task.data={out}", "task.input_length=64",
           "optimization.max_update=24", "dataset.validate_interval_updates=12", "common.log_interval=6",
           "lr_scheduler.warmup_updates=5", "checkpoint.no_save=true", "dataset.max_tokens=1024",
           "model.moe_expert_count=0,4", f"hydra.sweep.dir={sweep}"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_experts0", "1_experts4"]
    log4 = (sweep / "1_experts4" / "hydra_train.log").read_text()
    assert '"valid_neg_log_perplexity"' in log4 and '"moe_balance"' in log4

    report = subprocess.run([sys.executable, str(ROOT / "scripts" / "scaling_report.py"), str(sweep)],
                            capture_output=True, text=True, cwd=ROOT)
    assert report.returncode == 0, report.stdout + report.stderr
    summary = json.loads((sweep / "report" / "report.json").read_text())
    runs = summary["runs"] if isinstance(summary, dict) else summary
    assert [r["experts"] for r in runs] == [0, 4]
    assert all(r["updates"] == 24 for r in runs)
    assert runs[1]["params"] > runs[0]["params"]
    for png in ("nlp_vs_steps.png", "nlp_vs_time.png", "loss_vs_params.png"):
        assert (sweep / "report" / png).stat().st_size > 1000
