"""The stack fixes applied on import: checkpoint loading under weights_only, complete batching."""

import argparse

import numpy as np
import pytest
import torch

import fairseq_switch  # noqa: F401  (applies the fixes)
from fairseq.data import data_utils


@pytest.mark.parametrize(
    "kw",
    [
        dict(max_sentences=20, required_batch_size_multiple=8),
        dict(max_sentences=4, required_batch_size_multiple=8),
        dict(max_tokens=100, required_batch_size_multiple=8),
        dict(max_tokens=100, required_batch_size_multiple=1),
        dict(max_sentences=3, max_tokens=60, required_batch_size_multiple=2),
    ],
)
@pytest.mark.parametrize("use_vec", [True, False])
def test_batch_by_size_keeps_every_example(kw, use_vec):
    sizes = np.arange(20) + 5
    idx = np.arange(20)
    vec = sizes if use_vec else None
    batches = data_utils.batch_by_size(idx, lambda i: sizes[i], num_tokens_vec=vec, **kw)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(20))  # each example exactly once
    for b in batches:
        if kw.get("max_sentences"):
            assert len(b) <= kw["max_sentences"]
        if kw.get("max_tokens"):
            assert len(b) * sizes[b].max() <= kw["max_tokens"]


def test_fairseq_checkpoint_types_load_with_weights_only(tmp_path):
    state = {
        "args": argparse.Namespace(arch="switch_tiny", lr=[1e-3]),
        "extra_state": {"best": np.float64(1.5), "arr": np.arange(3)},
        "model": {"w": torch.ones(2)},
    }
    path = tmp_path / "ckpt.pt"
    torch.save(state, path)
    loaded = torch.load(path, map_location="cpu")  # what fairseq 0.12 does: default weights_only
    assert loaded["args"].arch == "switch_tiny"
    assert loaded["extra_state"]["best"] == 1.5
    assert torch.equal(loaded["model"]["w"], torch.ones(2))


class Custom:
    pass


def test_unlisted_types_are_still_refused(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"x": Custom()}, path)
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        torch.load(path, map_location="cpu")


def test_plugin_input_errors_print_as_one_line_not_a_traceback():
    import os
    import subprocess
    import sys

    def run(code, **env):
        return subprocess.run([sys.executable, "-c", "import fairseq_switch\n" + code], capture_output=True,
                              text=True, env={**os.environ, **env}, timeout=120)

    ours = "from fairseq_switch.distributed import check_expert_count\ncheck_expert_count(3, 2)"
    res = run(ours)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "fairseq-switch: error: --moe-expert-count 3 does not divide across 2 ranks" in res.stderr
    res = run(ours, FAIRSEQ_SWITCH_TRACEBACK="1")
    assert res.returncode == 1 and "Traceback" in res.stderr and "check_expert_count" in res.stderr
    res = run("int('x')")  # not raised by the plugin: Python's usual report
    assert res.returncode == 1 and "Traceback" in res.stderr and "fairseq-switch: error" not in res.stderr
