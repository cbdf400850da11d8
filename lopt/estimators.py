r"""Meta-gradient estimators over one truncation: truncated backprop and antithetic ES.

Both return ``(meta_loss, grads, (params, state))`` where ``grads`` has ``meta``'s structure
and ``(params, state)`` is the inner run advanced by the unperturbed learned optimizer.

* **TBPTT**: :math:`\nabla_\phi L(\phi)` by ``torch.func.grad`` through the unroll.
* **Antithetic ES** with :math:`n` pairs and scale :math:`\sigma`:

  .. math::
      \hat g = \frac{1}{n} \sum_{i=1}^{n}
          \frac{L(\phi + \sigma z_i) - L(\phi - \sigma z_i)}{2 \sigma} z_i,
      \qquad z_i \sim \mathcal N(0, I),

  an unbiased gradient of the Gaussian-smoothed truncated meta-loss; it needs no backward
  pass and tolerates chaotic unrolls where backprop gradients explode.

Meta-training sees them through one small interface, :class:`Estimator`: an object built
from the meta-training config by the registry :data:`ESTIMATORS` (``--estimator NAME``),
whose ``estimate(net, meta, run, length, key)`` returns the triple above; ``key`` (outer
step, slot) seeds any noise, so every rank and every resume draws the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.func import grad_and_value, vmap

from graphs import params as graph_params
from lopt.unroll import InnerRun, unroll
from lopt.update import State, UpdateConfig
from tasks.base import mix_seed

__all__ = ["ESTIMATORS", "ES", "Estimator", "TBPTT", "es_estimate", "tbptt_estimate"]

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
    z = {g: {k: torch.randn((pairs, *v.shape), generator=generator, dtype=v.dtype).to(v.device)
             for k, v in d.items()} for g, d in meta.items()}
    perturbed = {g: {k: torch.cat([v + sigma * z[g][k], v - sigma * z[g][k]])
                     for k, v in d.items()} for g, d in meta.items()}

    def perturbed_loss(m):
        return unroll(net, m, run, length, cfg, objective, meta_loss)[0]

    # randomness="same": every perturbation sees the same batches (common random numbers)
    losses = vmap(perturbed_loss, randomness="same")(perturbed)  # [+z_1..+z_n, -z_1..-z_n]
    coef = (losses[:pairs] - losses[pairs:]) / (2 * sigma * pairs)  # [pairs]
    grads = {g: {k: torch.tensordot(coef, z[g][k], dims=1) for k in d} for g, d in meta.items()}
    loss, (params, state) = unroll(net, meta, run, length, cfg, objective, meta_loss)
    return loss, grads, _detach(params, state)


def _detach(params: dict, state: State) -> tuple[dict, State]:
    return graph_params.detach(params), state.map(Tensor.detach)


Estimate = tuple[Tensor, dict, tuple[dict, State]]


class Estimator(Protocol):
    """A meta-gradient estimator over one truncation of an inner run."""

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

    def estimate(self, net, meta, run, length, key) -> Estimate:
        gen = torch.Generator().manual_seed(mix_seed(self.seed, *key, 7))
        return es_estimate(net, meta, run, length, self.update, self.objective, self.sigma,
                           self.pairs, gen, self.meta_loss)


ESTIMATORS: dict[str, Callable[..., Estimator]] = {
    "tbptt": lambda update, cfg: TBPTT(update, cfg.objective, cfg.meta_loss),
    "es": lambda update, cfg: ES(update, cfg.objective, cfg.meta_loss, cfg.es_sigma,
                                 cfg.es_pairs, cfg.seed),
}
"""``--estimator`` name -> factory ``(update_config, meta_train_config) -> Estimator``."""
