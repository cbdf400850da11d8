"""Baseline metanetworks for the INR editor: an MLP on flattened weights, and no edit.

Both map *normalized* batched parameters ``{"layers.{i}.weight": [B, out, in], ...}`` to
outputs of the same shapes, like :class:`editing.editor.GMNMetanet`; the :class:`Editor`
wraps them in the same residual form ``theta + gamma * s * f(theta / s)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = ["FlatMLPMetanet", "NoEditMetanet"]


class FlatMLPMetanet(nn.Module):
    """MLP on the flattened parameter vector (not permutation-equivariant).

    ``[B, P] -> Linear(P, h) -> ReLU -> ... (depth hidden layers) -> Linear(h, P)``; the last
    layer is zero-initialised, so a fresh editor leaves the parameters unchanged.

    Args:
        shapes: per-INR parameter shapes in layer order (``{"layers.0.weight": (32, 2), ...}``).
        hidden: width of the hidden layers (default 512).
        depth: number of hidden layers (default 3).
    """

    def __init__(
        self, shapes: Mapping[str, tuple[int, ...]], hidden: int = 512, depth: int = 3
    ) -> None:
        super().__init__()
        self.shapes = dict(shapes)
        n = sum(math.prod(s) for s in self.shapes.values())
        dims = [n] + [hidden] * depth
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.head = nn.Linear(dims[-1], n)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.body = nn.Sequential(*layers)

    def forward(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Batched params (``[B, *shape]`` each) -> outputs of the same shapes."""
        batch = next(iter(params.values())).shape[0]
        flat = torch.cat([rearrange(params[k], "b ... -> b (...)") for k in self.shapes], dim=1)
        out = self.head(self.body(flat))
        pieces = out.split([math.prod(s) for s in self.shapes.values()], dim=1)
        return {
            k: p.reshape(batch, *s) for (k, s), p in zip(self.shapes.items(), pieces, strict=True)
        }


class NoEditMetanet(nn.Module):
    """Outputs zeros: the editor returns its input unchanged (the "no edit" baseline)."""

    def forward(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Batched params -> zeros of the same shapes."""
        return {k: torch.zeros_like(v) for k, v in params.items()}
