"""switch_transformer model: layer layout, dense twin, incremental decoding, criterion, bad settings."""

import math

import pytest
import torch

from fairseq_switch.criterions.switch_cross_entropy import SwitchCrossEntropyCriterion
from fairseq_switch.modules.switch_layer import SwitchFFN
from tests.helpers import build, random_batch


@pytest.mark.parametrize("layout, weights", [("t5", ("weight",)), ("fairseq", ("weight", "bias"))])
def test_every_second_ffn_is_switch_and_dense_twin_has_none(layout, weights):
    _, _, model = build("switch_tiny", ["--encoder-layers", "4", "--decoder-layers", "4", "--layout", layout])
    enc = [isinstance(l.fc1, SwitchFFN) for l in model.encoder.layers]
    dec = [isinstance(l.fc1, SwitchFFN) for l in model.decoder.layers]
    assert enc == [False, True, False, True] and dec == [False, True, False, True]
    assert all(f.num_experts == 8 for f in model.switch_ffns)
    _, _, dense = build("t5_tiny", ["--encoder-layers", "4", "--decoder-layers", "4", "--layout", layout])
    assert dense.switch_ffns == []
    # Every non-expert parameter of the Switch model exists, with its shape, in the dense twin.
    dense_shapes = {k: v.shape for k, v in dense.state_dict().items()}
    shared = {k: v.shape for k, v in model.state_dict().items() if ".experts." not in k and ".router." not in k}
    assert shared and all(dense_shapes[k] == shape for k, shape in shared.items())
    # what the Switch model lacks is exactly the dense FFNs at the Switch positions
    assert set(dense_shapes) - set(shared) == {
        f"{side}.layers.{i}.{fc}.{w}" for side in ("encoder", "decoder") for i in (1, 3)
        for fc in ("fc1", "fc2") for w in weights
    }


def test_moe_freq_one_and_expert_count_override():
    _, _, model = build("switch_tiny", ["--moe-freq", "1", "--moe-expert-count", "3"])
    assert len(model.switch_ffns) == 4 and model.switch_ffns[0].num_experts == 3


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--moe-expert-count", "-1"], "--moe-expert-count must be >= 1"),
        (["--moe-capacity-factor", "0"], "--moe-capacity-factor must be > 0"),
        (["--moe-eval-capacity-factor", "-2"], "--moe-eval-capacity-factor must be > 0"),
        (["--moe-freq", "3"], "--moe-freq 3 is larger than the number of layers"),
        (["--moe-min-capacity", "0"], "--moe-min-capacity must be >= 1"),
        (["--moe-jitter-eps", "-0.1"], "--moe-jitter-eps must be in"),
        (["--moe-router-init-scale", "0"], "--moe-router-init-scale must be > 0"),
        (["--moe-expert-dropout", "1.5"], "--moe-expert-dropout must be in"),
    ],
)
def test_bad_settings_are_clear_errors(extra, match):
    with pytest.raises(ValueError, match=match):
        build("switch_tiny", extra)


def test_incremental_decoding_matches_full_forward():
    _, task, model = build("switch_tiny", ["--dropout", "0"])
    model.eval()
    d = task.target_dictionary
    batch = random_batch(d, tgt_len=6)
    net = batch["net_input"]
    prev = net["prev_output_tokens"][:2]  # rows without padding
    src, lengths = net["src_tokens"][:2], net["src_lengths"][:2]
    model.make_generation_fast_()  # decode and full pass must route identically: drop nothing
    full, _ = model(src, lengths, prev)
    enc = model.encoder(src, src_lengths=lengths)
    state = {}
    steps = []
    for t in range(prev.size(1)):
        out, _ = model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)
        steps.append(out[:, -1])
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_generation_mode_drops_no_tokens():
    _, task, model = build("switch_tiny", ["--moe-eval-capacity-factor", "0.1", "--moe-min-capacity", "1"])
    model.eval()
    batch = random_batch(task.target_dictionary, bsz=8, src_len=12)
    model(**batch["net_input"])
    assert sum(r.stats.num_dropped.item() for r in [f.last_routing for f in model.switch_ffns]) > 0
    model.make_generation_fast_()  # what fairseq-generate's prepare_for_inference_ calls
    model(**batch["net_input"])
    assert all(f.last_routing.stats.num_dropped.item() == 0 for f in model.switch_ffns)


