r"""Per-parameter input features of the learned optimizer.

For every parameter tensor the optimizer keeps momenta :math:`m_k` at the decays
``momentum_decays`` and a second-moment estimate :math:`v`. The features of one step are

.. math::
    \bigl[\, p,\ g,\ m_1, \dots, m_K,\ \sqrt{v},\ d \,\bigr] \quad\text{each scaled by}\quad
    \operatorname{norm}(x) = x \,/\, \sqrt{10^{-5} + \operatorname{mean}(x^2)}

(the mean is over the entries of one tensor, so the scaling is invariant to permuting
neurons), where :math:`d = \hat m_1 / (\sqrt{\hat v} + \epsilon)` is the bias-corrected Adam
direction, followed by the step features :math:`\tanh(t / \tau - 1)` for each ``tau`` in
``step_taus`` — per-step scalars broadcast to every entry, not normalised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["normalize", "num_features", "step_features", "tensor_features"]


def normalize(x: Tensor, eps: float = 1e-5, batch_dims: int = 0) -> Tensor:
    r"""Per-tensor second-moment normalisation :math:`x / \sqrt{\epsilon + \mathrm{mean}(x^2)}`.

    With ``batch_dims=1`` the leading dimension indexes a population of networks and each
    member's tensor is normalised on its own.
    """
    if batch_dims == 0:
        return x * torch.rsqrt(eps + x.square().mean())
    ms = x.square().mean(dim=tuple(range(batch_dims, x.dim())), keepdim=True)
    return x * torch.rsqrt(eps + ms)


def num_features(num_momenta: int, num_taus: int) -> int:
    """Channels per entry: parameter, gradient, momenta, sqrt(v), Adam direction, step taus."""
    return 2 + num_momenta + 2 + num_taus


def step_features(step: Tensor, taus: Sequence[float]) -> list[Tensor]:
    r"""``[tanh(t / tau - 1) for tau in taus]``: scalar tensors of ``step``'s dtype."""
    return [torch.tanh(step / tau - 1.0) for tau in taus]


def tensor_features(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    momenta: Sequence[Mapping[str, Tensor]],
    second: Mapping[str, Tensor],
    direction: Mapping[str, Tensor],
    step_feats: Sequence[Tensor],
    batch_dims: int = 0,
) -> list[dict[str, Tensor]]:
    """The feature channels, one parameter-shaped dict each (the GMN's ``*feature_dicts``).

    Args:
        params, grads: ``{name: [*shape]}``.
        momenta: one ``{name: [*shape]}`` per momentum decay (already updated this step).
        second: the second-moment estimate ``v`` (already updated).
        direction: the bias-corrected Adam direction.
        step_feats: scalar step features (see :func:`step_features`).
        batch_dims: 1 when every tensor is stacked ``[P, *shape]`` over a population of
            networks (each member normalised on its own), else 0.

    Returns:
        ``num_features(len(momenta), len(step_feats))`` dicts ``{name: [*shape]}``.
    """
    names = list(params)
    # the tiny offset keeps d sqrt(v) / dv finite where v = 0 (meta-gradients would be NaN)
    root_v = {n: (second[n] + 1e-30).sqrt() for n in names}
    per_tensor = [params, grads, *momenta, root_v, direction]
    out = [{n: normalize(ch[n], batch_dims=batch_dims) for n in names} for ch in per_tensor]
    for s in step_feats:
        out.append({n: s.to(params[n].dtype).expand(params[n].shape) for n in names})
    return out
