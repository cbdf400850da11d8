"""Offline datasets for the inner problems: 8x8 digits, MNIST-1D, a token task, one image,
scikit-learn's bundled tables and a teacher-student regression.

Nothing here touches the network. Every loader is deterministic in its arguments and cached
in memory (``functools.lru_cache``); the cached tensors are shared, so treat them as
read-only. All loaders return a :class:`DataSplit` (a named tuple, so it also unpacks as
``x_train, y_train, x_test, y_test``).

MNIST-1D is generated locally with ``mnist1d.data.make_dataset`` from the package's built-in
templates (its ``get_dataset`` would download a pickle; we never call it). The generated
arrays are additionally cached on disk under ``$GMN_CACHE`` (default
``~/.cache/graph_metanetworks``); the disk cache is best-effort and only saves ~1 s.
"""

from __future__ import annotations

import functools
import io
import math
import os
import random
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from common.persistence import write_bytes

__all__ = [
    "DataSplit",
    "cache_dir",
    "coordinate_grid",
    "digit_image",
    "digits_permutation",
    "load_digits_images",
    "load_digits_reconstruction",
    "load_digits_split",
    "load_image_fitting",
    "load_mnist1d",
    "load_sequence_task",
    "load_synthetic_classification",
    "load_tabular",
    "load_teacher_student",
    "make_sequence_dataset",
]

DIGITS_NUM = 1797
DIGITS_NUM_TRAIN = 1400
DIGITS_NUM_TEST = 397


class DataSplit(NamedTuple):
    """A train / test split of a supervised dataset.

    Attributes:
        x_train: inputs ``[N_train, ...]``.
        y_train: targets ``[N_train, ...]`` (int64 class ids, or float regression targets).
        x_test: inputs ``[N_test, ...]``.
        y_test: targets ``[N_test, ...]``.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    def flatten_inputs(self) -> DataSplit:
        """The same split with inputs flattened to ``[N, prod(rest)]``."""
        return DataSplit(
            torch.flatten(self.x_train, 1), self.y_train, torch.flatten(self.x_test, 1), self.y_test
        )


def cache_dir() -> Path:
    """Directory for on-disk dataset caches: ``$GMN_CACHE`` or ``~/.cache/graph_metanetworks``."""
    return Path(os.environ.get("GMN_CACHE", Path.home() / ".cache" / "graph_metanetworks"))


# ----------------------------------------------------------------------------- 8x8 digits


@functools.lru_cache(maxsize=4)
def load_digits_images(size: int = 8) -> Tensor:
    """scikit-learn's bundled 8x8 digits as images, in scikit-learn order (index 0 is a zero).

    Args:
        size: side length; other than 8, every image is upsampled bilinearly
            (``align_corners=False``), which keeps values in ``[0, 1]``.

    Returns:
        ``[1797, size, size]`` float32 in ``[0, 1]`` (pixel values / 16). Cached and shared:
        treat it as read-only.
    """
    from sklearn.datasets import load_digits

    x = torch.as_tensor(load_digits().images, dtype=torch.float32) / 16.0  # [1797, 8, 8]
    if size != 8:
        x = F.interpolate(x[:, None], size=(size, size), mode="bilinear", align_corners=False)
        x = x[:, 0].contiguous()
    return x


def digits_permutation(seed: int = 0) -> Tensor:
    """The seeded order of the 1797 digits every split here is cut from.

    ``torch.randperm(1797, generator=Generator().manual_seed(seed))``: :func:`load_digits_split`
    takes the first 1400 as train and the last 397 as test; ``editing``'s digits-INR benchmark
    (seed 0) keeps the same train set and cuts the 397 into val (200) and test (197).

    Returns:
        ``[1797]`` int64 indices into :func:`load_digits_images`.
    """
    return torch.randperm(DIGITS_NUM, generator=torch.Generator().manual_seed(seed))


@functools.lru_cache(maxsize=16)
def load_digits_split(seed: int = 0) -> DataSplit:
    """scikit-learn's bundled 8x8 digits (1797 images), shuffled by ``seed``.

    Returns:
        ``DataSplit`` with ``x_train [1400, 1, 8, 8]`` and ``x_test [397, 1, 8, 8]`` float32
        in ``[0, 1]`` (pixel values / 16), ``y_train [1400]`` / ``y_test [397]`` int64 in 0..9.
        The split is :func:`digits_permutation` ``(seed)``: first 1400 train, last 397 test.
    """
    from sklearn.datasets import load_digits

    x = load_digits_images(8)[:, None]  # [1797, 1, 8, 8]
    y = torch.as_tensor(load_digits().target, dtype=torch.int64)
    perm = digits_permutation(seed)
    train, test = perm[:DIGITS_NUM_TRAIN], perm[DIGITS_NUM_TRAIN:]
    return DataSplit(x[train], y[train], x[test], y[test])


@functools.lru_cache(maxsize=4)
def load_digits_reconstruction(seed: int = 0) -> DataSplit:
    """The digits of :func:`load_digits_split` ``(seed)`` as an autoencoding problem.

    Returns:
        ``DataSplit`` whose inputs and targets are the same flattened images: ``x_train`` and
        ``y_train`` ``[1400, 64]``, ``x_test`` and ``y_test`` ``[397, 64]``, float32 in ``[0, 1]``.
    """
    x_train, _, x_test, _ = load_digits_split(seed).flatten_inputs()
    return DataSplit(x_train, x_train, x_test, x_test)


def digit_image(index: int = 0, size: int = 28) -> Tensor:
    """One digit of :func:`load_digits_images` ``(size)``, ``[size, size]`` in ``[0, 1]``.

    Uses the unshuffled scikit-learn order (``index`` 0 is a zero). A fresh copy.
    """
    return load_digits_images(size)[index].clamp(0.0, 1.0)


def coordinate_grid(
    size: int | tuple[int, int],
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Pixel-centre coordinates of an image in ``[-1, 1]^2``: ``linspace(-1, 1)`` per axis.

    Args:
        size: ``H`` for a square image, or ``(H, W)``.
        device, dtype: of the result (default: torch's defaults).

    Returns:
        ``[H * W, 2]`` with columns ``(row, col)``, row-major (the column moves fastest), so
        row ``i`` is the pixel ``image.reshape(-1)[i]``.
    """
    h, w = (size, size) if isinstance(size, int) else size
    rows, cols = torch.meshgrid(
        torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype),
        torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)


