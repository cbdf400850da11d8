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

An :class:`InnerRun` is a *population* of ``P >= 1`` networks of one architecture (one task,
``P`` seeds: different initialisations and batches) trained in one batched computation:
inner gradients by ``torch.func.vmap`` over the stacked parameters ``[P, *shape]``, and one
learned-optimizer call on the stacked parameter graph (:meth:`graphs.GMN.forward` batches the
``P`` graphs). The meta-loss is the mean over the members.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from graphs import ParameterGraph
from lopt.update import State, UpdateConfig, init_state, learned_update
from tasks import Task

__all__ = ["InnerRun", "clipped_loss", "log_uniform_scales", "new_inner_run", "reparameterize",
           "unroll"]


@dataclass
class InnerRun:
    """A population of inner training runs of one task, advanced truncation by truncation.

    Attributes:
        task: the inner task; ``model`` a module of its architecture (weights unused:
            ``params`` are passed functionally) and ``graph`` its parameter graph.
        seeds: one model-init and data seed per member (``P = len(seeds)``).
        params, state: stacked inner parameters ``{name: [P, *shape]}`` and optimizer state
            (detached; ``state.step`` is shared by the members).
        step: inner steps taken so far; ``horizon`` steps after which the run is reset.
        extra: tensors an estimator keeps with the run across truncations (PES: its
            particles' inner runs and accumulated noise), ``{name: tensor}``; checkpointed
            with the run, empty in a new one (a reset starts them afresh).
        reparam: task augmentation (:func:`reparameterize`): the network computes with
            ``scale * p`` for every ``{name: scale}``, so the optimizer trains ``p`` (empty:
            none).
    """

    task: Task
    model: nn.Module
    graph: ParameterGraph
    seeds: tuple[int, ...]
    params: dict[str, Tensor]
    state: State
    step: int
    horizon: int
    extra: dict[str, Tensor] = field(default_factory=dict)
    reparam: dict[str, float] = field(default_factory=dict)

    @property
    def population(self) -> int:
        return len(self.seeds)

    def member(self, i: int) -> dict[str, Tensor]:
        """Member ``i``'s parameters ``{name: [*shape]}``."""
        return {n: v[i] for n, v in self.params.items()}


def new_inner_run(task: Task, seeds: int | Sequence[int], horizon: int, cfg: UpdateConfig,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  graph: ParameterGraph | None = None) -> InnerRun:
    """Fresh runs of ``task``, one per seed (models initialised from their seeds)."""
    seeds = (int(seeds),) if isinstance(seeds, int) else tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("an inner run needs at least one seed")
    members = []
    for seed in seeds:
        model = task.make_model(seed).to(device=device, dtype=dtype)
        members.append({n: p.detach().clone() for n, p in model.named_parameters()})
    graph = (graph or ParameterGraph.from_module(model)).to(device)
    params = {n: torch.stack([m[n] for m in members]) for n in graph.param_names}
    return InnerRun(task, model, graph, seeds, params, init_state(params, cfg), 0, horizon)


def reparameterize(run: InnerRun, scales: Mapping[str, float]) -> InnerRun:
    r"""Task augmentation (Celo, VeLO): a fresh ``run`` whose networks compute with
    :math:`\theta = s \, \phi` per tensor, the optimizer training :math:`\phi = \theta / s`.

    The networks' function and losses at a given :math:`\theta` are unchanged, but the
    optimizer sees parameters scaled by :math:`1/s` and gradients by :math:`s` (so a step of
    one size in :math:`\phi` moves :math:`\theta` :math:`s` times as far): a learned
    optimizer meta-trained over many scales cannot rely on one weight scale.
    """
    if run.step or run.extra or run.reparam:
        raise ValueError("reparameterize a fresh inner run (step 0), not one in progress")
    unknown = sorted(set(scales) - set(run.params))
    if unknown:
        raise ValueError(f"scales for unknown parameters {unknown}")
    bad = {n: s for n, s in scales.items() if not (math.isfinite(s) and s > 0)}
    if bad:
        raise ValueError(f"scales must be finite and positive, got {bad}")
    params = {n: p / scales[n] if n in scales else p for n, p in run.params.items()}
    return replace(run, params=params, reparam={**run.reparam, **dict(scales)})


