"""Top1Router on hand-built logits. The router weight is the identity, so logits == input."""

import math

import pytest
import torch

from fairseq_switch.modules.routing import RouterConfig, RoutingMode, Top1Router, expert_capacity, route_plan


class Routed:
    """A router called as its Switch layer calls it: capacity and jitter from the config and the mode."""

    def __init__(self, router):
        self.router = router

    def __call__(self, x, padding_mask=None):
        cfg = self.router.config
        plan = route_plan(cfg, RoutingMode.of(self.router.training))
        n = x.shape[0] if padding_mask is None else int((~padding_mask).sum())
        capacity = expert_capacity(n, cfg.num_experts, plan.capacity_factor, cfg.min_capacity)
        return self.router(x, padding_mask, capacity=capacity, jitter=plan.jitter)

    def train(self):
        self.router.train()

    def eval(self):
        self.router.eval()


def make_router(embed_dim, num_experts, **kw):
    return Routed(Top1Router(embed_dim, RouterConfig(num_experts, **kw)))


def identity_router(num_experts, **kw):
    kw.setdefault("jitter_eps", 0.0)
    r = make_router(num_experts, num_experts, **kw)
    with torch.no_grad():
        r.router.weight.copy_(torch.eye(num_experts))
    return r


def test_chosen_experts_and_gate_values():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [4.0, 0.0, 0.0]])
    r = identity_router(3, min_capacity=4)(logits)
    assert r.expert_index.tolist() == [0, 1, 2, 0]
    expected_gate = torch.softmax(logits, -1).max(-1).values
    torch.testing.assert_close(r.gate, expected_gate)
    # e^2 / (e^2 + e + 1) by hand for the first token
    assert r.gate[0].item() == pytest.approx(math.e**2 / (math.e**2 + math.e + 1), rel=1e-6)
    assert r.kept.all() and r.slot.tolist() == [0, 0, 0, 1]


def test_capacity_formula():
    assert expert_capacity(10, 4, 1.25, 4) == 4  # ceil(3.125) = 4
    assert expert_capacity(100, 4, 1.25, 4) == 32  # ceil(31.25)
    assert expert_capacity(8, 4, 1.0, 1) == 2
    assert expert_capacity(3, 8, 1.25, 4) == 4  # minimum capacity
    assert expert_capacity(37, 8, None, 4) == 37  # no-drop mode: every token may pick one expert


def _all_to_expert_zero():
    # Six tokens all prefer expert 0, with distinct confidence.
    margins = torch.tensor([0.1, 2.0, 0.5, 3.0, 1.0, 0.2])
    return torch.stack([margins, torch.zeros(6)], 1)


def test_capacity_drops_position_order():
    x = _all_to_expert_zero()
    # capacity = ceil(6 / 2 * 0.5) = 2
    r = identity_router(2, capacity_factor=0.5, min_capacity=1)(x)
    assert r.capacity == 2
    assert r.kept.tolist() == [True, True, False, False, False, False]
    assert r.slot.tolist() == [0, 1, -1, -1, -1, -1]
    assert (r.gate[~r.kept] == 0).all() and (r.gate[r.kept] > 0.5).all()
    assert r.stats.num_dropped.item() == 4
    assert r.stats.dropped_fraction.item() == pytest.approx(4 / 6)
    # f_i counts choices before the drop
    assert r.stats.expert_counts.tolist() == [6.0, 0.0]
    assert r.dispatch_order.tolist() == [0, 1] and r.kept_counts.tolist() == [2, 0]


def test_capacity_drops_batch_prioritized():
    x = _all_to_expert_zero()
    r = identity_router(2, capacity_factor=0.5, min_capacity=1, batch_prioritized=True)(x)
    # the two most confident tokens are 3 (margin 3.0) then 1 (margin 2.0)
    assert r.kept.tolist() == [False, True, False, True, False, False]
    assert r.slot[3].item() == 0 and r.slot[1].item() == 1
    assert r.dispatch_order.tolist() == [3, 1]


def test_balance_loss_is_one_when_balanced_and_larger_when_skewed():
    a = 1.5
    balanced = torch.tensor([[a, 0.0], [0.0, a], [a, 0.0], [0.0, a]])
    r = identity_router(2)(balanced)
    # f = [1/2, 1/2], P = [1/2, 1/2]: N * sum f P = 2 * (1/4 + 1/4) = 1, so alpha * that = alpha
    assert r.balance_loss.item() == pytest.approx(1.0, abs=1e-6)
    alpha = 0.01
    assert alpha * r.balance_loss.item() == pytest.approx(alpha)

    skewed = torch.tensor([[a, 0.0]] * 4)
    r = identity_router(2)(skewed)
    p = math.exp(a) / (math.exp(a) + 1)
    # f = [1, 0], P = [p, 1-p]: 2 * p
    assert r.balance_loss.item() == pytest.approx(2 * p, rel=1e-6)
    assert r.balance_loss.item() > 1.0


def test_z_loss_value():
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    r = identity_router(2)(x)
    lse = [math.log(2.0), math.log(math.e + math.e**2)]
    assert r.z_loss.item() == pytest.approx((lse[0] ** 2 + lse[1] ** 2) / 2, rel=1e-6)


