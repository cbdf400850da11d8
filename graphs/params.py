"""Operations on parameter dicts, written once for every package.

A *parameter dict* maps names to tensors (``dict(model.named_parameters())``, batched SIREN
params, a learned optimizer's meta-parameters); a *population* of them stacks the members on
a leading axis (``[P, *shape]``). Nested dicts (``{"net": {...}, "scales": {...}}``) are
accepted wherever the operation is elementwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "Params",
    "cat",
    "detach",
    "flatten",
    "map_tensors",
    "member",
    "numel",
    "stack",
    "to",
    "unflatten",
]

Params = dict[str, Tensor]
Tree = Mapping[str, "Tensor | Tree"]


def map_tensors(fn: Callable[[Tensor], Tensor], tree: Tree) -> dict:
    """``fn`` applied to every tensor of a (nested) dict; the structure and order are kept."""
    return {k: map_tensors(fn, v) if isinstance(v, Mapping) else fn(v) for k, v in tree.items()}


def detach(tree: Tree) -> dict:
    """Every tensor detached from autograd (no copy)."""
    return map_tensors(Tensor.detach, tree)


def to(tree: Tree, device: torch.device | str | None = None,
       dtype: torch.dtype | None = None) -> dict:
    """Every tensor moved to ``device`` and / or cast to ``dtype``."""
    return map_tensors(lambda t: t.to(device=device, dtype=dtype), tree)


def member(tree: Tree, index: int | slice) -> dict:
    """Member ``index`` of a population (``t[index]`` of every stacked tensor)."""
    return map_tensors(lambda t: t[index], tree)


def stack(members: Sequence[Tree]) -> dict:
    """A population from its members: every tensor stacked on a new leading axis."""
    first = members[0]
    return {k: stack([m[k] for m in members]) if isinstance(v, Mapping)
            else torch.stack([m[k] for m in members]) for k, v in first.items()}


def cat(populations: Sequence[Tree]) -> dict:
    """One population from several: every tensor concatenated along the leading axis."""
    first = populations[0]
    return {k: cat([m[k] for m in populations]) if isinstance(v, Mapping)
            else torch.cat([m[k] for m in populations]) for k, v in first.items()}


def _leaves(tree: Tree) -> list[Tensor]:
    out = []
    for v in tree.values():
        out.extend(_leaves(v) if isinstance(v, Mapping) else [v])
    return out


def numel(tree: Tree) -> int:
    """Number of entries over all tensors."""
    return sum(t.numel() for t in _leaves(tree))


def flatten(tree: Tree) -> Tensor:
    """All entries in one vector: tensor after tensor in dict order, each row-major."""
    return torch.cat([t.reshape(-1) for t in _leaves(tree)])


def unflatten(vector: Tensor, like: Tree) -> dict:
    """The inverse of :func:`flatten`: views of ``vector`` shaped like ``like``'s tensors."""
    if vector.numel() != numel(like):
        raise ValueError(f"a vector of {vector.numel()} entries cannot fill {numel(like)}")
    offset = 0

    def take(t: Tensor) -> Tensor:
        nonlocal offset
        out = vector[offset: offset + t.numel()].view_as(t)
        offset += t.numel()
        return out

    return map_tensors(take, like)
