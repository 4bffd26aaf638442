"""End to end through the real CLIs: fairseq-train switch_tiny, then fairseq-generate on its checkpoint."""

import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_switch.logs import json_records

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "bin"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/prepare_demo_data.py"), "--out", str(out), "--limit-pairs", "3000",
         "--vocab-size", "500", "--valid", "100", "--test", "20"],
        check=True, cwd=ROOT,
    )
    return out


def train(data, save_dir, arch, updates, extra=()):
    cmd = [
        str(BIN / "fairseq-train"), str(data), "--user-dir", str(ROOT / "fairseq_switch"),
        "--task", "translation", "-s", "src", "-t", "tgt", "--arch", arch,
        "--criterion", "switch_cross_entropy", "--label-smoothing", "0.1",
        "--optimizer", "adam", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "10",
        "--max-tokens", "2048", "--max-update", str(updates), "--seed", "1",
        "--log-format", "json", "--log-interval", "5", "--no-progress-bar", "--num-workers", "0",
        "--save-dir", str(save_dir), "--no-epoch-checkpoints", "--save-interval-updates", str(updates),
        "--validate-interval-updates", str(updates), *extra,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def test_switch_tiny_trains_and_generates(demo_data, tmp_path):
    save = tmp_path / "ckpt"
    log = train(demo_data, save, "switch_tiny", 50)
    lines = log.splitlines()
    train_recs = json_records(lines, "train_inner")
    assert len(train_recs) >= 8, log[-2000:]
    first, last = train_recs[0], train_recs[-1]
    # 50 updates of Adam: the T5 layout's loss drops by 0.6-0.9 here (the fairseq layout's by 1.0)
    assert last["loss"] < first["loss"] - 0.5, (first, last)
    # routing metrics reach fairseq's logs
    for key in ("moe_balance", "moe_dropped", "moe_entropy", "moe_load_cv_0", "ce_loss"):
        assert key in last, sorted(last)
    valid = json_records(lines, "valid")
    assert valid and valid[-1]["nll_loss"] < first["nll_loss"]

    ckpt = save / "checkpoint_last.pt"
    assert ckpt.exists()
    gen = subprocess.run(
        [str(BIN / "fairseq-generate"), str(demo_data), "--user-dir", str(ROOT / "fairseq_switch"),
         "--task", "translation", "-s", "src", "-t", "tgt", "--path", str(ckpt), "--gen-subset", "test",
         "--beam", "2", "--max-len-b", "20", "--batch-size", "8", "--remove-bpe", "sentencepiece"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert gen.returncode == 0, gen.stderr[-3000:]
    hyps = [l for l in gen.stdout.splitlines() if l.startswith("H-")]
    assert len(hyps) == 20
    assert "BLEU" in gen.stdout + gen.stderr
