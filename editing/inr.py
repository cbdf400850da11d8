"""Batched SIREN implicit neural representations (INRs) of greyscale images.

A SIREN maps a pixel coordinate ``(row, col)`` in ``[-1, 1]^2`` to an intensity::

    h_0 = coords                                   [P, 2]
    h_l = sin(w0 * (h_{l-1} W_l^T + b_l))          for every layer but the last
    out = h_{L-1} W_L^T + b_L                      [P, 1]   (linear last layer)

Here many SIRENs are handled at once as *batched parameters*: a dict, in layer order, with
``nn.Linear`` layout plus a leading batch dimension, e.g. for the 2 -> 32 -> 32 -> 1 SIREN::

    "layers.0.weight" [B, 32, 2]    "layers.0.bias" [B, 32]
    "layers.1.weight" [B, 32, 32]   "layers.1.bias" [B, 32]
    "layers.2.weight" [B, 1, 32]    "layers.2.bias" [B, 1]

The names match :class:`SIREN` (``self.layers = nn.ModuleList([nn.Linear, ...])``), so row
``i`` loads into such a module with :func:`load_siren` / ``module.load_state_dict``. The
module, its initialisation bound, the coordinate grid and the seed mixing are the ones of
:mod:`tasks` (``tasks.SIREN``, ``tasks.architectures.siren_weight_bound``,
``tasks.data.coordinate_grid``, ``tasks.base.item_seed``), re-exported here.

Fitting (:func:`fit_inrs`) uses one ``torch.optim.Adam`` over the stacked parameters with the
loss ``sum_b mean_pixels (f_b(x) - y_b)^2``. Adam is elementwise and INR ``b``'s parameters
only receive the gradient of its own loss, so this is exactly independent per-INR Adam, but
the forward / backward are a handful of batched matmuls. Each INR is initialised from its own
generator seeded by ``(seed, index)``, so the result does not depend on the chunking.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from einops import rearrange
from torch import Tensor
from tqdm.auto import tqdm

from graphs import params as P
from graphs.params import Params
from tasks.architectures import SIREN as TasksSIREN
from tasks.architectures import siren_weight_bound
from tasks.base import item_seed
from tasks.data import coordinate_grid

__all__ = [
    "DEFAULT_W0",
    "DEFAULT_WIDTHS",
    "SIREN",
    "fit_inrs",
    "init_siren_params",
    "load_siren",
    "make_coords",
    "param_shapes",
    "psnr",
    "render",
    "siren_forward",
]

DEFAULT_WIDTHS: tuple[int, ...] = (2, 32, 32, 1)
"""Layer widths of the digits-INR SIREN: 2 -> 32 -> 32 -> 1 (1,185 parameters)."""
DEFAULT_W0: float = 30.0
"""SIREN frequency factor used in the first and hidden layers."""

_LAYER_KEY = re.compile(r"^(?P<prefix>.*?)(?P<idx>\d+)\.(?P<kind>weight|bias)$")


# ----------------------------------------------------------------------------- helpers


def param_shapes(widths: Sequence[int] = DEFAULT_WIDTHS) -> dict[str, tuple[int, ...]]:
    """Per-INR parameter shapes (no batch dim), in layer order, for a SIREN with ``widths``.

    >>> param_shapes((2, 32, 1))["layers.0.weight"]
    (32, 2)
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        shapes[f"layers.{i}.weight"] = (fan_out, fan_in)
        shapes[f"layers.{i}.bias"] = (fan_out,)
    return shapes


make_coords = coordinate_grid
"""Pixel coordinates of an ``(H, W)`` image, ``[H * W, 2]`` row-major with columns
``(row, col)`` in ``[-1, 1]``: :func:`tasks.data.coordinate_grid` under its editing name."""


