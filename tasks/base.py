"""The inner-problem interface: a model factory, deterministic minibatches and a loss.

A :class:`Task` knows nothing of optimisers. Everything it exposes is a pure function of its
arguments, so a learned optimiser can drive it with ``torch.func``::

    model = task.make_model(seed)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, y = task.batch(step, seed)
    loss = task.loss(torch.func.functional_call(model, params, (x,)), y)

Models come out with BatchNorm running statistics removed
(``torch.func.replace_all_batch_norm_modules_``): BatchNorm always normalises with batch
statistics, the module holds no buffers that a forward pass would mutate, and
``functional_call`` inside ``torch.func.grad`` works.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tasks.data import DataSplit

__all__ = ["Split", "SupervisedTask", "Task", "item_seed", "mix_seed"]

Split = Literal["train", "valid"]
_SPLIT_CODE = {"train": 0, "valid": 1}
_MASK64 = (1 << 64) - 1
_GOLDEN64 = 0x9E3779B97F4A7C15  # SplitMix64's increment, 2^64 / golden ratio


def _finalize64(z: int) -> int:
    """SplitMix64's output function: a bijective avalanche mix of a 64-bit integer."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _splitmix64(z: int) -> int:
    return _finalize64((z + _GOLDEN64) & _MASK64)


def mix_seed(*values: int) -> int:
    """Hash integers into one 63-bit generator seed (SplitMix64 chain; stable across runs)."""
    z = 0
    for v in values:
        z = _splitmix64(z ^ (int(v) & _MASK64))
    return z >> 1


def item_seed(seed: int, index: int) -> int:
    """63-bit generator seed of item ``index`` of a collection seeded by ``seed``.

    SplitMix64's output function of ``seed * golden + index + 1``: distinct ``(seed, index)``
    pairs do not collide in practice, and an item's seed does not depend on which other items
    are drawn. The per-image SIREN initialisation of ``editing`` uses it (its cached INR
    dataset and shipped editors depend on these exact values), which is why it is kept beside
    :func:`mix_seed` instead of being replaced by ``mix_seed(seed, index)``.
    """
    return _finalize64((int(seed) * _GOLDEN64 + int(index) + 1) & _MASK64) >> 1


