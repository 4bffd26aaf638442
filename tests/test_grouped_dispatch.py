"""--moe-dispatch grouped (torch's grouped GEMM) against the index path, on CPU where torch has the op."""

import pytest
import torch
import torch.nn.functional as F

from fairseq_switch.modules.dispatch import GroupedDispatch, IndexDispatch, grouped_mm_unsupported
from fairseq_switch.modules.routing import RouterConfig
from fairseq_switch.modules.switch_layer import SwitchFFN


def pair(num_experts=4, d=16, ff=32, bias=True, gated=False, dtype=torch.float32, **kw):
    """An index layer and a grouped layer with the same weights."""
    kw.setdefault("jitter_eps", 0.0)
    layers = []
    for dispatch in ("index", "grouped"):
        torch.manual_seed(0)
        layer = SwitchFFN(d, ff, RouterConfig(num_experts, dispatch=dispatch, **kw), activation_fn=F.relu,
                          bias=bias, gated=gated)
        layers.append(layer.to(dtype))
    layers[1].load_state_dict(layers[0].state_dict())
    return layers


def run(layer, x, mask, g):
    xi = x.clone().requires_grad_(True)
    y = layer(xi, mask)
    (y.float() * g).sum().backward()
    return y.detach(), [xi.grad] + [p.grad for p in layer.parameters()]


def test_make_dispatch_builds_the_grouped_path():
    index, grouped = pair()
    assert isinstance(index.dispatch, IndexDispatch) and isinstance(grouped.dispatch, GroupedDispatch)
    assert "dispatch=grouped" in repr(grouped)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias,gated", [(True, False), (False, True)])
def test_grouped_equals_index_with_drops_padding_and_empty_experts(dtype, bias, gated):
    reason = grouped_mm_unsupported(torch.device("cpu"), dtype)
    if reason:
        pytest.skip(reason)
    index, grouped = pair(num_experts=8, bias=bias, gated=gated, dtype=dtype, capacity_factor=0.8, min_capacity=1)
    for layer in (index, grouped):
        with torch.no_grad():
            layer.router.weight[7] = -1.0  # positive inputs never pick expert 7
    torch.manual_seed(1)
    x = torch.randn(6, 5, 16).abs().to(dtype)  # T x B x C
    mask = torch.rand(6, 5) < 0.2
    g = torch.randn(6, 5, 16)
    (y_i, grads_i), (y_g, grads_g) = run(index, x, mask, g), run(grouped, x, mask, g)
    assert grouped.dispatch.last_path == "grouped", grouped.dispatch.fallback_reason
    r = grouped.last_routing
    assert r.stats.num_dropped.item() > 0 and (r.kept_counts == 0).any(), "the test needs drops and an empty expert"
    assert torch.equal(r.kept, index.last_routing.kept)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(y_g, y_i, **tol)
    assert torch.equal(y_g[~r.kept.view(6, 5)], torch.zeros_like(y_g[~r.kept.view(6, 5)]))  # dropped: exactly 0
    for a, b in zip(grads_g, grads_i):
        assert a is not None and b is not None  # every expert gets a gradient, the empty ones too
        torch.testing.assert_close(a, b, **tol)
    for e in torch.nonzero(r.kept_counts == 0).flatten().tolist():
        assert torch.count_nonzero(grouped.experts[e].fc1.weight.grad) == 0


def test_unaligned_width_runs_the_index_path_and_says_why():
    index, grouped = pair(d=6, ff=10)  # 24- and 40-byte fp32 rows: the kernels need multiples of 16
    x, g = torch.randn(12, 6), torch.randn(12, 6)
    (y_i, grads_i), (y_g, grads_g) = run(index, x, None, g), run(grouped, x, None, g)
    assert grouped.dispatch.last_path == "index" and "not multiples of 4" in grouped.dispatch.fallback_reason
    for a, b in zip([y_g] + grads_g, [y_i] + grads_i):
        torch.testing.assert_close(a, b)


def test_nothing_kept_still_gives_every_expert_a_zero_gradient():
    _, grouped = pair()
    x = torch.randn(5, 16, requires_grad=True)
    y = grouped(x, torch.ones(5, dtype=torch.bool))  # all padding
    y.sum().backward()
    assert torch.equal(y, torch.zeros_like(y))
    assert all(p.grad is not None for p in grouped.experts.parameters())
