"""Optimizers to compare and the inner-training loop the benchmark, demo and calibration share.

``make_optimizer(kind, model, lr)`` builds ``"adam"``, ``"adamw"``, ``"sgdm"`` (SGD, momentum
0.9) or a learned optimizer (``"learned"``, with ``checkpoint``: a shipped name (``None`` =
the default), a ``meta_train`` folder — a GMN or per-parameter-MLP checkpoint alike — or a
:class:`~lopt.checkpoint.LearnedOptimizer`). :func:`train_curve` trains one model with one
optimizer and records test (or other held-out) losses, optionally validation losses beside
them, and the optimizer-step time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from lopt.checkpoint import LearnedOptimizer
from lopt.optimizer import GMNOptimizer
from tasks import Task

__all__ = ["Curve", "make_optimizer", "test_loss", "train_curve"]


def make_optimizer(kind: str, model: nn.Module, lr: float = 1.0,
                   checkpoint: str | LearnedOptimizer | None = None,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``"adam"``, ``"adamw"``, ``"sgdm"`` or ``"learned"`` (a :class:`GMNOptimizer`, ``lr``
    its multiplier); ``weight_decay`` is the decoupled decay of AdamW and the learned one."""
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if kind == "sgdm":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    if kind == "learned":
        return GMNOptimizer(model, checkpoint=checkpoint, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer kind {kind!r}; use 'adam', 'adamw', 'sgdm' or 'learned'")


@torch.no_grad()
def test_loss(task: Task, model: nn.Module, device: torch.device | str = "cpu",
              data: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """Mean loss of ``model`` on the task's full test set, or on ``data`` (NaN -> inf)."""
    x, y = task.test_data() if data is None else data
    loss = float(task.loss(model(x.to(device)), y.to(device)))
    return loss if loss == loss else float("inf")


@dataclass
class Curve:
    """Test-loss curve of one training run.

    Attributes:
        steps: inner steps at which the test loss was measured (0 = before training).
        test_loss: the test losses at ``steps``.
        step_time_s: mean wall-clock seconds of ``optimizer.step()`` alone.
        total_time_s: wall-clock seconds of the whole run (without evaluation).
        valid_loss: the validation losses at ``steps`` (empty unless asked for).
    """

    steps: list[int] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    step_time_s: float = 0.0
    total_time_s: float = 0.0
    valid_loss: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.test_loss)

    @property
    def best_valid(self) -> float:
        return min(self.valid_loss)

    @property
    def diverged(self) -> bool:
        """Whether the test loss stopped being finite (the run was cut short)."""
        return any(v == float("inf") for v in self.test_loss)


def train_curve(task: Task, kind: str, lr: float, seed: int, steps: int, eval_every: int = 25,
                checkpoint: str | LearnedOptimizer | None = None,
                device: torch.device | str = "cpu", weight_decay: float = 0.0,
                eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
                valid_data: tuple[torch.Tensor, torch.Tensor] | None = None) -> Curve:
    """Train ``task.make_model(seed)`` on ``task.batch(t, seed)`` for ``steps`` steps.

    The curve holds the loss on the task's test set, or on ``eval_data`` when given (the
    calibration's validation examples), every ``eval_every`` steps; with ``valid_data``
    (e.g. ``task.pool("valid")``) also the loss on those examples, at the same steps.
    """
    model = task.make_model(seed).to(device)
    opt = make_optimizer(kind, model, lr, checkpoint, weight_decay)
    curve = Curve()

    def evaluate() -> None:
        curve.test_loss.append(test_loss(task, model, device, eval_data))
        if valid_data is not None:
            curve.valid_loss.append(test_loss(task, model, device, valid_data))

    curve.steps.append(0)
    evaluate()
    step_time = total = 0.0
    for t in range(steps):
        t0 = time.perf_counter()
        x, y = task.batch(t, seed)
        opt.zero_grad(set_to_none=True)
        loss = task.loss(model(x.to(device)), y.to(device))
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        step_time += t2 - t1
        total += t2 - t0
        if (t + 1) % eval_every == 0 or t + 1 == steps:
            curve.steps.append(t + 1)
            evaluate()
            if curve.test_loss[-1] == float("inf") and t + 1 < steps:  # diverged: inf after
                rest = range(t + 1 + eval_every, steps + 1, eval_every)
                curve.steps += [s for s in rest if s != steps] + [steps]
                for losses in (curve.test_loss, curve.valid_loss):
                    if losses:  # valid_loss is empty without valid_data
                        losses += [float("inf")] * (len(curve.steps) - len(losses))
                break
    curve.step_time_s = step_time / max(1, t + 1)
    curve.total_time_s = total
    return curve
