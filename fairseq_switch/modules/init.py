"""Weight initialisation of the paper (Sec. 2.4): a truncated normal whose std is sqrt(s / fan_in)."""

import math

import torch

# Standard deviation of a unit normal truncated to [-2, 2].
TRUNC_NORMAL_2SIGMA_STD = 0.87962566103423978


def scaled_trunc_normal_(weight: torch.Tensor, scale: float, fan_in: int) -> torch.Tensor:
    """Fill `weight` from a normal cut at +-2 sigma with std sqrt(scale / fan_in).

    Cutting a normal at +-2 sigma shrinks its std by 0.8796, so widen it first (as
    variance-scaling initializers do); the result has exactly the asked-for std.
    """
    std = math.sqrt(scale / fan_in) / TRUNC_NORMAL_2SIGMA_STD
    with torch.no_grad():
        return torch.nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