def test_criterion_adds_weighted_aux_losses():
    args, task, model = build("switch_tiny", ["--moe-loss-weight", "0.5", "--router-z-loss-weight", "0.25"])
    crit = task.build_criterion(args)
    assert isinstance(crit, SwitchCrossEntropyCriterion)
    batch = random_batch(task.target_dictionary)
    loss, sample_size, log = crit(model, batch)
    routings = [f.last_routing for f in model.switch_ffns]
    aux = 0.5 * sum(r.balance_loss for r in routings) + 0.25 * sum(r.z_loss for r in routings)
    assert sample_size == batch["ntokens"]
    torch.testing.assert_close(loss, log["ce_loss"] + aux.detach() * sample_size)
    assert log["moe_layers"] == 2
    assert log["moe_ntokens"].item() == 3 * 7 - 2 + batch["ntokens"]  # non-pad encoder + decoder tokens
    loss.backward()
    assert all(f.router.weight.grad is not None for f in model.switch_ffns)


def test_criterion_reduce_metrics_pools_workers():
    from fairseq.logging import metrics

    logs = [
        {"loss": 4.0, "ce_loss": 3.0, "nll_loss": 3.0, "ntokens": 2, "sample_size": 2, "nsentences": 1,
         "nbatches": 1, "moe_batches": 1.0, "moe_layers": 1, "moe_balance": torch.tensor(1.2),
         "moe_z": torch.tensor(3.0),
         "moe_ntokens": torch.tensor(4.0), "moe_dropped": torch.tensor(1.0), "moe_entropy": torch.tensor(2.0),
         "moe_counts_0": torch.tensor([3.0, 1.0]), "moe_dropped_0": torch.tensor(1.0),
         "moe_ntokens_0": torch.tensor(4.0)},
        {"loss": 2.0, "ce_loss": 1.0, "nll_loss": 1.0, "ntokens": 2, "sample_size": 2, "nsentences": 1,
         "nbatches": 1, "moe_batches": 1.0, "moe_layers": 1, "moe_balance": torch.tensor(1.0),
         "moe_z": torch.tensor(1.0),
         "moe_ntokens": torch.tensor(4.0), "moe_dropped": torch.tensor(0.0), "moe_entropy": torch.tensor(2.0),
         "moe_counts_0": torch.tensor([3.0, 1.0]), "moe_dropped_0": torch.tensor(0.0),
         "moe_ntokens_0": torch.tensor(4.0)},
    ]
    with metrics.aggregate() as agg:
        SwitchCrossEntropyCriterion.reduce_metrics(logs)
        m = agg.get_smoothed_values()
    assert m["moe_dropped_0"] == pytest.approx(1 / 8)  # the layer's own drops, pooled over batches
    assert m["moe_balance"] == pytest.approx(1.1)
    assert m["moe_z"] == pytest.approx(2.0)
    assert m["moe_dropped"] == pytest.approx(1 / 8)
    assert m["moe_entropy"] == pytest.approx(0.5)
    # counts pooled: [6, 2], mean 4 -> max/mean 1.5, cv = std/mean = 2/4
    assert m["moe_load_max_0"] == pytest.approx(1.5)
    assert m["moe_load_cv_0"] == pytest.approx(0.5)
    assert m["ce_loss"] == pytest.approx(4.0 / 4 / math.log(2), abs=1e-3)


