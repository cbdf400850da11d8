"""Architectures of the model zoos, described by JSON-able specs and rebuilt on demand.

A spec is ``{"family": name, "kwargs": {...}}``; :func:`build_module` turns it into a fresh
``nn.Module`` taking 8x8 digit images ``[B, 1, 8, 8]`` and returning ``[B, 10]`` logits. Every
module here traces into a :class:`graphs.ParameterGraph`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tasks.architectures import MLP, ViT, digits_resnet, make_activation
from tasks.architectures import DigitsCNN as _DigitsCNN

__all__ = ["FAMILIES", "ZooCNN", "ZooMLP", "build_module", "spec_key"]


class ZooCNN(nn.Module):
    """The "varying CNNs" family: strided 3x3 convolutions, global average pool, linear head.

    Stage ``i`` is ``Conv3x3(stride 2 for the first two stages, else 1; pad 1) -> act ->
    Dropout(p)`` inside ``self.features``; then ``AdaptiveAvgPool2d(1) -> flatten ->
    Linear(C, 10)`` (the layout of Unterthiner et al.'s CNN zoo, at 8x8 scale).

    Shapes: ``[B, 1, 8, 8] -> [B, num_classes]``.
    """

    def __init__(
        self,
        channels: Sequence[int] = (8, 8),
        activation: str = "relu",
        dropout: float = 0.0,
        num_classes: int = 10,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c_out in enumerate(channels):
            layers.append(nn.Conv2d(c_in, c_out, 3, stride=2 if i < 2 else 1, padding=1))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class ZooMLP(nn.Module):
    """``flatten -> tasks.MLP(64 -> hidden -> 10)``; ``[B, 1, 8, 8] -> [B, 10]``."""

    def __init__(self, hidden: Sequence[int] = (32,), activation: str = "relu") -> None:
        super().__init__()
        self.mlp = MLP(64, tuple(hidden), 10, activation=activation)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(torch.flatten(x, 1))


def _digits_cnn(channels: Sequence[int], norm: str | None, activation: str) -> nn.Module:
    return _DigitsCNN(tuple(channels), 10, norm=norm, activation=activation)  # type: ignore[arg-type]


def _vit(dim: int, depth: int, heads: int, mlp_dim: int, patch_size: int) -> nn.Module:
    return ViT(8, patch_size, 1, dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim)


def _resnet(widths: Sequence[int]) -> nn.Module:
    return digits_resnet(10, tuple(widths))


FAMILIES: dict[str, Callable[..., nn.Module]] = {
    "zoo_cnn": ZooCNN,
    "mlp": ZooMLP,
    "digits_cnn": _digits_cnn,
    "resnet": _resnet,
    "vit": _vit,
}
"""Zoo families by name; ``FAMILIES[spec["family"]](**spec["kwargs"])`` builds a module."""


def build_module(spec: Mapping[str, Any]) -> nn.Module:
    """A fresh, randomly initialised module for ``spec = {"family": ..., "kwargs": {...}}``."""
    try:
        factory = FAMILIES[spec["family"]]
    except KeyError:
        raise ValueError(
            f"unknown family {spec.get('family')!r}; known: {sorted(FAMILIES)}"
        ) from None
    return factory(**spec["kwargs"])


def spec_key(spec: Mapping[str, Any]) -> str:
    """A canonical string for a spec (networks with equal keys share one architecture)."""
    import json

    return json.dumps(spec, sort_keys=True)
