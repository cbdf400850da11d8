"""Closed-form weight-space edits (where one exists).

Only ``invert`` has one for a SIREN: its last layer is linear, so negating the last weight
and mapping the last bias ``b -> 1 - b`` turns the output ``f(x)`` into ``1 - f(x)`` exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

__all__ = ["invert_params"]


def invert_params(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Exact weight-space inversion: ``render(invert_params(p)) == 1 - render(p)``.

    Args:
        params: batched SIREN params ``{"layers.{i}.weight": [B, out, in], ...}``.

    Returns:
        the same keys and shapes, last layer ``W -> -W``, ``b -> 1 - b``.
    """
    last = len(params) // 2 - 1
    out = dict(params)
    out[f"layers.{last}.weight"] = -params[f"layers.{last}.weight"]
    out[f"layers.{last}.bias"] = 1.0 - params[f"layers.{last}.bias"]
    return out
