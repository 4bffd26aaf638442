"""Numerics: a non-finite step is diagnosed by fairseq's NanDetector, and `fairseq-train --bf16 --cpu` trains."""

import json
import logging
import sys

import pytest
import torch

from . import ep_harness as H


def test_non_finite_expert_in_training_is_named_by_nan_detector(tmp_path, caplog):
    H.write_dictionary(str(tmp_path))
    trainer = H.build_trainer(str(tmp_path), 1, 0, ["--save-dir", str(tmp_path)])  # crash.pt goes there
    fc2 = trainer.get_model().switch_ffns[0].experts[1].fc2
    fc2.register_forward_hook(lambda mod, inp, out: torch.full_like(out, float("nan")))
    sample = H.collate(H.global_batches(1, [4])[0][0])
    trainer.reset_dummy_batch(sample)
    with caplog.at_level(logging.WARNING, logger="fairseq.nan_detector"):
        with pytest.raises(FloatingPointError, match="Nan/Inf"):  # not a TypeError from the diagnostic rerun
            trainer.train_step([sample])
    found = [r.getMessage() for r in caplog.records if r.name == "fairseq.nan_detector"]
    assert found and found[0].startswith("NaN detected in output of encoder.layers.1.fc1.experts.1.fc2,"), found


def test_nan_detector_looks_into_the_router_output(caplog):
    from fairseq.nan_detector import NanDetector

    from fairseq_switch.modules.routing import RouterConfig
    from fairseq_switch.modules.switch_layer import SwitchFFN

    layer = SwitchFFN(8, 16, RouterConfig(4, jitter_eps=0.0), activation_fn=torch.relu)
    with torch.no_grad():
        layer.router.weight.fill_(float("nan"))
    with caplog.at_level(logging.WARNING, logger="fairseq.nan_detector"), NanDetector(layer):
        layer(torch.randn(6, 8)).sum().backward()
    found = [r.getMessage() for r in caplog.records if r.name == "fairseq.nan_detector"]
    # the router itself, not the layer around it
    assert found and found[0].startswith("NaN detected in output of router,"), found


def test_bf16_on_cpu_trains_through_the_cli(tmp_path, monkeypatch, caplog):
    from fairseq_cli import train

    from fairseq_switch.modules.routing import Top1Router

    data = tmp_path / "data"
    H.write_corpus(str(data), num_docs=40)
    argv = [str(data), "--user-dir", H.USER_DIR, "--task", "span_corruption", "--arch", "switch_tiny",
            "--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
            "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
            "--moe-expert-count", "4", "--input-length", "16", "--criterion", "switch_cross_entropy",
            "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "256", "--seed", "7", "--max-update", "2",
            "--save-dir", str(tmp_path / "save"), "--no-save", "--disable-validation", "--log-format", "json",
            "--log-interval", "1", "--no-progress-bar", "--num-workers", "0", "--cpu", "--bf16"]
    monkeypatch.setattr(sys, "argv", ["fairseq-train", *argv])
    routed = []

    def record(module, inp, out):
        if isinstance(module, Top1Router):
            routed.append((inp[0].dtype, out.gate.dtype, out.balance_loss.dtype, out.z_loss.dtype))

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        with caplog.at_level(logging.INFO):
            train.cli_main()  # what fairseq-train runs, in this process
    finally:
        handle.remove()
    losses = [float(json.loads(r.getMessage())["loss"]) for r in caplog.records if r.name == "train_inner"]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses))), losses
    # the model ran in bf16 (the router's input), the router in fp32 (gate and aux losses)
    assert routed and set(routed) == {(torch.bfloat16, torch.float32, torch.float32, torch.float32)}, set(routed)