def log_uniform_scales(names: Sequence[str], bound: float, generator: torch.Generator
                       ) -> dict[str, float]:
    """One scale per name, log-uniform in ``[1 / bound, bound]``."""
    if not bound >= 1:
        raise ValueError(f"the scale bound must be >= 1, got {bound}")
    u = torch.rand(len(names), generator=generator, dtype=torch.float64) * 2 - 1
    return {n: math.exp(float(v) * math.log(bound)) for n, v in zip(names, u, strict=True)}


def clipped_loss(loss: Tensor, clip: float) -> Tensor:
    """``clamp(loss, 0, clip) / clip`` with NaN -> 1 (the clip value, normalised)."""
    loss = torch.where(torch.isnan(loss), torch.full_like(loss, clip), loss)
    return loss.clamp(0.0, clip) / clip


def population_batch(task: Task, step: int, seeds: Sequence[int], split: str,
                     like: Tensor) -> tuple[Tensor, Tensor]:
    """Every member's minibatch of inner step ``step``, stacked: ``[P, batch, ...]``."""
    xs, ys = zip(*(task.batch(step, s, split) for s in seeds))
    x, y = torch.stack(xs), torch.stack(ys)
    x = x.to(like.device, like.dtype) if x.is_floating_point() else x.to(like.device)
    y = y.to(like.device, like.dtype) if y.is_floating_point() else y.to(like.device)
    return x, y


def unroll(
    net: nn.Module,
    meta: Mapping[str, Mapping[str, Tensor]],
    run: InnerRun,
    length: int,
    cfg: UpdateConfig,
    objective: str = "valid",
    meta_loss: str = "linear",
) -> tuple[Tensor, tuple[dict[str, Tensor], State]]:
    """Meta-loss of ``length`` inner steps from ``run``'s current parameters and state.

    Args:
        net: the learned optimizer's net (its weights come from ``meta["net"]``).
        meta: ``{"net": weights, "scales": scales}``: what is differentiated.
        run: the inner runs (not modified).
        length: truncation length :math:`T`.
        objective: ``"valid"`` (held-out batches) or ``"train"``.
        meta_loss: ``"linear"`` averages the normalised clipped losses; ``"log"`` averages
            their logarithms (``log(1e-3 + loss / clip)``), so that late, small improvements
            (0.13 -> 0.115) weigh as much as early, large ones.

    Returns:
        ``(meta_loss [], (params, state))``: the meta-loss averaged over the truncation and
        the population, and the final stacked inner parameters and state.
    """
    if objective not in ("valid", "train"):
        raise ValueError(f"objective must be 'valid' or 'train', got {objective!r}")
    if meta_loss not in ("linear", "log"):
        raise ValueError(f"meta_loss must be 'linear' or 'log', got {meta_loss!r}")
    task, model, seeds = run.task, run.model, run.seeds
    ref = next(iter(run.params.values()))

    reparam = run.reparam

    def loss_fn(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        if reparam:
            params = {n: p * reparam[n] if n in reparam else p for n, p in params.items()}
        return task.loss(functional_call(model, params, (x,)), y)

    inner_grads, member_losses = vmap(grad(loss_fn)), vmap(loss_fn)
    params, state = run.params, run.state
    total = 0.0
    # the meta-gradient differentiates the inner gradients again: attention must record the
    # composite (math) kernel, since the fused CPU / flash kernels have no double backward
    with sdpa_kernel(SDPBackend.MATH):
        for i in range(length):
            t = run.step + i
            grads = inner_grads(params, *population_batch(task, t, seeds, "train", ref))
            params, state = learned_update(
                net, meta["net"], meta["scales"], run.graph, params, grads, state, cfg
            )
            if objective == "valid":
                xo, yo = population_batch(task, t, seeds, "valid", ref)
            else:
                xo, yo = population_batch(task, t + 1, seeds, "train", ref)
            term = clipped_loss(member_losses(params, xo, yo), task.loss_clip)
            if meta_loss == "log":
                term = torch.log(1e-3 + term)
            total = total + term.mean()
    return total / length, (params, state)
