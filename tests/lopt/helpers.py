"""Shared tiny fixtures for the lopt tests."""

from __future__ import annotations

import torch
from torch import nn

from lopt import LearnedOptimizer, UpdateConfig


def random_lopt(seed: int = 0, hidden: int = 8, layers: int = 1, kind: str = "gmn",
                dtype: torch.dtype = torch.float64, alpha: float = 1e-2,
                head_std: float = 0.5, update: UpdateConfig | None = None) -> LearnedOptimizer:
    """A learned optimizer whose zero-initialised head is randomized (non-trivial updates);
    ``update`` replaces the rule ``UpdateConfig(alpha_init=alpha)``."""
    update = UpdateConfig(alpha_init=alpha) if update is None else update
    lo = LearnedOptimizer.fresh(kind, hidden, layers, update, seed)
    lo.net.to(dtype)
    net = lo.net
    heads = [net.edge_out] if kind == "gmn" else [net.head] if kind == "mlp" else [
        net.entry_out, net.node_out, *([net.entry_mix] if net.config.entry_hidden else [])]
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for head in heads:
            head.weight.copy_(torch.randn(head.weight.shape, generator=g, dtype=dtype) * head_std)
            if head.bias is not None:
                head.bias.copy_(torch.randn(head.bias.shape, generator=g, dtype=dtype) * head_std)
    lo.scales = {k: v.to(dtype) for k, v in lo.scales.items()}
    return lo


def train(model: nn.Module, opt: torch.optim.Optimizer, task, steps: int, start: int = 0,
          seed: int = 0) -> list[float]:
    """Plain training loop on ``task``'s batches; returns the losses."""
    losses = []
    dtype = next(model.parameters()).dtype
    for t in range(start, start + steps):
        x, y = task.batch(t, seed)
        opt.zero_grad()
        loss = task.loss(model(x.to(dtype)), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)
