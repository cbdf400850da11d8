r"""Per-entry input features of the learned optimizer, on flat ``[B, C, P]`` entries.

For every parameter tensor the optimizer keeps momenta :math:`m_k` at the decays
``momentum_decays`` and a second-moment estimate :math:`v`. The features of one step are

.. math::
    \bigl[\, p,\ g,\ m_1, \dots, m_K,\ \sqrt{v},\ d \,\bigr] \quad\text{each scaled by}\quad
    \operatorname{norm}(x) = x \,/\, \sqrt{10^{-5} + \operatorname{mean}(x^2)}

(the mean is over the entries of one tensor, so the scaling is invariant to permuting
neurons), where :math:`d = \hat m_1 / (\sqrt{\hat v} + \epsilon)` is the bias-corrected Adam
direction, and the step features :math:`\tanh(t / \tau - 1)` for each ``tau`` in
``step_taus`` — per-step scalars, not normalised: a context vector for nets that read one
(:class:`graphs.NeuronGMN`), channels broadcast to every entry for the others.

With ``UpdateConfig.tensor_stats`` three per-tensor scalars follow, broadcast to the tensor's
entries and not normalised (:func:`tensor_stats`): the root mean square of :math:`d` (near 1
when the gradient is consistent, small when it is noise or oscillates), the cosine between
the gradient and the first momentum before it (negative when steps overshoot), and
:math:`\tfrac14 \log(\mathrm{rms}(p) + 10^{-4})`, the tensor's scale (which the
normalised channels hide, and which a relative step size needs). All three are invariant to
permuting neurons, and the first two to rescaling the loss.

Entries are kept flat, all tensors of a network one after the other in the parameter
graph's order: ``[B, P]`` per quantity (``B`` networks of a population, 1 for one network),
so a step costs a fixed number of vectorised passes, whatever the number of tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["NUM_TENSOR_STATS", "entry_features", "gradient_agreement", "normalize", "normalize_",
           "num_features", "num_tensor_features", "step_features", "tensor_stats"]

NUM_TENSOR_STATS = 3
"""Channels :func:`tensor_stats` adds."""


def normalize(x: Tensor, numels: Sequence[int], eps: float = 1e-5) -> Tensor:
    r"""Per-tensor second-moment normalisation :math:`x / \sqrt{\epsilon + \mathrm{mean}(x^2)}`.

    ``x`` is ``[..., P]`` with the entries of tensors of sizes ``numels`` (``T`` ints summing
    to ``P``) one after the other; every leading index (a channel, a population member) is
    normalised on its own.
    """
    if x.requires_grad or torch._C._functorch.is_functorch_wrapped_tensor(x):
        sizes = torch.tensor(numels, device=x.device)
        inv = torch.rsqrt(eps + _tensor_sums(x.square(), sizes) / sizes.to(x.dtype))
        return x * torch.repeat_interleave(inv, sizes, dim=-1, output_size=x.shape[-1])
    return normalize_(x.clone(), numels, eps)


def normalize_(x: Tensor, numels: Sequence[int], eps: float) -> Tensor:
    """:func:`normalize` in place (no autograd): one reduction per tensor and one fused
    in-place scaling of all of them (broadcasting ``T`` scales over ``P`` entries by an index
    costs ~10x more on CPU)."""
    pieces = list(torch.split(x, list(numels), -1))
    mean_sq = [torch.linalg.vector_norm(piece, dim=-1, keepdim=True) for piece in pieces]
    torch._foreach_mul_(mean_sq, mean_sq)
    torch._foreach_div_(mean_sq, [float(piece.shape[-1]) for piece in pieces])
    torch._foreach_add_(mean_sq, eps)
    torch._foreach_rsqrt_(mean_sq)
    torch._foreach_mul_(pieces, mean_sq)
    return x


def _tensor_sums(x: Tensor, numels: Tensor) -> Tensor:
    """``[..., P] -> [..., T]``: the sum over each tensor's entries."""
    if torch._C._functorch.is_functorch_wrapped_tensor(x):
        # inside torch.func transforms (vmap has no rule for segment_reduce): an index_add
        ids = torch.repeat_interleave(torch.arange(numels.numel(), device=x.device), numels,
                                      output_size=x.shape[-1])
        return x.new_zeros(*x.shape[:-1], numels.numel()).index_add(-1, ids, x)
    lengths = numels.expand(*x.shape[:-1], numels.numel())
    return torch.segment_reduce(x, "sum", lengths=lengths, axis=x.dim() - 1)