@functools.lru_cache(maxsize=4)
def load_image_fitting(index: int = 0, size: int = 28) -> DataSplit:
    """Fitting one image: coordinates -> intensities (train and test are the same grid).

    Returns:
        ``DataSplit`` with ``x_* [size * size, 2]`` from :func:`coordinate_grid` and
        ``y_* [size * size, 1]`` from :func:`digit_image` (float32 in ``[0, 1]``).
    """
    coords = coordinate_grid(size)
    pixels = digit_image(index, size).reshape(-1, 1)
    return DataSplit(coords, pixels, coords, pixels)


# ----------------------------------------------------------------------------- MNIST-1D


def _generate_mnist1d(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    """Run ``mnist1d.data.make_dataset`` offline without disturbing the global RNGs."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:  # make_dataset seeds and draws from the global numpy / random generators
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


@functools.lru_cache(maxsize=4)
def load_mnist1d(seed: int = 42, num_samples: int = 5000, disk_cache: bool = True) -> DataSplit:
    """MNIST-1D generated locally from the package's templates (no download).

    Args:
        seed: generation seed (42 reproduces the reference dataset's procedure).
        num_samples: total examples; 80% train, 20% test.
        disk_cache: also read / write ``cache_dir() / f"mnist1d_{num_samples}_{seed}.npz"``.

    Returns:
        ``DataSplit`` with ``x_* [N, 40]`` float32 (dataset-standardised) and ``y_* [N]`` int64.
    """
    path = cache_dir() / f"mnist1d_{num_samples}_{seed}.npz"
    arrays: dict[str, np.ndarray] | None = None
    if disk_cache and path.exists():
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            arrays = None  # a damaged cache file is regenerated (and replaced) below
    if arrays is None:
        arrays = _generate_mnist1d(num_samples, seed)
        if disk_cache:
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            try:
                write_bytes(path, buffer.getvalue())
            except OSError:
                pass  # a read-only home is fine: the in-memory cache still applies
    return DataSplit(
        torch.as_tensor(arrays["x"], dtype=torch.float32),
        torch.as_tensor(arrays["y"], dtype=torch.int64),
        torch.as_tensor(arrays["x_test"], dtype=torch.float32),
        torch.as_tensor(arrays["y_test"], dtype=torch.int64),
    )


# ----------------------------------------------------------------------------- token sequences


def make_sequence_dataset(
    num_samples: int, seq_len: int = 12, vocab_size: int = 16, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """The "is the first token repeated later?" task.

    Tokens are i.i.d. uniform over ``vocab_size``; the label is 1 iff ``x[:, 0]`` occurs again
    in ``x[:, 1:]``. With the defaults the classes are balanced (P(repeat) = 1 - (15/16)^11
    ~ 0.51). The task needs attention from every position to the first token.

    Returns:
        ``x [num_samples, seq_len]`` int64 in ``[0, vocab_size)``, ``y [num_samples]`` int64
        in ``{0, 1}``.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(vocab_size, (num_samples, seq_len), generator=g)
    y = (x[:, 1:] == x[:, :1]).any(dim=1).long()
    return x, y


@functools.lru_cache(maxsize=4)
def load_sequence_task(
    seed: int = 0,
    num_train: int = 4000,
    num_test: int = 1000,
    seq_len: int = 12,
    vocab_size: int = 16,
) -> DataSplit:
    """Train / test split of :func:`make_sequence_dataset` (one draw, split in order)."""
    x, y = make_sequence_dataset(num_train + num_test, seq_len, vocab_size, seed)
    return DataSplit(x[:num_train], y[:num_train], x[num_train:], y[num_train:])


# ----------------------------------------------------------------------------- tables, teachers


def _standardize(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    """Both ``[N, D]`` tensors shifted and scaled by the *train* columns' mean and std (a
    constant column is only shifted), so nothing about the test set leaks into the inputs."""
    mean, std = train.mean(dim=0), train.std(dim=0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (train - mean) / std, (test - mean) / std


TABLES = ("breast_cancer", "wine", "diabetes")  # the first two classify, diabetes regresses


@functools.lru_cache(maxsize=8)
def load_tabular(name: str, seed: int = 0, test_fraction: float = 0.2) -> DataSplit:
    """One of scikit-learn's bundled tables (shipped with the package: no download).

    ``"breast_cancer"`` (569 x 30, 2 classes), ``"wine"`` (178 x 13, 3 classes) or
    ``"diabetes"`` (442 x 10, raw features, a disease-progression score). Rows are shuffled by
    ``seed`` (``torch.randperm``), the last ``test_fraction`` of them are the test set, and
    features (and the regression target) are standardised with the train set's statistics.

    Returns:
        ``DataSplit`` with ``x_* [N, D]`` float32; ``y_* [N]`` int64 class ids, or for
        ``"diabetes"`` ``y_* [N, 1]`` float32 (standardised: the train targets have mean 0
        and variance 1).
    """
    from sklearn import datasets

    loaders = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine,
               "diabetes": functools.partial(datasets.load_diabetes, scaled=False)}
    if name not in loaders:
        raise ValueError(f"unknown table {name!r}; choose from {list(TABLES)}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    bunch = loaders[name]()
    x = torch.as_tensor(bunch.data, dtype=torch.float32)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    n_train = x.shape[0] - int(round(test_fraction * x.shape[0]))
    train, test = perm[:n_train], perm[n_train:]
    x_train, x_test = _standardize(x[train], x[test])
    if name == "diabetes":
        y = torch.as_tensor(bunch.target, dtype=torch.float32)[:, None]
        y_train, y_test = _standardize(y[train], y[test])
    else:
        y = torch.as_tensor(bunch.target, dtype=torch.int64)
        y_train, y_test = y[train], y[test]
    return DataSplit(x_train, y_train, x_test, y_test)


@functools.lru_cache(maxsize=16)
def load_synthetic_classification(seed: int = 0, in_features: int = 8, num_classes: int = 3,
                                  num_train: int = 2000, num_test: int = 500) -> DataSplit:
    """A synthetic classification problem: scikit-learn's ``make_classification`` (clusters
    of points on the vertices of a hypercube in ``in_features // 2 + 1`` informative
    dimensions, the others linear combinations and noise, 1 % flipped labels), seeded by
    ``seed``; features standardised with the train rows' statistics.

    Returns:
        ``DataSplit`` with ``x_* [N, in_features]`` float32 and ``y_* [N]`` int64 class ids.
    """
    from sklearn.datasets import make_classification

    if in_features < 2 or num_classes < 2:
        raise ValueError(f"need in_features >= 2 and num_classes >= 2, got {in_features}, "
                         f"{num_classes}")
    informative = in_features // 2 + 1
    x, y = make_classification(
        n_samples=num_train + num_test, n_features=in_features, n_informative=informative,
        n_redundant=(in_features - informative) // 2, n_classes=num_classes,
        n_clusters_per_class=2 if 2 * num_classes <= 2**informative else 1, random_state=seed,
    )
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.int64)
    x_train, x_test = _standardize(x[:num_train], x[num_train:])
    return DataSplit(x_train, y[:num_train], x_test, y[num_train:])


@functools.lru_cache(maxsize=4)
def load_teacher_student(
    seed: int = 0,
    num_train: int = 4000,
    num_test: int = 1000,
    in_features: int = 16,
    teacher_hidden: tuple[int, ...] = (32, 32),
    out_features: int = 1,
    noise: float = 0.1,
) -> DataSplit:
    """Regression onto a random, fixed teacher network.

    Inputs are ``N(0, I)``; the teacher is an MLP ``in -> teacher_hidden -> out`` with tanh
    hidden units, weights ``N(0, 1 / fan_in)`` and biases ``N(0, 0.1^2)``, all drawn from a
    generator seeded by ``seed`` (no ``nn.Module``, global RNGs untouched). Its outputs are
    standardised with the train rows' statistics, then ``noise`` x ``N(0, 1)`` is added, so
    the best achievable test MSE is ``noise^2``.

    Returns:
        ``DataSplit`` with ``x_* [N, in_features]`` and ``y_* [N, out_features]`` float32
        (train first, then test, from one draw).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_train + num_test, in_features, generator=g)
    sizes = [in_features, *teacher_hidden, out_features]
    h = x
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        weight = torch.randn(fan_in, fan_out, generator=g) / math.sqrt(fan_in)
        h = h @ weight + 0.1 * torch.randn(fan_out, generator=g)
        if i < len(sizes) - 2:
            h = torch.tanh(h)
    y_train, y_test = _standardize(h[:num_train], h[num_train:])
    y = torch.cat([y_train, y_test]) + noise * torch.randn(h.shape, generator=g)
    return DataSplit(x[:num_train], y[:num_train], x[num_train:], y[num_train:])
