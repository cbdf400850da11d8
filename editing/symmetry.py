"""Hidden-neuron permutations of batched SIREN parameters (the INRs' weight-space symmetries).

Permuting the hidden neurons of layer ``l`` (rows of ``W_l`` and ``b_l``, columns of
``W_{l+1}``) leaves the function an INR computes unchanged. These helpers apply such
permutations to *batched* parameters (one permutation per INR), vectorized; they are used
as training augmentation for the non-equivariant MLP baseline and in the equivariance tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["hidden_widths", "permute_hidden", "random_hidden_permutations"]


def hidden_widths(params: Mapping[str, Tensor]) -> list[int]:
    """Widths of the hidden layers of batched SIREN ``params`` (e.g. ``[32, 32]``)."""
    n_layers = len(params) // 2
    return [params[f"layers.{i}.weight"].shape[1] for i in range(n_layers - 1)]


def random_hidden_permutations(
    params: Mapping[str, Tensor], generator: torch.Generator | None = None
) -> list[Tensor]:
    """One uniformly random permutation per INR and hidden layer: ``[[B, width], ...]``."""
    batch = next(iter(params.values())).shape[0]
    device = next(iter(params.values())).device
    return [
        torch.rand(batch, w, generator=generator).argsort(dim=1).to(device)
        for w in hidden_widths(params)
    ]


def permute_hidden(params: Mapping[str, Tensor], perms: Sequence[Tensor]) -> dict[str, Tensor]:
    """Permute the hidden neurons of every INR in a batch.

    Args:
        params: batched SIREN params ``{"layers.{i}.weight": [B, out, in], ...}``.
        perms: per hidden layer ``l``, ``[B, width_l]`` int64; new neuron ``j`` of INR ``b``
            is old neuron ``perms[l][b, j]``.

    Returns:
        permuted params (same keys and shapes); every INR renders the same image as before.
    """
    n_layers = len(params) // 2
    if len(perms) != n_layers - 1:
        raise ValueError(f"need {n_layers - 1} hidden-layer permutations, got {len(perms)}")
    out = {k: v for k, v in params.items()}
    for layer, perm in enumerate(perms):
        w, b = out[f"layers.{layer}.weight"], out[f"layers.{layer}.bias"]
        rows = perm[:, :, None].expand(-1, -1, w.shape[2])
        out[f"layers.{layer}.weight"] = torch.gather(w, 1, rows)
        out[f"layers.{layer}.bias"] = torch.gather(b, 1, perm)
        nxt = out[f"layers.{layer + 1}.weight"]
        cols = perm[:, None, :].expand(-1, nxt.shape[1], -1)
        out[f"layers.{layer + 1}.weight"] = torch.gather(nxt, 2, cols)
    return {k: out[k] for k in params}
