"""Neuron labels of a recorded tensor: which neuron each element belongs to.

When the tracer knows the real shapes (:mod:`graphs.recording`), it follows a shape
operation exactly by running the same operation on a *label tensor*: an integer tensor of
the activation's shape whose every element is the node id of the neuron it holds (``-1``
where it holds none, as in padding). Transposes, reshapes into heads, channel shuffles,
slices, concatenations: whatever the operation does to the activation it does to the labels,
so two axes of equal size are never confused and no rule per operation is needed.

Labels are stored compact: size 1 along every axis they do not vary on (batch, positions),
so they cost the size of the neuron group, not of the activation. An axis along which the
labels vary *carries neurons*. One such axis is an ordinary group; several (heads x head
dimensions, after ``view(B, T, H, D)``) are a *factored* group, which only shape operations,
attention products and elementwise operations may read (:class:`graphs.builder.Group`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from graphs.builder import UNKNOWN, Group, layout_of

NO_NEURON = -1


class LabelError(Exception):
    """The labels cannot be read as a neuron group; the walker names the operation."""


def labels(g: Group, shape: tuple[int, ...]) -> Tensor:
    """Compact labels of ``g`` seen with the real ``shape``."""
    if g.lab is not None:
        if g.lab.dim() != len(shape):
            raise AssertionError(f"labels of rank {g.lab.dim()} for a tensor of rank {len(shape)}")
        return g.lab
    n = len(shape)
    a = g.axis if g.axis is not None else n - 1
    a = a + n if a < 0 else a
    size = shape[a]
    ids = g.ids
    if g.repeat is not None and ids.numel() != size:
        k = size // ids.numel()
        ids = ids.repeat_interleave(k) if g.repeat == "interleave" else ids.repeat(k)
    if ids.numel() != size:
        raise LabelError(f"{ids.numel()} neurons on an axis of size {size}")
    view = [1] * n
    view[a] = size
    return ids.view(view)


def compact(lab: Tensor) -> Tensor:
    """Size 1 along every axis the labels do not vary on."""
    for k in range(lab.dim()):
        if lab.shape[k] > 1:
            first = lab.narrow(k, 0, 1)
            if bool((lab == first).all()):
                lab = first
    return lab.contiguous()


def varying(lab: Tensor) -> list[int]:
    return [k for k in range(lab.dim()) if lab.shape[k] > 1]


def group_of(lab: Tensor, like: Group) -> Group:
    """The group whose labels are ``lab``: one neuron axis, or factored (``like``: the group
    it came from, for the fields labels do not decide)."""
    lab = compact(lab)
    like = dataclasses.replace(like, side=None)
    n = lab.dim()
    axes = varying(lab)
    if bool((lab == NO_NEURON).any()):
        raise LabelError("it mixes neurons with constants (padding) along a neuron axis")
    if len(axes) > 1:
        return dataclasses.replace(like, ids=lab.flatten(), lab=lab, ndim=n, axis=None,
                                   repeat=None, layout=UNKNOWN)
    a = axes[0] if axes else max(n - 1, 0)
    like = dataclasses.replace(like, layout=layout_of(n, a) or UNKNOWN, lab=None, ndim=n,
                               axis=a)
    ids = lab.flatten()
    c = torch.unique(ids).numel()
    if c == ids.numel():
        return dataclasses.replace(like, ids=ids, repeat=None)
    # a flattened group: each neuron repeated k times in a row, or the group repeated k times
    k = ids.numel() // c
    if c * k == ids.numel():
        base = torch.unique_consecutive(ids)
        if base.numel() == c and torch.equal(base.repeat_interleave(k), ids):
            return dataclasses.replace(like, ids=base, repeat="interleave")
        if torch.equal(ids[:c].repeat(k), ids):
            return dataclasses.replace(like, ids=ids[:c], repeat="tile")
    raise LabelError("it repeats neurons along one axis in an order the tracer does not model")
