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
from torch.func import grad_and_value

from lopt.unroll import InnerRun, unroll
from lopt.update import State, UpdateConfig

__all__ = ["es_estimate", "tbptt_estimate"]

Meta = Mapping[str, Mapping[str, Tensor]]


def tbptt_estimate(
    net: nn.Module, meta: Meta, run: InnerRun, length: int, cfg: UpdateConfig,
    objective: str = "valid",
) -> tuple[Tensor, dict, tuple[dict, State]]:  # fmt: skip
    """Truncated-backprop meta-gradient of one truncation of ``run``."""

    def f(m):
        return unroll(net, m, run, length, cfg, objective)

    grads, (loss, (params, state)) = grad_and_value(f, has_aux=True)(meta)
    return loss.detach(), grads, _detach(params, state)


@torch.no_grad()
def es_estimate(net: nn.Module, meta: Meta, run: InnerRun, length: int, cfg: UpdateConfig,
                objective: str = "valid", sigma: float = 0.01, pairs: int = 4,
                generator: torch.Generator | None = None,
                ) -> tuple[Tensor, dict, tuple[dict, State]]:  # fmt: skip
    """Antithetic evolution-strategies estimate (``2 * pairs + 1`` unrolls, no backward)."""
    grads = {g: {k: torch.zeros_like(v) for k, v in d.items()} for g, d in meta.items()}
    for _ in range(pairs):
        z = {g: {k: torch.randn(v.shape, generator=generator, dtype=v.dtype).to(v.device)
                 for k, v in d.items()} for g, d in meta.items()}  # fmt: skip
        plus = {g: {k: v + sigma * z[g][k] for k, v in d.items()} for g, d in meta.items()}
        minus = {g: {k: v - sigma * z[g][k] for k, v in d.items()} for g, d in meta.items()}
        lp, _ = unroll(net, plus, run, length, cfg, objective)
        lm, _ = unroll(net, minus, run, length, cfg, objective)
        coef = (lp - lm) / (2 * sigma * pairs)
        for g in grads:
            for k in grads[g]:
                grads[g][k] += coef * z[g][k]
    loss, (params, state) = unroll(net, meta, run, length, cfg, objective)
    return loss, grads, _detach(params, state)


def _detach(params: dict, state: State) -> tuple[dict, State]:
    def d(x):
        if isinstance(x, dict):
            return {k: d(v) for k, v in x.items()}
        return x.detach()

    return d(params), d(state)
