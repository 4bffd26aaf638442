"""Adafactor as T5 and Switch train with it (`--optimizer t5_adafactor`).

The paper (Fedus et al. 2021, built on T5's Mesh TensorFlow recipe) trains with Adafactor (Shazeer and
Stern 2018): no first moment (beta1 None), second-moment decay 1 - t^-0.8, updates clipped to RMS 1.0,
each update scaled by the parameter's own RMS (at least 1e-3), a learning rate of 0.01.

fairseq's `--optimizer adafactor` computes the same update except for one defect: with
`--scale-parameter` its step writes each parameter's scaled rate back into the group's "lr", so the
next parameter of the group scales that already scaled rate again. A group's learning rate is then
the product of the RMS of every parameter before it in the step (clamped at 1e-3 each time): after
a few parameters of RMS ~0.03 nothing moves. transformers' port fixed it by keeping the rate local.
This optimizer reuses fairseq's step and gives every parameter the group's own rate.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from fairseq.optim.adafactor import Adafactor


class ScaledAdafactor(Adafactor):
    """fairseq's Adafactor with each parameter's rate computed from its group's rate, not the previous
    parameter's; the group's "lr" (what the scheduler set) is the same after a step as before."""

    def step(self, closure: Any = None) -> Any:
        self._group_lrs = {id(g): g["lr"] for g in self.param_groups}
        try:
            return super().step(closure)
        finally:
            for g in self.param_groups:
                g["lr"] = self._group_lrs[id(g)]

    def _get_lr(self, param_group: Dict[str, Any], param_state: Dict[str, Any]) -> float:
        lrs = getattr(self, "_group_lrs", None)
        if lrs is not None and id(param_group) in lrs:
            param_group = dict(param_group, lr=lrs[id(param_group)])
        return super()._get_lr(param_group, param_state)


def _pair(value: Any) -> Tuple[float, float]:
    """(eps1, eps2) from a tuple, list or its string, e.g. '(1e-30, 1e-3)' as fairseq's options write it."""
    if isinstance(value, str):
        value = value.strip("()[] ").split(",")
    eps1, eps2 = (float(v) for v in value)
    return eps1, eps2


@dataclass
class T5AdafactorConfig(FairseqDataclass):
    adafactor_eps: Any = field(
        default=(1e-30, 1e-3),
        metadata={"help": "added to squared gradients; the floor of the parameter scale"},
    )
    clip_threshold: float = field(default=1.0, metadata={"help": "clip each update to this RMS (T5: 1.0)"})
    decay_rate: float = field(default=-0.8, metadata={"help": "second-moment decay 1 - t^decay_rate (T5: -0.8)"})
    beta1: Optional[float] = field(default=None, metadata={"help": "first-moment decay; None: no momentum (T5)"})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay"})
    scale_parameter: bool = field(
        default=True, metadata={"help": "scale each update by the parameter's RMS (at least eps[1]), as T5 does"}
    )
    relative_step: bool = field(
        default=False, metadata={"help": "ignore --lr and use min(1e-2, 1/sqrt(step)) (T5 uses --lr 0.01 instead)"}
    )
    warmup_init: bool = field(default=False, metadata={"help": "with relative_step: min(1e-6 step, ...)"})
    lr: Any = "${optimization.lr}"


@register_optimizer("t5_adafactor", dataclass=T5AdafactorConfig)
class T5Adafactor(FairseqOptimizer):
    def __init__(self, cfg: T5AdafactorConfig, params: Any):
        super().__init__(cfg)
        self._optimizer = ScaledAdafactor(params, **self.optimizer_config)

    @property
    def optimizer_config(self) -> Dict[str, Any]:
        lr = self.cfg.lr[0] if isinstance(self.cfg.lr, (list, tuple)) else self.cfg.lr
        return {
            "lr": lr,
            "eps": _pair(self.cfg.adafactor_eps),
            "clip_threshold": self.cfg.clip_threshold,
            "decay_rate": self.cfg.decay_rate,
            "beta1": self.cfg.beta1,
            "weight_decay": self.cfg.weight_decay,
            "scale_parameter": self.cfg.scale_parameter,
            "relative_step": self.cfg.relative_step,
            "warmup_init": self.cfg.warmup_init,
        }

    @property
    def supports_memory_efficient_fp16(self) -> bool:
        return True

    @property
    def supports_flat_params(self) -> bool:
        return False