def _layers(params: Mapping[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
    """``[(weight [B, out, in], bias [B, out]), ...]`` in layer order.

    Keys of the form ``<prefix><i>.weight`` / ``<prefix><i>.bias`` are ordered by ``i``;
    otherwise the dict's own order is used (alternating weight, bias).
    """
    keys = list(params)
    matches = [_LAYER_KEY.match(k) for k in keys]
    if all(m is not None for m in matches):
        by_idx: dict[int, dict[str, Tensor]] = {}
        for k, m in zip(keys, matches, strict=True):
            assert m is not None
            by_idx.setdefault(int(m["idx"]), {})[m["kind"]] = params[k]
        missing = sorted(set(range(max(by_idx) + 1)) - set(by_idx)) if by_idx else []
        if missing:
            raise ValueError(f"layers {missing} are missing: layer indices must run 0.."
                             f"{max(by_idx)} without gaps; got keys {keys}")
        try:
            layers = [(by_idx[i]["weight"], by_idx[i]["bias"]) for i in sorted(by_idx)]
        except KeyError as err:
            raise ValueError(f"every layer needs a weight and a bias; got keys {keys}") from err
        names = [f"layer {i}" for i in sorted(by_idx)]
    elif len(keys) % 2:
        raise ValueError(f"expected alternating weight/bias entries; got keys {keys}")
    else:
        layers = [(params[keys[i]], params[keys[i + 1]]) for i in range(0, len(keys), 2)]
        names = keys[::2]
    _check_layers(layers, names)
    return layers


def _check_layers(layers: Sequence[tuple[Tensor, Tensor]], names: Sequence[str]) -> None:
    """Batched ``[B, out, in]`` / ``[B, out]`` layers that chain, on one batch size and dtype;
    the error names the layer and the shapes."""
    if not layers:
        raise ValueError("a SIREN needs at least one layer")
    batch = layers[0][0].shape[0] if layers[0][0].dim() == 3 else None
    fan_in = None
    for name, (weight, bias) in zip(names, layers, strict=True):
        if weight.dim() != 3 or bias.dim() != 2:
            raise ValueError(
                f"{name}: expected batched weight [B, out, in] and bias [B, out], got "
                f"{tuple(weight.shape)} and {tuple(bias.shape)} (one INR: add the batch dim, "
                "e.g. {k: v[None] for k, v in params.items()})")
        b, out, inp = weight.shape
        if b != batch or tuple(bias.shape) != (batch, out) or (fan_in is not None and
                                                               inp != fan_in):
            raise ValueError(
                f"{name}: weight {tuple(weight.shape)} and bias {tuple(bias.shape)} do not fit "
                f"a batch of {batch} INRs whose previous layer has {fan_in} outputs")
        if weight.dtype != layers[0][0].dtype or bias.dtype != weight.dtype:
            raise ValueError(f"{name}: dtype {weight.dtype} / {bias.dtype}; every tensor "
                             f"must be {layers[0][0].dtype}")
        fan_in = out


def siren_forward(
    layers: Sequence[tuple[Tensor, Tensor]], coords: Tensor, w0: float = DEFAULT_W0
) -> Tensor:
    """Evaluate ``B`` SIRENs at shared coordinates.

    Args:
        layers: ``[(weight [B, out, in], bias [B, out]), ...]`` in layer order.
        coords: ``[P, in_0]`` shared by all INRs, or ``[B, P, in_0]`` per INR.
        w0: frequency factor of every layer but the last (which is linear).

    Returns:
        ``[B, P, out_last]``.
    """
    if not layers:
        raise ValueError("a SIREN needs at least one layer")
    batch = layers[0][0].shape[0]
    h = coords if coords.dim() == 3 else coords.expand(batch, *coords.shape)
    last = len(layers) - 1
    for i, (weight, bias) in enumerate(layers):
        # [B, P, out] = bias[B, 1, out] + h[B, P, in] @ weight^T[B, in, out]
        z = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
        h = z if i == last else torch.sin(w0 * z)
    return h


def render(params: Mapping[str, Tensor], size: tuple[int, int], w0: float = DEFAULT_W0) -> Tensor:
    """Render batched SIREN parameters to images (differentiable w.r.t. ``params``).

    Args:
        params: batched parameters in layer order (see module docstring); any depth.
            ``"layers.0.weight" [B, h1, 2]``, ..., the last layer must have 1 output. One
            INR without the batch dim is accepted too.
        size: ``(H, W)`` of the rendered images.
        w0: SIREN frequency factor (first and hidden layers).

    Returns:
        ``[B, H, W]`` (not clamped); ``[H, W]`` for one unbatched INR.

    Raises:
        ValueError: a layer is missing, unbatched or mis-shaped (the message names it).
    """
    if params and all(v.dim() == 1 + k.endswith("weight") for k, v in params.items()):
        return render({k: v[None] for k, v in params.items()}, size, w0)[0]  # one INR
    layers = _layers(params)
    if layers[0][0].shape[-1] != 2:
        raise ValueError(f"the first layer must read 2 coordinates, its weight is "
                         f"{tuple(layers[0][0].shape)}")
    weight0 = layers[0][0]
    coords = coordinate_grid(size, device=weight0.device, dtype=weight0.dtype)
    out = siren_forward(layers, coords, w0)
    if out.shape[-1] != 1:
        raise ValueError(f"last layer must have 1 output channel, got {out.shape[-1]}")
    return rearrange(out, "b (h w) 1 -> b h w", h=size[0], w=size[1])


def psnr(pred: Tensor, target: Tensor, eps: float = 1e-12) -> Tensor:
    """Peak signal-to-noise ratio per image for data range 1.

    Args:
        pred: ``[B, ...]``.
        target: ``[B, ...]`` (same shape).
        eps: lower bound on the MSE, so an exact reconstruction gives a finite 120 dB.

    Returns:
        ``[B]`` in dB: ``10 log10(1 / mse_b)``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(pred.shape)} vs {tuple(target.shape)}")
    mse = (pred - target).pow(2).flatten(1).mean(1)
    return -10.0 * torch.log10(mse.clamp_min(eps))


# ----------------------------------------------------------------------------- nn.Module view


class SIREN(TasksSIREN):
    """:class:`tasks.SIREN` built from its layer widths: ``SIREN(widths, w0)``.

    The same module (initialisation, forward, ``layers.{i}.weight`` / ``layers.{i}.bias``
    names: the batched-params names without the batch dim); only the constructor reads the
    widths first, as this package's INRs are described by them.

    Args:
        widths: layer widths, e.g. ``(2, 32, 32, 1)``.
        w0: frequency factor of every layer but the last (linear).
    """

    def __init__(self, widths: Sequence[int] = DEFAULT_WIDTHS, w0: float = DEFAULT_W0) -> None:
        super().__init__(widths=widths, w0=w0)


def load_siren(params: Mapping[str, Tensor], index: int = 0, w0: float = DEFAULT_W0) -> SIREN:
    """Build a :class:`SIREN` holding row ``index`` of batched ``params`` ("layers.{i}.*" keys)."""
    layers = _layers(params)
    widths = [layers[0][0].shape[2]] + [w.shape[1] for w, _ in layers]
    module = SIREN(widths, w0).to(device=layers[0][0].device, dtype=layers[0][0].dtype)
    module.load_state_dict(P.detach(P.member(params, index)))
    return module


# ----------------------------------------------------------------------------- init + fitting


def init_siren_params(
    indices: Sequence[int] | Tensor,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    w0: float = DEFAULT_W0,
    seed: int = 0,
) -> Params:
    """Original SIREN initialisation for a batch of INRs, one generator per INR.

    INR ``indices[b]`` draws all its ``n_params`` uniforms in one call from a CPU generator
    seeded by ``(seed, indices[b])``; the draws are then scaled per tensor in one vectorized
    step. So an INR's init depends only on ``(seed, index)``, never on batch composition.

    Weights: ``U(-1/in, 1/in)`` in the first layer, ``U(-sqrt(6/in)/w0, sqrt(6/in)/w0)`` after;
    biases: ``U(-1/sqrt(in), 1/sqrt(in))`` (``nn.Linear``'s default).

    Returns:
        batched params on CPU, float32: ``{"layers.{i}.weight": [B, out, in], ...}``.
    """
    idx = [int(i) for i in (indices.tolist() if isinstance(indices, Tensor) else indices)]
    shapes = param_shapes(widths)
    numels = [math.prod(s) for s in shapes.values()]
    bounds: list[float] = []
    for name in shapes:
        layer = int(name.split(".")[1])
        fan_in = widths[layer]
        bound = siren_weight_bound(layer, fan_in, w0) if name.endswith("weight") else fan_in**-0.5
        bounds.append(bound)
    scale = torch.cat([torch.full((n,), b) for n, b in zip(numels, bounds, strict=True)])
    u = torch.empty(len(idx), sum(numels))
    gen = torch.Generator()
    for row, i in enumerate(idx):
        gen.manual_seed(item_seed(seed, i))
        torch.rand(sum(numels), generator=gen, out=u[row])
    flat = (2.0 * u - 1.0) * scale  # [B, n_params] in [-bound, bound]
    chunks = flat.split(numels, dim=1)
    return {
        name: c.reshape(len(idx), *shape)
        for (name, shape), c in zip(shapes.items(), chunks, strict=True)
    }


class _SirenFitter:
    """Manual forward + backward for ``B`` SIRENs on one shared coordinate grid.

    Autograd would allocate fresh ``[B, width, P]`` tensors for every op of every step; on a
    CPU that allocation traffic dominates. Here all activations live in preallocated buffers
    and the gradients are written by hand (checked against autograd and ``nn.Module`` in the
    tests). With ``u_l = w0 (W_l h_{l-1} + b_l)`` and ``h_l = sin(u_l)``:
    ``dL/du_l = dL/dh_l * cos(u_l)``, ``dL/dW_l = w0 dL/du_l h_{l-1}^T``,
    ``dL/db_l = w0 sum_p dL/du_l``, ``dL/dh_{l-1} = w0 W_l^T dL/du_l``.

    Layout is channels-first: activations are ``[B, width, P]``.

    Args:
        layers: ``[(weight [B, out, in], bias [B, out]), ...]`` leaf tensors (grads are set).
        coords: ``[P, in_0]``.
        target: ``[B, P]``.
        w0: SIREN frequency factor.
    """

    def __init__(
        self, layers: Sequence[tuple[Tensor, Tensor]], coords: Tensor, target: Tensor, w0: float
    ) -> None:
        self.layers = list(layers)
        self.w0 = float(w0)
        batch, n_pix = target.shape
        self.target = target.unsqueeze(1)  # [B, 1, P]
        self.n_pix = n_pix
        like = dict(device=target.device, dtype=target.dtype)
        # act[l]: input of layer l ([B, in_l, P]); act[0] is the shared grid, not copied.
        self.act = [coords.t().to(**like).expand(batch, -1, -1)]
        self.act += [torch.empty(batch, w.shape[1], n_pix, **like) for w, _ in self.layers[:-1]]
        self.cos = [torch.empty_like(a) for a in self.act[1:]]  # cos(u_l) per hidden layer
        self.grad_h = [torch.empty_like(a) for a in self.act[1:]]
        self.out = torch.empty(batch, self.layers[-1][0].shape[1], n_pix, **like)

    @torch.no_grad()
    def loss_and_grads(self) -> Tensor:
        """Run forward + backward, set ``.grad`` of every weight / bias; return ``[B]`` MSEs."""
        w0, last = self.w0, len(self.layers) - 1
        for i, (weight, bias) in enumerate(self.layers[:-1]):
            u = self.cos[i]
            torch.baddbmm(bias.unsqueeze(-1), weight, self.act[i], beta=w0, alpha=w0, out=u)
            torch.sin(u, out=self.act[i + 1])
            torch.cos(u, out=u)
        weight, bias = self.layers[-1]
        resid = torch.baddbmm(bias.unsqueeze(-1), weight, self.act[-1], out=self.out)
        resid.sub_(self.target)  # [B, 1, P]
        mse = resid.pow(2).mean(dim=(1, 2))
        grad = resid.mul_(2.0 / self.n_pix)  # dL/d(out) for L = sum_b mean_p resid^2
        for i in range(last, -1, -1):
            weight, bias = self.layers[i]
            scale = 1.0 if i == last else w0
            weight.grad = torch.bmm(grad, self.act[i].transpose(1, 2)).mul_(scale)
            bias.grad = grad.sum(-1).mul_(scale)
            if i > 0:
                nxt = torch.bmm(weight.transpose(1, 2), grad, out=self.grad_h[i - 1])
                if scale != 1.0:
                    nxt.mul_(scale)
                grad = nxt.mul_(self.cos[i - 1])
        return mse


@contextmanager
def _cpu_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op CPU threads inside the block (``None``: leave as is), then restore."""
    if n is None or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_SMALL_CHUNK_ELEMENTS = 1 << 20
"""Below this many activation elements per chunk, CPU fitting runs single-threaded: the ops
are too small to gain from threads, and on a busy machine OpenMP barriers make them very slow."""


@contextmanager
def _flush_denormals(enabled: bool) -> Iterator[None]:
    """Flush CPU denormals to zero inside the block (Adam's second moments of near-zero
    gradients otherwise become denormal and slow the CPU down); restores PyTorch's default
    (off) afterwards. Values below ~1e-38 are the only ones affected."""
    if not enabled:
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def fit_inrs(
    images: Tensor,
    steps: int = 1000,
    lr: float = 1e-3,
    seed: int = 0,
    chunk_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = True,
    *,
    indices: Sequence[int] | Tensor | None = None,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    w0: float = DEFAULT_W0,
    num_threads: int | None = None,
) -> Params:
    """Fit one SIREN per image with full-batch Adam on the pixel MSE.

    Exactly equivalent to fitting each image alone with ``torch.optim.Adam(lr)`` on
    ``mean((f(x) - y)^2)`` (up to float rounding): one Adam runs over the stacked parameters
    of a chunk, the loss is the *sum* of per-INR mean MSEs, and Adam is elementwise.
    Gradients are computed by a hand-written batched backward (see :class:`_SirenFitter`).

    Args:
        images: ``[B, H, W]`` targets in ``[0, 1]``.
        steps: Adam steps per INR.
        lr: Adam learning rate.
        seed: global init seed; INR ``b`` is initialised from ``(seed, indices[b])``.
        chunk_size: INRs optimised together (bounds memory; does not change the result).
        device: where to fit (default: ``images.device``). Results are returned on CPU.
        progress: show a tqdm bar over all steps of all chunks.
        indices: global ids of the images, used for seeding (default ``arange(B)``); pass
            dataset indices so that a subset gets the same INRs as the full dataset.
        widths: SIREN widths; ``widths[0]`` must be 2 and ``widths[-1]`` 1.
        w0: SIREN frequency factor.
        num_threads: CPU intra-op threads while fitting (restored afterwards). Default: 1 for
            small chunks (< 2^20 activation elements), otherwise unchanged.

    Returns:
        batched params on CPU, float32, in layer order: ``"layers.0.weight" [B, 32, 2]``,
        ``"layers.0.bias" [B, 32]``, ..., ``"layers.2.weight" [B, 1, 32]``,
        ``"layers.2.bias" [B, 1]`` (for the default widths).
    """
    if images.dim() != 3:
        raise ValueError(f"images must be [B, H, W], got {tuple(images.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    finite = torch.isfinite(images.reshape(len(images), -1)).all(1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"images {bad[:10]}{' ...' if len(bad) > 10 else ''} hold NaN or "
                         "infinite pixels: a SIREN cannot be fitted to them")
    if widths[0] != 2 or widths[-1] != 1:
        raise ValueError(f"widths must start with 2 and end with 1, got {tuple(widths)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    n, h, w = images.shape
    idx = torch.arange(n) if indices is None else torch.as_tensor(indices).reshape(-1)
    if idx.numel() != n:
        raise ValueError(f"got {idx.numel()} indices for {n} images")
    dev = torch.device(device) if device is not None else images.device
    coords = coordinate_grid((h, w), device=dev)
    out: dict[str, list[Tensor]] = {k: [] for k in param_shapes(widths)}
    bar = tqdm(total=n * steps, desc="fit INRs", unit="inr-step", disable=not progress)
    if num_threads is None and dev.type == "cpu":
        work = min(n, chunk_size) * h * w * max(widths)
        num_threads = 1 if work < _SMALL_CHUNK_ELEMENTS else None
    with _flush_denormals(dev.type == "cpu"), _cpu_threads(num_threads):
        _fit_chunks(images, idx, coords, out, bar, steps, lr, seed, chunk_size, widths, w0)
    bar.close()
    return {k: torch.cat(v) for k, v in out.items()}


def _fit_chunks(
    images: Tensor,
    idx: Tensor,
    coords: Tensor,
    out: dict[str, list[Tensor]],
    bar: tqdm,
    steps: int,
    lr: float,
    seed: int,
    chunk_size: int,
    widths: Sequence[int],
    w0: float,
) -> None:
    """Fit ``images [n, H, W]`` chunk by chunk, appending CPU params per chunk to ``out``."""
    n, h, w = images.shape
    dev = coords.device
    for start in range(0, n, chunk_size):
        chunk = images[start : start + chunk_size].to(dev, torch.float32)
        target = rearrange(chunk, "b h w -> b (h w)")
        init = init_siren_params(idx[start : start + chunk_size], widths, w0, seed)
        params = P.map_tensors(lambda v: v.to(dev).requires_grad_(True), init)
        fitter = _SirenFitter(_layers(params), coords, target, w0)
        opt = torch.optim.Adam(list(params.values()), lr=lr)
        for step in range(steps):
            mse = fitter.loss_and_grads()
            opt.step()
            bar.update(target.shape[0])
            if not bar.disable and (step % 100 == 0 or step == steps - 1):
                bar.set_postfix(psnr=f"{(-10 * torch.log10(mse.clamp_min(1e-12))).mean():.1f}")
        for k, v in P.to(P.detach(params), "cpu").items():
            out[k].append(v)


def _benchmark(n: int = 256, steps: int = 50) -> None:  # pragma: no cover - manual helper
    """Time ``steps`` fitting steps of ``n`` random images (manual speed check)."""
    images = torch.rand(n, 28, 28)
    t0 = time.perf_counter()
    fit_inrs(images, steps=steps, chunk_size=n, progress=False)
    dt = time.perf_counter() - t0
    print(f"{n} INRs x {steps} steps: {dt:.2f}s -> {dt / steps * 1000:.1f} ms/step")
