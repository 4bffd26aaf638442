"""SwitchFFN: dropped tokens, index vs fairscale einsum equivalence, dtype handling."""

import pytest
import torch
import torch.nn.functional as F

from fairseq_switch.modules.routing import RouterConfig, RoutingMode
from fairseq_switch.modules.switch_layer import SwitchFFN, switch_layer_ids

LAYER_OPTIONS = ("expert_dropout", "bias", "gated", "expert_init_scale")


def make_layer(num_experts=4, d=16, ff=32, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("jitter_eps", 0.0)
    layer_kw = {k: kw.pop(k) for k in LAYER_OPTIONS if k in kw}
    return SwitchFFN(d, ff, RouterConfig(num_experts, **kw), activation_fn=F.relu, **layer_kw)


def test_dropped_tokens_output_exactly_zero_and_kept_tokens_are_gated_experts():
    layer = make_layer(num_experts=4, capacity_factor=0.5, min_capacity=1)
    x = torch.randn(40, 16)
    y = layer(x)
    r = layer.last_routing
    assert r.capacity == 5  # ceil(40 / 4 * 0.5)
    dropped = ~r.kept
    assert dropped.sum() > 0, "the test needs some drops"
    assert torch.equal(y[dropped], torch.zeros_like(y[dropped]))
    for t in torch.nonzero(r.kept).flatten().tolist():
        e = r.expert_index[t].item()
        torch.testing.assert_close(y[t], r.gate[t] * layer.experts[e](x[t : t + 1])[0])


def test_padding_tokens_output_zero_and_do_not_change_real_tokens():
    layer = make_layer(num_experts=4)
    layer.eval()
    x = torch.randn(12, 16)
    mask = torch.zeros(12, dtype=torch.bool)
    mask[[0, 5, 11]] = True
    y = layer(x, mask)
    assert torch.equal(y[mask], torch.zeros_like(y[mask]))
    y_ref = layer(x[~mask])
    torch.testing.assert_close(y[~mask], y_ref)


@pytest.mark.parametrize("batch_prioritized", [False, True])
@pytest.mark.parametrize("num_experts", [1, 4, 7])
def test_index_path_equals_fairscale_einsum_path(num_experts, batch_prioritized):
    kw = dict(num_experts=num_experts, capacity_factor=0.8, min_capacity=1, batch_prioritized=batch_prioritized)
    index, einsum = make_layer(**kw), make_layer(dispatch="einsum", **kw)
    einsum.load_state_dict(index.state_dict())
    torch.manual_seed(1)
    x = torch.randn(6, 5, 16)  # T x B x C, 30 tokens: not a multiple of 4 or 7
    mask = torch.rand(6, 5) < 0.2
    g = torch.randn(6, 5, 16)
    outs, grads = [], []
    for layer in (index, einsum):
        xi = x.clone().requires_grad_(True)
        y = layer(xi, mask)
        (y * g).sum().backward()
        outs.append(y.detach())
        grads.append([xi.grad] + [p.grad for p in layer.parameters()])
    assert index.last_routing.stats.num_dropped.item() > 0 or num_experts == 1
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_every_expert_gets_a_gradient_even_without_tokens():
    layer = make_layer(num_experts=8)
    x = torch.randn(2, 16)  # at most 2 experts receive tokens
    layer(x).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    used = set(layer.last_routing.expert_index.tolist())
    unused = [e for e in range(8) if e not in used]
    assert all(torch.count_nonzero(layer.experts[e].fc1.weight.grad) == 0 for e in unused)


def test_expert_dropout_acts_on_the_hidden_activation():
    layer = make_layer(num_experts=2, expert_dropout=1.0)
    x = torch.randn(10, 16)
    layer.train()
    y = layer(x)
    r = layer.last_routing
    # every hidden unit dropped: each kept token outputs gate * fc2.bias
    for t in torch.nonzero(r.kept).flatten().tolist():
        e = r.expert_index[t].item()
        torch.testing.assert_close(y[t], r.gate[t] * layer.experts[e].fc2.bias)
    layer.eval()
    y_eval = layer(x)
    assert not torch.allclose(y_eval, y)


def test_no_drop_mode_routes_every_token():
    layer = make_layer(num_experts=4, capacity_factor=0.25, eval_capacity_factor=0.25, min_capacity=1)
    layer.eval()
    with torch.no_grad():
        layer.router.weight.zero_()  # everything picks expert 0
        layer.router.weight[0, 0] = 10.0
    x = torch.randn(32, 16).abs()
    layer(x)
    assert layer.last_routing.stats.num_dropped.item() > 0
    layer(x, mode=RoutingMode.GENERATE)
    assert layer.last_routing.stats.num_dropped.item() == 0
    assert layer.last_routing.kept.all()


def test_bf16_input_keeps_fp32_router():
    layer = make_layer(num_experts=4).to(torch.bfloat16)
    x = torch.randn(20, 16, dtype=torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    assert layer.last_routing.gate.dtype == torch.float32


def test_padding_mask_shape_mismatch_is_a_clear_error():
    layer = make_layer()
    with pytest.raises(ValueError, match="padding mask of shape"):
        layer(torch.randn(4, 3, 16), torch.zeros(3, 5, dtype=torch.bool))


def test_bad_expert_count_and_dispatch():
    with pytest.raises(ValueError, match="--moe-expert-count must be >= 1"):
        make_layer(num_experts=0)
    with pytest.raises(ValueError, match="--moe-dispatch must be one of"):
        make_layer(dispatch="dense")


def test_switch_layer_ids():
    assert switch_layer_ids(12, 2) == [1, 3, 5, 7, 9, 11]
    assert switch_layer_ids(2, 1) == [0, 1]
    with pytest.raises(ValueError, match="--moe-freq 3 is larger than the number of layers"):
        switch_layer_ids(2, 3)
    with pytest.raises(ValueError, match="--moe-freq must be >= 1"):
        switch_layer_ids(2, 0)