class Task(ABC):
    """An inner problem: what a learned optimiser trains.

    Attributes:
        name: registry name.
        num_classes: number of classes for classification, ``None`` for regression.
    """

    name: str
    num_classes: int | None

    @abstractmethod
    def make_model(self, seed: int) -> nn.Module:
        """A freshly initialised model; the same ``seed`` gives the same parameters."""

    @abstractmethod
    def batch(self, step: int, seed: int, split: Split = "train") -> tuple[Tensor, Tensor]:
        """The minibatch ``(inputs, targets)`` for one inner step of run ``seed``.

        ``split="train"`` draws from the training part of the train set, ``"valid"`` from
        a held-out part of the train set (for meta-objectives). Deterministic in its arguments.
        """

    @abstractmethod
    def test_data(self) -> tuple[Tensor, Tensor]:
        """The full test set ``(inputs, targets)``."""

    @abstractmethod
    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Scalar mean loss of model ``outputs`` against ``targets``."""

    @property
    @abstractmethod
    def loss_clip(self) -> float:
        """Upper clip for meta-losses (``1.5 ln C`` for classification)."""

    def resplit(self, seed: int) -> Task:
        """This task with its train set re-partitioned into train / valid by ``seed``."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-partition its train set")

    def accuracy(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Fraction of correct argmax predictions (classification tasks only); scalar."""
        if self.num_classes is None:
            raise ValueError(f"task {self.name!r} is not a classification task")
        return (outputs.argmax(dim=-1) == targets).float().mean()


@dataclass(frozen=True)
class SupervisedTask(Task):
    """A supervised task built from an architecture factory and a dataset loader.

    Attributes:
        name: registry name.
        model_fn: builds a fresh model (called under a forked, seeded torch RNG).
        data_fn: returns the (cached) :class:`DataSplit`; inputs already shaped for the model.
        batch_size: examples per minibatch; ``None`` for full-batch (the whole split).
        num_classes: classes for cross-entropy; ``None`` selects mean squared error.
        valid_fraction: tail fraction of the train set held out for ``split="valid"``;
            ``0`` makes ``"valid"`` batches come from the whole train set (fitting tasks).
        regression_loss_clip: ``loss_clip`` for regression tasks.
        split_seed: ``None`` keeps the train set's order (``"valid"`` = its tail); a seed
            first shuffles the train set with it, so ``"train"`` / ``"valid"`` are a random
            partition of it (see :meth:`resplit`). The test set is never touched.
    """

    name: str
    model_fn: Callable[[], nn.Module]
    data_fn: Callable[[], DataSplit]
    batch_size: int | None = 128
    num_classes: int | None = 10
    valid_fraction: float = 0.2
    regression_loss_clip: float = 1.0
    split_seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must lie in [0, 1), got {self.valid_fraction}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")

    # --- data -----------------------------------------------------------------------------

    def data(self) -> DataSplit:
        """The task's dataset (cached by the loader)."""
        return self.data_fn()

    def resplit(self, seed: int) -> SupervisedTask:
        """This task with its train set re-partitioned into ``"train"`` / ``"valid"`` by ``seed``.

        Meta-training uses it so that every inner run holds out its own validation examples
        and a learned optimizer cannot fit one fixed validation set.
        """
        return replace(self, split_seed=int(seed))

    @cached_property
    def _train_set(self) -> tuple[Tensor, Tensor]:
        """The train set, shuffled once by ``split_seed`` when there is one."""
        data = self.data()
        x, y = data.x_train, data.y_train
        if self.split_seed is not None:
            g = torch.Generator().manual_seed(self.split_seed)
            perm = torch.randperm(x.shape[0], generator=g)
            x, y = x[perm], y[perm]
        return x, y

    def pool(self, split: Split) -> tuple[Tensor, Tensor]:
        """Every example of ``split``: the ``"train"`` part of the train set or its held-out
        ``"valid"`` tail (the whole train set for ``valid_fraction=0``)."""
        x, y = self._train_set
        n = x.shape[0]
        n_valid = int(round(n * self.valid_fraction))
        if split == "train":
            stop = n - n_valid
            return x[:stop], y[:stop]
        if split == "valid":
            start = n - n_valid if n_valid > 0 else 0
            return x[start:], y[start:]
        raise ValueError(f"unknown split {split!r}; use 'train' or 'valid'")

    def batch(self, step: int, seed: int, split: Split = "train") -> tuple[Tensor, Tensor]:
        """``batch_size`` distinct examples drawn uniformly from ``split`` (see :class:`Task`).

        Returns:
            inputs ``[batch_size, ...]`` and targets ``[batch_size, ...]``; the whole split
            (in order) when ``batch_size`` is ``None`` or exceeds its size.
        """
        x, y = self.pool(split)
        n = x.shape[0]
        if self.batch_size is None or self.batch_size >= n:
            return x, y
        g = torch.Generator().manual_seed(mix_seed(seed, step, _SPLIT_CODE[split]))
        idx = torch.randperm(n, generator=g)[: self.batch_size]
        return x[idx], y[idx]

    def test_data(self) -> tuple[Tensor, Tensor]:
        data = self.data()
        return data.x_test, data.y_test

    # --- model / loss ---------------------------------------------------------------------

    def make_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.model_fn()
        torch.func.replace_all_batch_norm_modules_(model)
        return model

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if self.num_classes is not None:
            return F.cross_entropy(outputs, targets)
        return F.mse_loss(outputs, targets)

    @property
    def loss_clip(self) -> float:
        if self.num_classes is not None:
            return 1.5 * math.log(self.num_classes)
        return self.regression_loss_clip