def test_criterion_reduce_metrics_adds_expert_parallel_shares():
    """Two ranks of one global batch each log their share (weight 1/2) of the batch's aux losses."""
    from fairseq.logging import metrics

    def log(balance, z, a2a):
        return {"loss": 1.0, "nll_loss": 1.0, "ntokens": 2, "sample_size": 2, "nsentences": 1, "nbatches": 1,
                "moe_batches": 0.5, "moe_layers": 1, "moe_balance": torch.tensor(balance), "moe_z": torch.tensor(z),
                "moe_ntokens": torch.tensor(4.0), "moe_dropped": torch.tensor(0.0),
                "moe_entropy": torch.tensor(1.0), "moe_counts_0": torch.tensor([1.0, 3.0]), "moe_a2a_s": a2a}

    # ranks spent 0.5 s and 1.5 s in all-to-all and log it divided by W = 2
    logs = [log(0.7, 1.5, 0.25), log(0.4, 0.5, 0.75)]
    # fairseq either hands over the list or (summable outputs) one dict summed over ranks
    summed = {k: sum(x[k] for x in logs) for k in logs[0]}
    for outputs in (logs, [summed]):
        with metrics.aggregate() as agg:
            SwitchCrossEntropyCriterion.reduce_metrics(outputs)
            m = agg.get_smoothed_values()
        assert m["moe_balance"] == pytest.approx(1.1)  # 0.7 + 0.4: one global batch
        assert m["moe_z"] == pytest.approx(2.0)
        assert m["moe_a2a_s"] == pytest.approx(1.0)  # mean over ranks
        assert m["moe_load_max_0"] == pytest.approx(1.5)  # counts summed over ranks: [2, 6]


def test_einsum_dispatch_model_matches_index_dispatch():
    _, task, index = build("switch_tiny", ["--dropout", "0", "--moe-jitter-eps", "0"])
    _, _, einsum = build("switch_tiny", ["--dropout", "0", "--moe-jitter-eps", "0", "--moe-dispatch", "einsum"])
    einsum.load_state_dict(index.state_dict())
    batch = random_batch(task.target_dictionary, bsz=4, src_len=9)
    out_i, _ = index(**batch["net_input"])
    out_e, _ = einsum(**batch["net_input"])
    torch.testing.assert_close(out_i, out_e, atol=1e-5, rtol=1e-5)


def test_bf16_model_keeps_router_in_fp32():
    _, task, model = build("switch_tiny")
    model = model.to(torch.bfloat16)
    batch = random_batch(task.target_dictionary)
    out, extra = model(**batch["net_input"])
    assert out.dtype == torch.bfloat16
    assert all(r.gate.dtype == torch.float32 and torch.isfinite(r.balance_loss) for r in extra["moe_routing"])


@pytest.mark.parametrize(
    "extra", [["--checkpoint-activations"], ["--encoder-layerdrop", "1.0", "--decoder-layerdrop", "1.0"]]
)
def test_other_fairseq_options_keep_working(extra):
    args, task, model = build("switch_tiny", extra)
    crit = task.build_criterion(args)
    batch = random_batch(task.target_dictionary)
    loss, _, log = crit(model, batch)
    loss.backward()
    if "--encoder-layerdrop" in extra:  # every layer skipped: no routing to report, no stale one either
        assert "moe_layers" not in log
    else:
        assert log["moe_layers"] == 2 and all(f.router.weight.grad is not None for f in model.switch_ffns)


def test_one_expert_switch_model_is_its_dense_twin():
    """N=1: the router's softmax is exactly 1 and nothing is dropped, so the Switch FFN is the dense FFN."""
    _, task, dense = build("t5_tiny", ["--dropout", "0"])
    _, _, switch = build("switch_tiny", ["--dropout", "0", "--moe-expert-count", "1"])
    dense_sd, state = dense.state_dict(), {}
    for k, v in switch.state_dict().items():
        if "router" in k:
            state[k] = v
        else:
            state[k] = dense_sd[k.replace(".fc1.experts.0.fc1", ".fc1").replace(".fc1.experts.0.fc2", ".fc2")]
    switch.load_state_dict(state)
    batch = random_batch(task.target_dictionary, bsz=4, src_len=9)
    real = batch["target"].ne(task.target_dictionary.pad())[..., None]
    outs = [m(**batch["net_input"])[0] * real for m in (dense, switch)]
    torch.testing.assert_close(outs[1], outs[0], atol=1e-6, rtol=1e-6)
    for out in outs:
        out.sum().backward()
    grads = dict(dense.named_parameters())
    for name, p in switch.named_parameters():
        if ".experts.0." in name:
            twin = grads[name.replace(".fc1.experts.0.fc1", ".fc1").replace(".fc1.experts.0.fc2", ".fc2")]
            torch.testing.assert_close(p.grad, twin.grad, atol=1e-6, rtol=1e-6)
