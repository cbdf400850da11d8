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
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import grad_and_value, vmap

from lopt.unroll import InnerRun, unroll
from lopt.update import State, UpdateConfig

__all__ = ["es_estimate", "tbptt_estimate"]

Meta = Mapping[str, Mapping[str, Tensor]]


def tbptt_estimate(
    net: nn.Module, meta: Meta, run: InnerRun, length: int, cfg: UpdateConfig,
    objective: str = "valid", meta_loss: str = "linear",
) -> tuple[Tensor, dict, tuple[dict, State]]:  # fmt: skip
    """Truncated-backprop meta-gradient of one truncation of ``run``."""

    def f(m):
        return unroll(net, m, run, length, cfg, objective, meta_loss)

    grads, (loss, (params, state)) = grad_and_value(f, has_aux=True)(meta)
    return loss.detach(), grads, _detach(params, state)


@torch.no_grad()
def es_estimate(net: nn.Module, meta: Meta, run: InnerRun, length: int, cfg: UpdateConfig,
                objective: str = "valid", sigma: float = 0.01, pairs: int = 4,
                generator: torch.Generator | None = None, meta_loss: str = "linear",
                ) -> tuple[Tensor, dict, tuple[dict, State]]:  # fmt: skip
    """Antithetic evolution-strategies estimate (``2 * pairs + 1`` unrolls, no backward).

    The ``2 * pairs`` perturbed learned optimizers are a population too: their unrolls run
    as one ``torch.func.vmap`` over the stacked perturbed weights (each perturbed optimizer
    trains its own copy of ``run``'s inner networks).
    """
    z = {g: {k: torch.randn((pairs, *v.shape), generator=generator, dtype=v.dtype).to(v.device)
             for k, v in d.items()} for g, d in meta.items()}  # fmt: skip
    perturbed = {g: {k: torch.cat([v + sigma * z[g][k], v - sigma * z[g][k]])
                     for k, v in d.items()} for g, d in meta.items()}  # fmt: skip

    def perturbed_loss(m):
        return unroll(net, m, run, length, cfg, objective, meta_loss)[0]

    # randomness="same": every perturbation sees the same batches (common random numbers)
    losses = vmap(perturbed_loss, randomness="same")(perturbed)  # [+z_1..+z_n, -z_1..-z_n]
    coef = (losses[:pairs] - losses[pairs:]) / (2 * sigma * pairs)  # [pairs]
    grads = {g: {k: torch.tensordot(coef, z[g][k], dims=1) for k in d} for g, d in meta.items()}
    loss, (params, state) = unroll(net, meta, run, length, cfg, objective, meta_loss)
    return loss, grads, _detach(params, state)


def _detach(params: dict, state: State) -> tuple[dict, State]:
    def d(x):
        if isinstance(x, dict):
            return {k: d(v) for k, v in x.items()}
        return x.detach()

    return d(params), d(state)
