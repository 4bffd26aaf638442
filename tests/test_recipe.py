"""The paper's optimizer and T5's embedding init (issue 30, "a start that learns"): hand-computed values."""

import math

import pytest
import torch

from fairseq_switch.optim.adafactor import ScaledAdafactor, T5Adafactor, T5AdafactorConfig
from tests.helpers import build


def _first_step(opt_cls, **kw):
    p1 = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # RMS sqrt(12.5)
    p2 = torch.nn.Parameter(torch.tensor([0.6, -0.8]))  # RMS sqrt(0.5)
    opt = opt_cls([p1, p2], lr=0.01, scale_parameter=True, relative_step=False, warmup_init=False, **kw)
    p1.grad = torch.tensor([1.0, -2.0])
    p2.grad = torch.tensor([0.5, 0.5])
    opt.step()
    return p1.detach(), p2.detach(), opt


def test_adafactor_scales_each_parameter_by_its_own_rms():
    # step 1: decay 1 - 1^-0.8 = 0, so the second moment is grad^2 and the update is sign(grad), RMS 1
    # (no clipping at 1.0), times lr * RMS(parameter)
    p1, p2, opt = _first_step(ScaledAdafactor)
    s1, s2 = 0.01 * math.sqrt(12.5), 0.01 * math.sqrt(0.5)
    assert torch.allclose(p1, torch.tensor([3.0 - s1, 4.0 + s1]), atol=1e-6)
    assert torch.allclose(p2, torch.tensor([0.6 - s2, -0.8 - s2]), atol=1e-6)
    assert opt.param_groups[0]["lr"] == 0.01  # the scheduler's rate is left as it was set


def test_fairseq_adafactor_compounds_the_scale():
    """The defect worked around: fairseq scales p2's rate by RMS(p1) too."""
    from fairseq.optim.adafactor import Adafactor

    _, p2, opt = _first_step(Adafactor)
    s2 = 0.01 * math.sqrt(12.5) * math.sqrt(0.5)
    assert torch.allclose(p2, torch.tensor([0.6 - s2, -0.8 - s2]), atol=1e-6)
    assert opt.param_groups[0]["lr"] != 0.01


def test_t5_adafactor_defaults_are_the_papers():
    cfg = T5AdafactorConfig(lr=[0.01])
    opt = T5Adafactor(cfg, [torch.nn.Parameter(torch.zeros(2))])
    conf = opt.optimizer_config
    assert conf["lr"] == 0.01 and conf["beta1"] is None and conf["decay_rate"] == -0.8
    assert conf["clip_threshold"] == 1.0 and conf["scale_parameter"] and not conf["relative_step"]
    assert conf["eps"] == (1e-30, 1e-3)
    as_text = T5Adafactor(T5AdafactorConfig(lr=[0.01], adafactor_eps="(1e-30, 1e-2)"), [torch.zeros(1)])
    assert as_text.optimizer_config["eps"] == (1e-30, 1e-2)


@pytest.mark.parametrize("extra,std", [((), math.sqrt(0.1)), (("--embed-init-std", "1.0"), 1.0),
                                       (("--init-scale", "0.5"), math.sqrt(0.5))])
def test_embedding_init_std(extra, std):
    torch.manual_seed(0)
    _, _, model = build("t5_tiny", extra)
    w = model.encoder.embed_tokens.weight
    assert w.std().item() == pytest.approx(std, rel=0.1)
    assert w.abs().max().item() <= 2 * std / 0.87962566103423978 + 1e-6  # cut at 2 sigma of the widened normal