def test_padding_takes_no_capacity_and_no_statistics():
    x = _all_to_expert_zero()
    pad_row = torch.tensor([[9.0, 0.0]])  # would be the most confident and first in line
    xp = torch.cat([pad_row, x])
    mask = torch.tensor([True] + [False] * 6)
    router = identity_router(2, capacity_factor=0.5, min_capacity=1)
    r_ref, r_pad = router(x), router(xp, mask)
    assert not r_pad.kept[0] and r_pad.slot[0] == -1 and r_pad.gate[0] == 0
    assert r_pad.kept[1:].tolist() == r_ref.kept.tolist()
    assert r_pad.capacity == r_ref.capacity  # capacity counts real tokens only
    for name in ("balance_loss", "z_loss"):
        torch.testing.assert_close(getattr(r_pad, name), getattr(r_ref, name))
    assert r_pad.stats.expert_counts.tolist() == r_ref.stats.expert_counts.tolist()
    assert r_pad.stats.num_tokens.item() == 6
    torch.testing.assert_close(r_pad.stats.entropy, r_ref.stats.entropy)


def test_all_padding_routes_nothing():
    x = torch.randn(3, 2)
    r = identity_router(2)(x, torch.ones(3, dtype=torch.bool))
    assert not r.kept.any()
    assert r.balance_loss.item() == 0 and r.z_loss.item() == 0


def test_entropy_statistic():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    r = identity_router(2)(x)
    assert r.stats.entropy.item() == pytest.approx(math.log(2), rel=1e-6)


def test_jitter_only_in_training():
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    router = identity_router(4, jitter_eps=0.3)
    router.eval()
    g1, g2 = router(x).gate, router(x).gate
    torch.testing.assert_close(g1, g2)
    torch.testing.assert_close(g1, torch.softmax(x, -1).max(-1).values)
    router.train()
    g3 = router(x).gate
    assert not torch.allclose(g3, g1)
    no_jitter = identity_router(4, jitter_eps=0.0)
    no_jitter.train()
    torch.testing.assert_close(no_jitter(x).gate, g1)
    # the mode decides: jitter in training only, whatever the capacity
    assert route_plan(RouterConfig(4), RoutingMode.TRAIN).jitter
    assert not any(route_plan(RouterConfig(4), m).jitter for m in (RoutingMode.EVAL, RoutingMode.GENERATE))


def test_router_runs_in_fp32_under_bf16():
    torch.manual_seed(0)
    routed = make_router(16, 8, jitter_eps=0.0)
    router = routed.router
    x = torch.randn(32, 16).to(torch.bfloat16)
    r = routed(x)
    assert r.gate.dtype == torch.float32
    ref = torch.softmax(x.float() @ router.weight.float().t(), -1)
    assert r.expert_index.tolist() == ref.argmax(-1).tolist()
    torch.testing.assert_close(r.gate[r.kept], ref.max(-1).values[r.kept])
    # and with the router weight cast to bf16 too, the logits are still computed in fp32
    router.to(torch.bfloat16)
    r16 = routed(x)
    assert r16.gate.dtype == torch.float32


def test_router_gets_gradient_through_gate():
    router = identity_router(2)
    weight = router.router.weight
    weight.requires_grad_(True)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    router(x).gate.sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_truncated_normal_init_scale():
    torch.manual_seed(0)
    d = 512
    w = make_router(d, 256).router.weight.detach()
    target = math.sqrt(0.1 / d)
    assert w.std().item() == pytest.approx(target, rel=0.03)
    assert w.abs().max().item() <= 2 * target / 0.8796 + 1e-7
    assert w.abs().max().item() > 1.5 * target  # really truncated, not clipped to a tiny range


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_experts=0), "--moe-expert-count must be >= 1"),
        (dict(num_experts=4, capacity_factor=0.0), "--moe-capacity-factor must be > 0"),
        (dict(num_experts=4, capacity_factor=-1.0), "--moe-capacity-factor must be > 0"),
        (dict(num_experts=4, eval_capacity_factor=0.0), "--moe-eval-capacity-factor must be > 0"),
        (dict(num_experts=4, min_capacity=0), "--moe-min-capacity must be >= 1"),
        (dict(num_experts=4, jitter_eps=1.0), r"--moe-jitter-eps must be in \[0, 1\)"),
        (dict(num_experts=4, dispatch="dense"), "--moe-dispatch must be one of"),
    ],
)
def test_bad_settings_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RouterConfig(**kwargs)


def test_config_is_frozen():
    cfg = RouterConfig(4)
    with pytest.raises(AttributeError):
        cfg.capacity_factor = 2.0


def test_each_mode_decides_capacity_jitter_and_routed_tokens():
    cfg = RouterConfig(4, capacity_factor=1.25, eval_capacity_factor=2.0)
    assert route_plan(cfg, RoutingMode.TRAIN)[:3] == (1.25, True, True)
    assert route_plan(cfg, RoutingMode.EVAL)[:3] == (2.0, False, True)
    assert route_plan(cfg, RoutingMode.GENERATE)[:3] == (None, False, True)  # every token routed
    assert route_plan(cfg, RoutingMode.DUMMY).route_tokens is False
    assert route_plan(RouterConfig(4, generation_drop=True), RoutingMode.GENERATE).capacity_factor == 2.0
    assert route_plan(RouterConfig(4, eval_capacity_factor=None), RoutingMode.EVAL).capacity_factor is None
    assert RoutingMode.of(True) is RoutingMode.TRAIN and RoutingMode.of(False) is RoutingMode.EVAL
    assert RoutingMode.of(False, generating=True) is RoutingMode.GENERATE
    assert RoutingMode.of(True, dummy=True) is RoutingMode.DUMMY


def test_wrong_width_raises():
    with pytest.raises(ValueError, match="router expects width 8"):
        make_router(8, 4)(torch.randn(3, 5))
