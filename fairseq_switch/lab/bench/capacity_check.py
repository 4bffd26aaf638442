"""Sanity check of the Switch FFN where FFN capacity is the bottleneck: memorise random pairs.

A dense FFN of width W and a Switch FFN with N experts of width W (same FLOPs per token) learn a
random map from 4096 inputs to targets. The Switch FFN has N times the parameters, so it should
fit far better; if it does not, the layer (routing, dispatch or gradients) is broken.

    python scripts/check_expert_capacity.py            # prints the final MSE of each
"""

import argparse
from typing import Callable, List, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from fairseq_switch.modules.routing import RouterConfig
from fairseq_switch.modules.switch_layer import SwitchFFN
from .common import add_options


def train(model: nn.Module, loss_extra: Callable[[], Union[float, torch.Tensor]], X: torch.Tensor, Y: torch.Tensor,
          steps: int, batch: int, lr: float, seed: int) -> float:
    """Adam on random minibatches of (X, Y) with MSE + `loss_extra()`; the final MSE on all of X, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, X.shape[0], (batch,), generator=g)
        loss = F.mse_loss(model(X[idx]), Y[idx]) + loss_extra()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return F.mse_loss(model(X), Y).item()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, items=4096, dim=64, width=64, experts=8, steps=1500, batch=512, lr=3e-3)
    args = p.parse_args(argv)

    torch.manual_seed(0)
    X = F.layer_norm(torch.randn(args.items, args.dim), (args.dim,))
    Y = torch.randn(args.items, args.dim)

    torch.manual_seed(1)
    dense = nn.Sequential(nn.Linear(args.dim, args.width), nn.ReLU(), nn.Linear(args.width, args.dim))
    mse_dense = train(dense, lambda: 0.0, X, Y, args.steps, args.batch, args.lr, 2)

    torch.manual_seed(1)
    routing = RouterConfig(args.experts, capacity_factor=2.0, jitter_eps=0.0)
    switch = SwitchFFN(args.dim, args.width, routing, activation_fn=F.relu)

    def balance() -> torch.Tensor:  # the load-balancing loss, weight 0.01 as in the paper
        return 0.01 * switch.last_routing.balance_loss

    mse_switch = train(switch, balance, X, Y, args.steps, args.batch, args.lr, 2)

    print(f"target variance 1.0; dense FFN width {args.width}: MSE {mse_dense:.4f}")
    print(f"Switch FFN {args.experts} x width {args.width}: MSE {mse_switch:.4f} ({mse_switch / mse_dense:.2f}x dense)")
    return 0
