r"""Truncated unrolls of inner training, written with ``torch.func``.

Inner training is a pure function of the inner parameters: for inner steps
:math:`t = t_0, \dots, t_0 + T - 1`

.. math::
    g_t = \nabla_p \ell(p_t; B^{\text{train}}_t), \qquad
    (p_{t+1}, s_{t+1}) = \mathrm{update}_\phi(p_t, g_t, s_t)

with :func:`lopt.update.learned_update` (the same function ``GMNOptimizer.step`` calls),
and the truncation's meta-loss is

.. math::
    L(\phi) = \frac{1}{T} \sum_t \frac{\operatorname{clip}(\ell(p_{t+1}; B^{\text{obj}}_t))}{c}

where :math:`B^{\text{obj}}_t` is a held-out batch (``objective="valid"``, the default) or
the next training batch (``"train"``), :math:`c` the task's ``loss_clip`` and
:math:`\operatorname{clip}` clamps to :math:`[0, c]` with NaN mapped to :math:`c`.
Differentiating :math:`L` with ``torch.func.grad`` gives the truncated-backprop meta-gradient
(second-order terms through :math:`g_t` included).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value

from graphs import ParameterGraph
from lopt.update import State, UpdateConfig, init_state, learned_update
from tasks import Task

__all__ = ["InnerRun", "clipped_loss", "new_inner_run", "unroll"]


@dataclass
class InnerRun:
    """One inner training run, advanced truncation by truncation.

    Attributes:
        task: the inner task; ``model`` a module of its architecture (weights unused:
            ``params`` are passed functionally) and ``graph`` its parameter graph.
        seed: the run's model-init and data seed.
        params, state: inner parameters and optimizer state (detached).
        step: inner steps taken so far; ``horizon`` steps after which the run is reset.
    """

    task: Task
    model: nn.Module
    graph: ParameterGraph
    seed: int
    params: dict[str, Tensor]
    state: State
    step: int
    horizon: int


def new_inner_run(task: Task, seed: int, horizon: int, cfg: UpdateConfig,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  graph: ParameterGraph | None = None) -> InnerRun:  # fmt: skip
    """A fresh run of ``task`` (model initialised from ``seed``)."""
    model = task.make_model(seed).to(device=device, dtype=dtype)
    graph = (graph or ParameterGraph.from_module(model)).to(device)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = {n: params[n] for n in graph.param_names}
    return InnerRun(task, model, graph, seed, params, init_state(params, cfg), 0, horizon)


def clipped_loss(loss: Tensor, clip: float) -> Tensor:
    """``clamp(loss, 0, clip) / clip`` with NaN -> 1 (the clip value, normalised)."""
    loss = torch.where(torch.isnan(loss), torch.full_like(loss, clip), loss)
    return loss.clamp(0.0, clip) / clip


def unroll(
    net: nn.Module,
    meta: Mapping[str, Mapping[str, Tensor]],
    run: InnerRun,
    length: int,
    cfg: UpdateConfig,
    objective: str = "valid",
) -> tuple[Tensor, tuple[dict[str, Tensor], State]]:
    """Meta-loss of ``length`` inner steps from ``run``'s current parameters and state.

    Args:
        net: the learned optimizer's net (its weights come from ``meta["net"]``).
        meta: ``{"net": weights, "scales": scales}``: what is differentiated.
        run: the inner run (not modified).
        length: truncation length :math:`T`.
        objective: ``"valid"`` (held-out batches) or ``"train"``.

    Returns:
        ``(meta_loss [], (params, state))``: the final inner parameters and state.
    """
    if objective not in ("valid", "train"):
        raise ValueError(f"objective must be 'valid' or 'train', got {objective!r}")
    task, model = run.task, run.model
    ref = next(iter(run.params.values()))

    def to_ref(b: Tensor) -> Tensor:  # float batches follow the inner parameters' dtype
        return b.to(ref.device, ref.dtype) if b.is_floating_point() else b.to(ref.device)

    def loss_fn(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return task.loss(functional_call(model, params, (x,)), y)

    params, state = run.params, run.state
    total = 0.0
    for i in range(length):
        t = run.step + i
        x, y = (to_ref(b) for b in task.batch(t, run.seed, "train"))
        grads, _ = grad_and_value(loss_fn)(params, x, y)
        params, state = learned_update(
            net, meta["net"], meta["scales"], run.graph, params, grads, state, cfg
        )
        if objective == "valid":
            xo, yo = (to_ref(b) for b in task.batch(t, run.seed, "valid"))
        else:
            xo, yo = (to_ref(b) for b in task.batch(t + 1, run.seed, "train"))
        total = total + clipped_loss(loss_fn(params, xo, yo), task.loss_clip)
    return total / length, (params, state)
