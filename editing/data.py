"""The "digits-INR" benchmark: one SIREN per scikit-learn 8x8 digit, fitted once and cached.

Protocol (fixed so results compare across methods):

* images: ``sklearn.datasets.load_digits`` / 16, bilinearly upsampled (``align_corners=False``)
  to 28x28 -> ``[1797, 28, 28]`` float32 in ``[0, 1]`` (:func:`tasks.data.load_digits_images`);
* split: ``torch.randperm(1797, generator=Generator().manual_seed(0))``
  (:func:`tasks.data.digits_permutation`), first 1400 ``train`` (the train set of
  ``tasks.data.load_digits_split(0)``), next 200 ``val``, last 197 ``test``;
* INRs: SIREN 2 -> 32 -> 32 -> 1, ``w0 = 30``, original init seeded per image index, Adam
  lr 1e-3, 1000 full-batch steps on the pixel MSE (:func:`editing.inr.fit_inrs`).

With ``moved = k > 0`` (:class:`DigitsINRConfig`) every image is first rotated by
U(-15, 15) degrees and shifted by an integer in [-2, 2] pixels per axis, drawn from the seed
``(k, dataset index)`` (:func:`moved_images`): extra training data for editors that must work
on digits that are not upright and centred (``python -m editing.train --moved-copies``).

Fitted parameters are cached as safetensors (+ a JSON sidecar with the config, fitting time
and PSNRs) under ``$GMN_CACHE`` (default ``~/.cache/graph_metanetworks``,
:func:`tasks.data.cache_dir`), in a file named by a hash of the config, so every configuration
is fitted once. Files are written atomically and validated on read: a damaged cache file is a
:class:`common.persistence.PersistenceError` naming it (delete it to refit). Build the full
dataset with ``python -m editing.build_inrs``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from common.persistence import (
    PersistenceError,
    json_bytes,
    load_tensors,
    read_json,
    tensor_bytes,
    write_bytes,
)
from editing.inr import DEFAULT_W0, DEFAULT_WIDTHS, Params, fit_inrs, param_shapes, psnr, render
from graphs import params as P
from tasks.data import DIGITS_NUM, cache_dir, digits_permutation, load_digits_images

__all__ = [
    "NUM_DIGITS",
    "SPLITS",
    "SPLIT_SIZES",
    "DigitsINRConfig",
    "build_digits_inrs",
    "cache_dir",
    "cache_paths",
    "digits_images",
    "load_digits_inrs",
    "move_image",
    "moved_images",
    "read_cache",
]

NUM_DIGITS = DIGITS_NUM
SPLIT_SIZES: dict[str, int] = {"train": 1400, "val": 200, "test": 197}
SPLITS: tuple[str, ...] = ("all", "train", "val", "test")
"""Valid split names; ``"all"`` is every image in dataset (sklearn) order."""
_CACHE_VERSION = 1


@functools.lru_cache(maxsize=4)
def _digits_images(size: int) -> tuple[Tensor, dict[str, Tensor]]:
    perm = digits_permutation(0)
    n_tr, n_va = SPLIT_SIZES["train"], SPLIT_SIZES["val"]
    splits = {
        "all": torch.arange(NUM_DIGITS),
        "train": perm[:n_tr],
        "val": perm[n_tr : n_tr + n_va],
        "test": perm[n_tr + n_va :],
    }
    return load_digits_images(size), splits


def digits_images(size: int = 28) -> tuple[Tensor, dict[str, Tensor]]:
    """The digits-INR images and split indices.

    Args:
        size: output side length (28 for the benchmark).

    Returns:
        ``(images, splits)``: ``images [1797, size, size]`` float32 in ``[0, 1]`` (sklearn
        order) and ``splits`` mapping ``"train" [1400]``, ``"val" [200]``, ``"test" [197]``
        and ``"all" [1797]`` to int64 indices into ``images``. Fresh copies on every call.
    """
    images, splits = _digits_images(size)
    return images.clone(), {k: v.clone() for k, v in splits.items()}


def move_image(image: np.ndarray, angle: float, shift: Sequence[int]) -> np.ndarray:
    """``image [H, W]`` rotated by ``angle`` degrees about its centre, then shifted by
    ``shift`` pixels (rows, columns); bilinear, the same size, clipped to [0, 1]."""
    from scipy import ndimage  # scikit-learn's own dependency

    turned = ndimage.rotate(image, angle, reshape=False, order=1)
    return np.clip(ndimage.shift(turned, shift, order=1), 0, 1)


def moved_images(images: Tensor, indices: Tensor, seed: int) -> Tensor:
    """Each ``images[b]`` moved by :func:`move_image` with an angle U(-15, 15) and a shift in
    [-2, 2]^2 drawn from the seed ``(seed, indices[b])``: an image moves the same way in
    every subset that holds it. Returns a new tensor of ``images``' dtype."""
    moved = []
    for image, i in zip(images.double().numpy(), indices.tolist(), strict=True):
        rng = np.random.default_rng([seed, int(i)])
        moved.append(move_image(image, rng.uniform(-15, 15), rng.integers(-2, 3, size=2)))
    return torch.from_numpy(np.stack(moved)).to(images.dtype)


