"""scripts/device_check.sh --dry-run: every step of the GPU acceptance run, on the CPU at toy size."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_check")
    # this test's own venv, never reinstalled from inside a test run
    env = {**os.environ, "OUT": str(out), "VENV": sys.prefix, "DEVICE_CHECK_INSTALL": "skip", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "scripts/device_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    return proc, out


def test_dry_run_passes_and_writes_its_reports(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["device_check.json", "device_check.log", "device_check.md",
                                                       "layer_bench.md"]
    res = json.loads((out / "device_check.json").read_text())
    assert res["dry_run"] is True
    assert list(res["steps"]) == ["install", "pytest -m cuda", "layer benchmark", "train t5_small",
                                  "train switch_small", "train switch_small_grouped"]
    assert res["steps"]["install"]["status"].startswith("skipped")
    assert all(s["status"] == "ok" for name, s in res["steps"].items() if name != "install"), res["steps"]


def test_cuda_tests_skip_cleanly_on_the_cpu(dry_run):
    res = json.loads((dry_run[1] / "device_check.json").read_text())
    tests = res["cuda_tests"]
    assert tests["skipped"] == len(tests["tests"]) >= 14 and tests["failed"] == 0
    assert {t["message"] for t in tests["tests"]} == {"needs a CUDA device (scripts/device_check.sh)"}


def test_layer_benchmark_and_training_figures(dry_run):
    res = json.loads((dry_run[1] / "device_check.json").read_text())
    (row,) = res["layer_bench"]["rows"]
    assert (row["experts"], row["tokens"], row["dtype"]) == (4, 256, "bfloat16")
    for variant in ("dense", "index", "grouped", "einsum", "hf"):
        assert row[variant]["ms"] > 0 and row[variant]["mb"] > 0, variant
    assert row["grouped"]["path"] == "grouped"  # torch 2.13 has a CPU grouped_mm for bf16
    for name in ("t5_small", "switch_small", "switch_small_grouped"):
        run = res["training"][name]
        assert run["error"] is None and run["updates"] == 4, run
        assert run["step_ms"] > 0 and run["target_tokens_per_s"] > 0 and run["peak_memory_mb"] > 0
        assert 3 < run["final_loss"] < 10  # a vocabulary of ~150 words: ln(150) = 5.0 at the start
    targets = {t["what"]: t for t in res["targets"]}
    assert targets["switch_small / t5_small step time"]["value"] > 0
    assert all(t["verdict"] == "n/a (dry run)" for t in res["targets"])


def test_summary_prints_the_targets_next_to_the_figures(dry_run):
    md = (dry_run[1] / "device_check.md").read_text()
    assert md.startswith("# Device check (dry run: CPU, toy sizes; the targets apply to the GPU run)")
    assert "Switch FFN at most 1.2x dense, 16384 tokens, 32 experts, d 1024, ff 4096, bf16" in md
    assert "switch_small training step at most 1.15x t5_small's" in md
    assert "| train switch_small | ok |" in md and "## pytest -m cuda: 0 passed, 0 failed, 14 skipped" in md
