r"""Meta-gradient estimators over one truncation: truncated backprop, antithetic ES and
persistent ES.

All return ``(meta_loss, grads, (params, state))`` where ``grads`` has ``meta``'s structure
and ``(params, state)`` is the inner run advanced by the unperturbed learned optimizer.

* **TBPTT**: :math:`\nabla_\phi L(\phi)` by ``torch.func.grad`` through the unroll.
* **Antithetic ES** with :math:`n` pairs and scale :math:`\sigma`:

  .. math::
      \hat g = \frac{1}{n} \sum_{i=1}^{n}
          \frac{L(\phi + \sigma z_i) - L(\phi - \sigma z_i)}{2 \sigma} z_i,
      \qquad z_i \sim \mathcal N(0, I),

  an unbiased gradient of the Gaussian-smoothed truncated meta-loss; it needs no backward
  pass and tolerates chaotic unrolls where backprop gradients explode.
* **Persistent ES** (PES; Vicol et al., ICML 2021): each of the ``2 n`` perturbed learned
  optimizers keeps *its own* inner run from truncation to truncation (the ``+`` and ``-``
  members of a pair with fresh antithetic noise :math:`\pm\epsilon_i` each truncation), and
  pair :math:`i` accumulates its noise since the run started,
  :math:`\xi_i \leftarrow \xi_i + \epsilon_i`:

  .. math::
      \hat g = \frac{1}{2 n \sigma^2} \sum_{i=1}^{n} \xi_i \bigl(L_i^{+} - L_i^{-}\bigr).

  Summed over a run's truncations it is an unbiased gradient of the smoothed meta-loss of the
  *whole* unroll, however long (truncated backprop and ES ignore how the learned optimizer
  shaped the state a truncation starts from: a bias towards short horizons). The particles
  live in ``run.extra`` (checkpointed with the run; a reset starts them afresh).

Meta-training sees them through one small interface, :class:`Estimator`: an object built
from the meta-training config by the registry :data:`ESTIMATORS` (``--estimator NAME``),
whose ``estimate(net, meta, run, length, key)`` returns the triple above; ``key`` (outer
step, slot) seeds any noise, so every rank and every resume draws the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import ClassVar, Protocol

import torch
from torch import Tensor, nn
from torch.func import grad_and_value, vmap

from graphs import params as graph_params
from lopt.unroll import InnerRun, unroll
from lopt.update import State, UpdateConfig, UpdateState
from tasks.base import mix_seed

__all__ = ["ESTIMATORS", "ES", "PES", "Estimator", "TBPTT", "es_estimate", "pes_estimate",
           "tbptt_estimate"]

Meta = Mapping[str, Mapping[str, Tensor]]


def tbptt_estimate(
    net: nn.Module, meta: Meta, run: InnerRun, length: int, cfg: UpdateConfig,
    objective: str = "valid", meta_loss: str = "linear",
) -> tuple[Tensor, dict, tuple[dict, State]]:
    """Truncated-backprop meta-gradient of one truncation of ``run``."""

    def f(m):
        return unroll(net, m, run, length, cfg, objective, meta_loss)

    grads, (loss, (params, state)) = grad_and_value(f, has_aux=True)(meta)
    return loss.detach(), grads, _detach(params, state)


@torch.no_grad()
def es_estimate(net: nn.Module, meta: Meta, run: InnerRun, length: int, cfg: UpdateConfig,
                objective: str = "valid", sigma: float = 0.01, pairs: int = 4,
                generator: torch.Generator | None = None, meta_loss: str = "linear",
                ) -> tuple[Tensor, dict, tuple[dict, State]]:
    """Antithetic evolution-strategies estimate (``2 * pairs + 1`` unrolls, no backward).

    The ``2 * pairs`` perturbed learned optimizers are a population too: their unrolls run
    as one ``torch.func.vmap`` over the stacked perturbed weights (each perturbed optimizer
    trains its own copy of ``run``'s inner networks).
    """
    eps = _perturbation(meta, pairs, sigma, generator)

    def perturbed_loss(m):
        return unroll(net, m, run, length, cfg, objective, meta_loss)[0]

    # randomness="same": every perturbation sees the same batches (common random numbers)
    losses = vmap(perturbed_loss, randomness="same")(_antithetic(meta, eps))
    grads = _combine(losses, eps, sigma)
    loss, (params, state) = unroll(net, meta, run, length, cfg, objective, meta_loss)
    return loss, grads, _detach(params, state)


def _antithetic(meta: Meta, eps: dict) -> dict:
    """The ``2 n`` perturbed meta-parameters ``[meta + eps_1 .. eps_n, meta - eps_1 .. eps_n]``."""
    return {g: {k: torch.cat([v + eps[g][k], v - eps[g][k]]) for k, v in d.items()}
            for g, d in meta.items()}


def _combine(losses: Tensor, noise: dict, sigma: float) -> dict:
    """``sum_i noise_i (L_i+ - L_i-) / (2 n sigma^2)`` from the losses of :func:`_antithetic`
    (``noise``: ES's perturbation ``eps``, PES's accumulated ``xi``)."""
    pairs = losses.shape[0] // 2
    coef = (losses[:pairs] - losses[pairs:]) / (2 * sigma**2 * pairs)  # [pairs]
    return {g: {k: torch.tensordot(coef, v, dims=1) for k, v in d.items()}
            for g, d in noise.items()}


PES_PREFIX = "pes."
"""Keys of ``run.extra`` that :func:`pes_estimate` owns."""


def _perturbation(meta: Meta, pairs: int, sigma: float, generator: torch.Generator | None
                  ) -> dict:
    """``sigma z``, ``z ~ N(0, I)``, one ``[pairs, *shape]`` per meta tensor."""
    return {g: {k: sigma * torch.randn((pairs, *v.shape), generator=generator,
                                       dtype=v.dtype).to(v.device) for k, v in d.items()}
            for g, d in meta.items()}


@torch.no_grad()
def pes_estimate(net: nn.Module, meta: Meta, run: InnerRun, length: int, cfg: UpdateConfig,
                 objective: str = "valid", sigma: float = 0.01, pairs: int = 4,
                 generator: torch.Generator | None = None, meta_loss: str = "linear",
                 ) -> tuple[Tensor, dict, tuple[dict, State]]:
    """Persistent-ES estimate of one truncation (``2 * pairs + 1`` unrolls, no backward).

    The ``2 * pairs`` particles (their inner runs, ``[2 * pairs, *]`` each, and the
    accumulated noise ``xi``) are read from and written back to ``run.extra``; a run without
    them (new, or reset) starts every particle from ``run``'s parameters and state with
    ``xi = 0``. The particles run as one ``torch.func.vmap``, every one on the same batches.
    A pair one of whose particles diverged (a non-finite parameter) contributes its clipped
    losses this once, then restarts from the unperturbed run with ``xi = 0``.
    """
    eps = _perturbation(meta, pairs, sigma, generator)
    extra = run.extra
    key = PES_PREFIX + "xi."
    if not any(k.startswith(PES_PREFIX) for k in extra):  # a new run: particles at its start
        n = 2 * pairs
        extra.update({f"{key}{g}.{k}": torch.zeros_like(e) for g, d in eps.items()
                      for k, e in d.items()})
        extra.update(_pes_pack(
            {name: p.expand(n, *p.shape).clone() for name, p in run.params.items()},
            run.state.map(lambda t: t.expand(n, *t.shape).clone())))
    xi = {g: {k: extra[f"{key}{g}.{k}"] + e for k, e in d.items()} for g, d in eps.items()}
    params, state = _pes_unpack(extra, run)

    def particle(m, p, s):
        loss, (p, s) = unroll(net, m, replace(run, params=p, state=s, extra={}), length, cfg,
                              objective, meta_loss)
        return loss, p, s

    losses, params, state = vmap(particle, randomness="same")(_antithetic(meta, eps), params,
                                                              state)
    grads = _combine(losses, xi, sigma)
    loss, (new_params, new_state) = unroll(net, meta, run, length, cfg, objective, meta_loss)
    # a pair with a diverged particle would carry its NaN run (and a clipped loss) until the
    # run resets: both restart from the unperturbed run, their noise sum from zero
    finite = torch.stack([torch.isfinite(p.flatten(1)).all(1) for p in params.values()]).all(0)
    broken = ~(finite[:pairs] & finite[pairs:])  # [pairs]
    if bool(broken.any()):
        restart = torch.cat([broken, broken])

        def renew(particles: Tensor, fresh: Tensor) -> Tensor:
            mask = restart.reshape(-1, *([1] * fresh.dim()))
            return torch.where(mask, fresh.expand_as(particles), particles)

        params = {n: renew(p, new_params[n]) for n, p in params.items()}
        state = UpdateState.from_slots(state.step, {
            slot: {n: renew(t, new_state.slots()[slot][n]) for n, t in d.items()}
            for slot, d in state.slots().items()})
        xi = {g: {k: x * ~broken.reshape(-1, *([1] * (x.dim() - 1))) for k, x in d.items()}
              for g, d in xi.items()}
    extra.update({f"{key}{g}.{k}": x for g, d in xi.items() for k, x in d.items()})
    extra.update(_pes_pack(params, state))
    return loss, grads, _detach(new_params, new_state)


def _pes_pack(params: dict[str, Tensor], state: State) -> dict[str, Tensor]:
    """The particles' inner runs as ``run.extra`` entries."""
    out = {f"{PES_PREFIX}params.{n}": p for n, p in params.items()}
    out[f"{PES_PREFIX}state.step"] = state.step
    for slot, d in state.slots().items():
        out.update({f"{PES_PREFIX}state.{slot}.{n}": t for n, t in d.items()})
    return out


def _pes_unpack(extra: dict[str, Tensor], run: InnerRun) -> tuple[dict[str, Tensor], State]:
    params = {n: extra[f"{PES_PREFIX}params.{n}"] for n in run.params}
    slots = {slot: {n: extra[f"{PES_PREFIX}state.{slot}.{n}"] for n in d}
             for slot, d in run.state.slots().items()}
    return params, UpdateState.from_slots(extra[f"{PES_PREFIX}state.step"], slots)


def _detach(params: dict, state: State) -> tuple[dict, State]:
    return graph_params.detach(params), state.map(Tensor.detach)


Estimate = tuple[Tensor, dict, tuple[dict, State]]


class Estimator(Protocol):
    """A meta-gradient estimator over one truncation of an inner run. One that keeps state
    from truncation to truncation (PES) keeps it in ``run.extra``."""

    def estimate(self, net: nn.Module, meta: Meta, run: InnerRun, length: int,
                 key: tuple[int, int]) -> Estimate:
        """``(meta_loss, grads like meta, (params, state) advanced by length steps)``."""
        ...


@dataclass(frozen=True)
class TBPTT:
    """Truncated backpropagation through the unroll (:func:`tbptt_estimate`)."""

    update: UpdateConfig
    objective: str = "valid"
    meta_loss: str = "linear"

    def estimate(self, net, meta, run, length, key) -> Estimate:
        return tbptt_estimate(net, meta, run, length, self.update, self.objective,
                              self.meta_loss)


@dataclass(frozen=True)
class ES:
    """Antithetic evolution strategies (:func:`es_estimate`), noise seeded by ``(seed, key)``."""

    update: UpdateConfig
    objective: str = "valid"
    meta_loss: str = "linear"
    sigma: float = 0.01
    pairs: int = 4
    seed: int = 0

    _salt: ClassVar[int] = 7  # separates this estimator's noise from other uses of the key
    _estimate: ClassVar = staticmethod(es_estimate)

    def estimate(self, net, meta, run, length, key) -> Estimate:
        gen = torch.Generator().manual_seed(mix_seed(self.seed, *key, self._salt))
        return self._estimate(net, meta, run, length, self.update, self.objective, self.sigma,
                              self.pairs, gen, self.meta_loss)


@dataclass(frozen=True)
class PES(ES):
    """Persistent evolution strategies (:func:`pes_estimate`), noise seeded by
    ``(seed, key)``; the particles are kept in ``run.extra``."""

    _salt: ClassVar[int] = 11
    _estimate: ClassVar = staticmethod(pes_estimate)


ESTIMATORS: dict[str, Callable[..., Estimator]] = {
    "tbptt": lambda update, cfg: TBPTT(update, cfg.objective, cfg.meta_loss),
    "es": lambda update, cfg: ES(update, cfg.objective, cfg.meta_loss, cfg.es_sigma,
                                 cfg.es_pairs, cfg.seed),
    "pes": lambda update, cfg: PES(update, cfg.objective, cfg.meta_loss, cfg.es_sigma,
                                   cfg.es_pairs, cfg.seed),
}
"""``--estimator`` name -> factory ``(update_config, meta_train_config) -> Estimator``."""