@dataclass(frozen=True)
class DigitsINRConfig:
    """Everything that determines a cached digits-INR file (its hash names the file).

    Attributes:
        steps: Adam steps per INR.
        lr: Adam learning rate.
        seed: init seed (INR ``i`` is seeded by ``(seed, i)``, ``i`` the dataset index).
        size: image side length.
        w0: SIREN frequency factor.
        widths: SIREN layer widths.
        split: which images: ``"all"`` (full dataset), ``"train"``, ``"val"`` or ``"test"``.
        limit: keep only the first ``limit`` images of ``split`` (``None``: all of them).
        moved: 0 (the benchmark) or the seed ``k > 0`` of a rotation and shift of every
            image before fitting (:func:`moved_images`).
    """

    steps: int = 1000
    lr: float = 1e-3
    seed: int = 0
    size: int = 28
    w0: float = DEFAULT_W0
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    split: str = "all"
    limit: int | None = None
    moved: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.moved, bool) or not isinstance(self.moved, int) or self.moved < 0:
            raise ValueError(f"moved must be an integer >= 0, got {self.moved!r}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be positive or None, got {self.limit}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    @property
    def is_full(self) -> bool:
        """Whether this config covers the whole dataset (``split="all"``, no limit)."""
        return self.split == "all" and self.limit is None

    def full(self) -> DigitsINRConfig:
        """The same fitting config over the whole dataset."""
        return dataclasses.replace(self, split="all", limit=None)

    def indices(self) -> Tensor:
        """Dataset indices covered by this config, ``[n]`` int64."""
        return _digits_images(self.size)[1][self.split][: self.limit]

    def images(self, indices: Tensor) -> Tensor:
        """The images this config fits for dataset ``indices`` (moved when ``moved``)."""
        images = _digits_images(self.size)[0][indices].clone()
        return moved_images(images, indices, self.moved) if self.moved else images

    def to_dict(self) -> dict[str, object]:
        """JSON-able dict, including ``n_images`` and the cache format version."""
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        if not self.moved:  # (the benchmark's files keep the keys they had before moved)
            del d["moved"]
        d["n_images"] = int(self.indices().numel())
        d["dataset"] = "digits-INR"
        d["version"] = _CACHE_VERSION
        return d

    def key(self) -> str:
        """16-hex-digit hash of :meth:`to_dict` (stable across runs and machines)."""
        blob = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_paths(config: DigitsINRConfig, root: Path | str | None = None) -> tuple[Path, Path]:
    """``(weights.safetensors, info.json)`` paths of ``config`` under ``root`` (default cache)."""
    base = Path(root) if root is not None else cache_dir()
    stem = f"digits_inr_{config.key()}"
    return base / f"{stem}.safetensors", base / f"{stem}.json"


def read_cache(
    config: DigitsINRConfig, root: Path | str | None = None
) -> tuple[Params, Tensor, dict[str, object]] | None:
    """Load a cached build: ``(params, indices [n], info)``, or ``None`` if not cached.

    Raises:
        PersistenceError: the cached file (named in the message) is unreadable, holds
            non-finite values, or lacks a tensor / has a shape ``config`` does not give.
    """
    weights, info_path = cache_paths(config, root)
    if not weights.exists():
        return None
    try:
        tensors = load_tensors(weights)
        info = read_json(info_path, what="digits-INR cache info") if info_path.exists() else {}
    except PersistenceError as err:
        raise PersistenceError(f"{err} (a damaged cache file: delete it to refit)") from None
    shapes = {"indices": (), "psnr": (), **param_shapes(config.widths)}
    for name in shapes:
        if name not in tensors:
            raise PersistenceError(f"{weights}: tensor {name!r} is missing; delete it to refit")
    n = tensors["indices"].shape[0]
    for name, per_inr in shapes.items():
        shape = (n, *per_inr)
        if tuple(tensors[name].shape) != shape:
            raise PersistenceError(
                f"{weights}: tensor {name!r} has shape {tuple(tensors[name].shape)}, expected "
                f"{shape} for SIREN widths {config.widths}; delete it to refit"
            )
    params = {k: tensors[k] for k in param_shapes(config.widths)}  # layer order
    return params, tensors["indices"], info


def build_digits_inrs(
    config: DigitsINRConfig | None = None,
    *,
    root: Path | str | None = None,
    chunk_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = True,
    force: bool = False,
    num_threads: int | None = None,
) -> Path:
    """Fit and cache the INRs of ``config`` (skipped if cached, unless ``force``).

    The safetensors file holds the batched params (``"layers.{i}.weight" [n, out, in]``, ...),
    ``"indices" [n]`` (dataset indices) and ``"psnr" [n]``; the JSON sidecar holds the config,
    its key, ``fit_seconds``, ``mean_psnr``, per-split mean PSNRs and the environment.
    ``chunk_size``, ``device``, ``progress`` and ``num_threads`` go to :func:`fit_inrs`.

    Returns:
        path of the safetensors file.
    """
    config = config or DigitsINRConfig()
    weights, info_path = cache_paths(config, root)
    if weights.exists() and not force:
        return weights
    splits = _digits_images(config.size)[1]
    idx = config.indices()
    target = config.images(idx)
    t0 = time.perf_counter()
    params = fit_inrs(
        target,
        steps=config.steps,
        lr=config.lr,
        seed=config.seed,
        chunk_size=chunk_size,
        device=device,
        progress=progress,
        indices=idx,
        widths=config.widths,
        w0=config.w0,
        num_threads=num_threads,
    )
    fit_seconds = time.perf_counter() - t0
    with torch.no_grad():
        recon = torch.cat([
            render(P.member(params, slice(s, s + 1024)), target.shape[1:], config.w0)
            for s in range(0, len(idx), 1024)
        ])
    scores = psnr(recon, target)
    split_of = {int(i): name for name in ("train", "val", "test") for i in splits[name]}
    per_split: dict[str, float] = {}
    for name in ("train", "val", "test"):
        mask = torch.tensor([split_of[int(i)] == name for i in idx], dtype=torch.bool)
        if mask.any():
            per_split[name] = float(scores[mask].mean())
    info = {
        "config": config.to_dict(),
        "key": config.key(),
        "fit_seconds": round(fit_seconds, 2),
        "mean_psnr": float(scores.mean()),
        "min_psnr": float(scores.min()),
        "mean_psnr_by_split": per_split,
        "chunk_size": chunk_size,
        "device": str(device or "cpu"),
        "torch": torch.__version__,
        "threads": num_threads or torch.get_num_threads(),
        "machine": platform.machine(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tensors = {**params, "indices": idx.to(torch.int64), "psnr": scores.float()}
    meta = {"config": json.dumps(config.to_dict(), sort_keys=True)}
    # the info first: a reader that finds the weights finds their info too
    write_bytes(info_path, json_bytes(info))
    write_bytes(weights, tensor_bytes(tensors, meta))
    if progress:
        print(
            f"fitted {len(idx)} INRs in {fit_seconds:.1f}s, mean PSNR {info['mean_psnr']:.2f} dB"
            f" -> {weights}"
        )
    return weights


def load_digits_inrs(
    split: str = "train",
    limit: int | None = None,
    *,
    config: DigitsINRConfig | None = None,
    root: Path | str | None = None,
    build: bool = True,
    chunk_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tuple[Params, Tensor]:
    """Fitted digits-INR params and their images for one split, fitting them if not cached.

    Lookup order: (1) the full-dataset cache of ``config`` (sliced to the split / limit);
    (2) for ``limit`` set, a subset cache with its own key; (3) otherwise fit and cache —
    the full dataset when ``limit`` is None (several minutes on a CPU), only the subset
    when ``limit`` is set. INRs are seeded per dataset index, so a subset's INRs equal the
    corresponding rows of the full build (up to float rounding).

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        limit: only the first ``limit`` images of the split (quick tests / notebooks).
        config: fitting protocol (default: the benchmark's); its split/limit are ignored.
        root: cache directory (default :func:`cache_dir`).
        build: fit when missing; if False, raise ``FileNotFoundError`` instead.
        chunk_size, device, progress: passed to :func:`fit_inrs` when fitting.

    Returns:
        ``(params, images)``: batched params in layer order (``"layers.0.weight" [n, 32, 2]``,
        ..., ``"layers.2.bias" [n, 1]``) and the target images ``[n, size, size]``.
    """
    base = (config or DigitsINRConfig()).full()
    wanted = dataclasses.replace(base, split=split, limit=limit)  # validates split / limit
    idx = wanted.indices()
    images = base.images(idx)
    kwargs = dict(root=root, chunk_size=chunk_size, device=device, progress=progress)

    source = base
    cached = read_cache(base, root)
    if cached is None and limit is not None:
        source = wanted
        cached = read_cache(wanted, root)
        if cached is None and build:
            build_digits_inrs(wanted, **kwargs)  # type: ignore[arg-type]
            cached = read_cache(wanted, root)
    if cached is None:
        if not build:
            raise FileNotFoundError(
                f"no cached digits-INR build at {cache_paths(base, root)[0]}; "
                "run `python -m editing.build_inrs`"
            )
        source = base
        build_digits_inrs(base, **kwargs)  # type: ignore[arg-type]
        cached = read_cache(base, root)
    assert cached is not None
    params, stored, _ = cached
    row_of = {int(i): r for r, i in enumerate(stored)}
    missing = [int(i) for i in idx if int(i) not in row_of]
    if missing:
        raise PersistenceError(
            f"{cache_paths(source, root)[0]} lacks images {missing[:5]} of split {split!r}; "
            "delete it to refit"
        )
    rows = torch.tensor([row_of[int(i)] for i in idx], dtype=torch.int64)
    return P.member(params, rows), images