def num_tensor_features(num_momenta: int, stats: bool = False) -> int:
    """Per-entry channels: parameter, gradient, momenta, sqrt(v), Adam direction (and the
    per-tensor statistics with ``stats``)."""
    return 2 + num_momenta + 2 + (NUM_TENSOR_STATS if stats else 0)


def num_features(num_momenta: int, num_taus: int, stats: bool = False) -> int:
    """Per-entry channels plus the step features broadcast as channels."""
    return num_tensor_features(num_momenta, stats) + num_taus


def step_features(step: Tensor, taus: Sequence[float]) -> Tensor:
    r"""``[tanh(t / tau - 1) for tau in taus]`` as one ``[len(taus)]`` tensor."""
    return torch.tanh(step / torch.tensor(taus, dtype=step.dtype, device=step.device) - 1.0)


def entry_features(params: Tensor, grads: Tensor, momenta: Sequence[Tensor], root: Tensor,
                   direction: Tensor, numels: Sequence[int], out: Tensor | None = None,
                   stats: Tensor | None = None) -> Tensor:
    """The normalised per-entry channels ``[B, C, P]`` from flat ``[B, P]`` quantities.

    Args:
        params, grads: ``[B, P]``.
        momenta: one ``[B, P]`` per momentum decay (already updated this step).
        root: :math:`\\sqrt{v + 10^{-30}}` of the updated second moment ``v``.
        direction: the bias-corrected Adam direction.
        numels: entries per tensor (``graph.param_numels``).
        out: a ``[B, C, P]`` buffer to write the features into (no autograd), or None; a
            quantity that already is its channel of ``out`` is not copied.
        stats: ``[B, S, P]`` channels appended as they are (:func:`tensor_stats`), or None.
    """
    quantities = (params, grads, *momenta, root, direction)
    if out is None:
        raw = torch.stack(quantities, 1)
        # (stats derive from these quantities: autograd or a transform here means there too)
        if raw.requires_grad or torch._C._functorch.is_functorch_wrapped_tensor(raw):
            x = normalize(raw, numels)
        else:
            x = normalize_(raw, numels, 1e-5)  # raw is ours: no copy
        return x if stats is None else torch.cat([x, stats], 1)
    # each channel written in place (the same numbers as the stack)
    for c, value in enumerate(quantities):
        channel = out[:, c]
        if value.data_ptr() != channel.data_ptr() or value.stride() != channel.stride():
            channel.copy_(value)
    normalize_(out[:, :len(quantities)], numels, 1e-5)
    if stats is not None:
        out[:, len(quantities):].copy_(stats)
    return out


def gradient_agreement(grads: Tensor, momentum: Tensor, numels: Sequence[int]) -> Tensor:
    """``[B, T]``: per tensor, the cosine between the gradient and the momentum *before* this
    step's gradient entered it (0 where either is zero; non-finite products count as 0)."""
    sizes = torch.tensor(numels, device=grads.device)
    sums = _tensor_sums(torch.stack([grads * momentum, grads.square(), momentum.square()], 1),
                        sizes)
    cos = sums[:, 0] * torch.rsqrt(sums[:, 1] * sums[:, 2] + 1e-30)
    return torch.nan_to_num(cos, nan=0.0, posinf=0.0, neginf=0.0).clamp(-1.0, 1.0)


def tensor_stats(params: Tensor, direction: Tensor, agreement: Tensor,
                 numels: Sequence[int]) -> Tensor:
    r"""``[B, 3, P]``: per tensor :math:`\mathrm{rms}(d)`, the gradient agreement
    (:func:`gradient_agreement`) and :math:`\tfrac14 \log(\mathrm{rms}(p) + 10^{-4})`,
    each broadcast to the tensor's entries."""
    sizes = torch.tensor(numels, device=params.device)
    n = sizes.to(params.dtype)
    sums = _tensor_sums(torch.stack([direction.square(), params.square()], 1), sizes) / n
    # (the offsets keep the square roots' derivatives finite at 0)
    rms_d = torch.sqrt(sums[:, 0] + 1e-16).clamp(max=1e3)
    log_p = torch.log(torch.sqrt(sums[:, 1] + 1e-16) + 1e-4).clamp(max=20.0) / 4
    stats = torch.nan_to_num(torch.stack([rms_d, agreement, log_p], 1), nan=0.0)
    return torch.repeat_interleave(stats, sizes, dim=-1, output_size=params.shape[-1])
