"""Image-space definitions of the weight-space edits.

Every edit maps images ``[B, H, W]`` with values in ``[0, 1]`` to ``[B, H, W]`` in ``[0, 1]``
(any number of leading dims is accepted: ``[..., H, W]``). They are the *targets* an editor
must reproduce in weight space: ``render(editor(params)) ~= EDITS[name](render(params))``.

=========  ================================================================================
dilate     3x3 greyscale dilation: max filter, stride 1, "same" size; pixels outside the
           image are ignored (``max_pool2d`` pads with ``-inf``).
erode      3x3 greyscale erosion: min filter, ``-max_pool2d(-x)``; pixels outside the image
           are ignored, so the border is not eroded by artificial zeros.
blur       3x3 Gaussian, sigma 1, normalised to sum 1, zero padding (border pixels darken).
sharpen    3x3 kernel with centre 3 and the 8 neighbours -0.25 (sums to 1, i.e. ``x + 2 *
           (x - mean of neighbours)``), zero padding, then clamped to ``[0, 1]``.
contrast   linear contrast stretch by 2 around 0.5: ``clamp((x - 0.5) * 2 + 0.5, 0, 1)``.
invert     ``1 - x``.
=========  ================================================================================
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "EDITS",
    "blur",
    "contrast",
    "dilate",
    "erode",
    "gaussian_kernel",
    "invert",
    "sharpen",
    "sharpen_kernel",
]


def _as_nchw(x: Tensor) -> tuple[Tensor, torch.Size]:
    """``[..., H, W]`` -> (``[N, 1, H, W]``, original shape)."""
    if x.dim() < 2:
        raise ValueError(f"expected images [..., H, W], got {tuple(x.shape)}")
    return x.reshape(-1, 1, *x.shape[-2:]), x.shape


def _conv3x3(x: Tensor, kernel: Tensor) -> Tensor:
    """Zero-padded "same" 3x3 convolution of ``[..., H, W]`` with ``kernel [3, 3]``."""
    y, shape = _as_nchw(x)
    k = kernel.to(device=x.device, dtype=x.dtype).reshape(1, 1, 3, 3)
    return F.conv2d(y, k, padding=1).reshape(shape)


def gaussian_kernel(sigma: float = 1.0) -> Tensor:
    """3x3 Gaussian kernel ``exp(-(i^2 + j^2) / (2 sigma^2))``, normalised to sum 1. ``[3, 3]``."""
    r = torch.arange(-1, 2, dtype=torch.float64)
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return (g / g.sum()).float()


def sharpen_kernel(amount: float = 2.0) -> Tensor:
    """3x3 sharpening kernel ``delta + amount * (delta - neighbour mean)``. ``[3, 3]``.

    ``amount = 2`` gives centre 3 and neighbours -0.25 (sum 1).
    """
    k = torch.full((3, 3), -amount / 8.0)
    k[1, 1] = 1.0 + amount
    return k


def dilate(x: Tensor) -> Tensor:
    """3x3 greyscale dilation (max filter, same size). ``[..., H, W]`` -> ``[..., H, W]``."""
    y, shape = _as_nchw(x)
    return F.max_pool2d(y, 3, stride=1, padding=1).reshape(shape)


def erode(x: Tensor) -> Tensor:
    """3x3 greyscale erosion (min filter; outside pixels ignored). ``[..., H, W]``."""
    return -dilate(-x)


def blur(x: Tensor) -> Tensor:
    """3x3 Gaussian blur (sigma 1, sum 1, zero padding). ``[..., H, W]``."""
    return _conv3x3(x, gaussian_kernel(1.0))


def sharpen(x: Tensor) -> Tensor:
    """Sharpen (centre 3, neighbours -0.25, zero padding), clamped to ``[0, 1]``. ``[..., H, W]``.

    Pixels next to the border see zero neighbours outside the image, so they brighten slightly.
    """
    return _conv3x3(x, sharpen_kernel(2.0)).clamp(0.0, 1.0)


def contrast(x: Tensor) -> Tensor:
    """Contrast x2 around 0.5, clamped: ``clamp((x - 0.5) * 2 + 0.5, 0, 1)``. ``[..., H, W]``."""
    return ((x - 0.5) * 2.0 + 0.5).clamp(0.0, 1.0)


def invert(x: Tensor) -> Tensor:
    """Photometric inversion ``1 - x``. ``[..., H, W]``."""
    return 1.0 - x


EDITS: dict[str, Callable[[Tensor], Tensor]] = {
    "dilate": dilate,
    "erode": erode,
    "blur": blur,
    "sharpen": sharpen,
    "contrast": contrast,
    "invert": invert,
}
"""Edit name -> image-space function ``[B, H, W] -> [B, H, W]`` (values in ``[0, 1]``)."""
