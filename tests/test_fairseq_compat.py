"""The stack fixes (fairseq_switch.compat): each patch's target as it was written for, the fairseq version
check, idempotence; and what the fixes do: checkpoint loading under weights_only, complete batching, one-line
errors."""

import argparse

import numpy as np
import pytest
import torch
from fairseq.data import data_utils

from fairseq_switch import cli_errors, compat
from fairseq_switch.plugin import register

register()  # what fairseq's --user-dir import of the package does


@pytest.mark.parametrize("patch", compat.PATCHES, ids=lambda p: p.name)
def test_each_patch_finds_what_it_was_written_for(patch):
    """A stack upgrade that changes a patched function's parameters fails here, not silently in a run."""
    original = compat.original(patch.name)
    assert compat.signature_matches(patch, original), (
        f"{patch.target} now has the signature {compat.signature_of(original, patch.checked)}, the patch was "
        f"written for {patch.signature}: check the patch ({patch.why})")
    if patch.assign:
        assert patch.current() is not original  # installed
    assert patch.replaces and patch.why


def test_apply_is_idempotent():
    installed = {p.name: p.current() for p in compat.PATCHES}
    originals = {p.name: compat.original(p.name) for p in compat.PATCHES}
    compat.apply()
    register()
    assert {p.name: p.current() for p in compat.PATCHES} == installed  # nothing wrapped twice
    assert {p.name: compat.original(p.name) for p in compat.PATCHES} == originals


def test_a_fairseq_the_fixes_were_not_written_for_is_refused_in_one_line(monkeypatch, capsys):
    import fairseq

    compat.check_fairseq_version()  # the installed, pinned one
    monkeypatch.setattr(fairseq, "__version__", "0.12.2")
    compat.check_fairseq_version()  # any 0.12.x
    monkeypatch.setattr(fairseq, "__version__", "0.13.0")
    with pytest.raises(cli_errors.UnsupportedStack) as refused:
        compat.apply()
    msg = str(refused.value)
    assert "\n" not in msg and msg.startswith("fairseq 0.13.0 is installed, but fairseq-switch's fixes")
    assert "`bash scripts/install.sh`" in msg and "fairseq-fixed==0.12.3.1" in msg
    # on the command line: that line, no traceback
    hook = cli_errors.one_line_errors(lambda *exc: pytest.fail("handed to the default hook"))
    hook(type(refused.value), refused.value, refused.value.__traceback__)
    assert capsys.readouterr().err.startswith(f"fairseq-switch: error: {msg}\n")


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

    import fairseq_switch

    def run(code, **env):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=120)

    ours = "from fairseq_switch.distributed import check_expert_count\ncheck_expert_count(3, 2)"
    user_dir = os.path.dirname(fairseq_switch.__file__)
    # what fairseq-train does with --user-dir: fairseq's import of the package registers it
    registered = (f"import argparse, fairseq.utils\n"
                  f"fairseq.utils.import_user_module(argparse.Namespace(user_dir={user_dir!r}))\n"
                  f"from fairseq.models import ARCH_MODEL_REGISTRY\nassert 'switch_tiny' in ARCH_MODEL_REGISTRY\n")
    res = run(registered + ours)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "fairseq-switch: error: --moe-expert-count 3 does not divide across 2 ranks" in res.stderr
    # the package imported first (an analysis module): fairseq skips the --user-dir, register() registers
    res = run(f"import fairseq_switch.logs, argparse, sys, fairseq.utils\n"
              f"fairseq.utils.import_user_module(argparse.Namespace(user_dir={user_dir!r}))\n"
              f"from fairseq.models import ARCH_MODEL_REGISTRY\nassert 'switch_tiny' not in ARCH_MODEL_REGISTRY\n"
              f"assert sys.excepthook is sys.__excepthook__\n"
              f"from fairseq_switch.plugin import register\nregister()\nassert 'switch_tiny' in ARCH_MODEL_REGISTRY\n"
              f"{ours}")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "fairseq-switch: error: --moe-expert-count 3 does not divide" in res.stderr
    res = run(registered + ours, FAIRSEQ_SWITCH_TRACEBACK="1")
    assert res.returncode == 1 and "Traceback" in res.stderr and "check_expert_count" in res.stderr
    res = run(registered + "int('x')")  # not raised by the plugin: Python's usual report
    assert res.returncode == 1 and "Traceback" in res.stderr and "fairseq-switch: error" not in res.stderr


def test_the_registry_gives_the_count_and_each_stack_fix_says_why_it_is_a_patch():
    from fairseq_switch.compat import registry

    assert f"{len(compat.PATCHES)} patches, installed only when the plugin registers" in registry.__doc__
    checkpoint_group = ("fairseq.trainer:", "fairseq.checkpoint_utils:")  # checkpoints/hooks.py, checkpoint_lock.py
    for p in compat.PATCHES:
        if not p.target.startswith(checkpoint_group):
            assert len(p.kept) > 40, f"{p.name}: say why no fairseq extension point can do it (`kept`)"
