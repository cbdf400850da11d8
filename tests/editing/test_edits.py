"""Image-space edit definitions (editing.edits)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from editing import EDITS
from editing.edits import blur, dilate, erode, gaussian_kernel, invert, sharpen, sharpen_kernel


def _point(size: int = 7, r: int = 3, c: int = 3) -> torch.Tensor:
    x = torch.zeros(1, size, size)
    x[0, r, c] = 1.0
    return x


def test_registry_names() -> None:
    assert set(EDITS) == {"dilate", "erode", "blur", "sharpen", "contrast", "invert"}


def test_dilate_point_becomes_3x3_block_and_clips_at_border() -> None:
    out = dilate(_point())
    expected = torch.zeros(1, 7, 7)
    expected[0, 2:5, 2:5] = 1.0
    torch.testing.assert_close(out, expected)
    corner = dilate(_point(r=0, c=0))
    assert corner.sum() == 4 and corner[0, :2, :2].eq(1).all()


def test_erode_block_keeps_centre_and_border_not_eroded_by_padding() -> None:
    x = torch.zeros(1, 7, 7)
    x[0, 2:5, 2:5] = 1.0
    torch.testing.assert_close(erode(x), _point())
    ones = torch.ones(2, 5, 6)
    torch.testing.assert_close(erode(ones), ones)  # outside pixels are ignored
    torch.testing.assert_close(erode(dilate(_point())), _point())


def test_blur_kernel_and_interior_mass() -> None:
    k = gaussian_kernel(1.0)
    assert k.shape == (3, 3)
    assert abs(k.sum().item() - 1.0) < 1e-6
    assert k[1, 1] == k.max() and torch.allclose(k, k.t()) and torch.allclose(k, k.flip(0))
    out = blur(_point())
    assert abs(out.sum().item() - 1.0) < 1e-6  # point away from the border keeps its mass
    torch.testing.assert_close(out[0, 2:5, 2:5], k)
    const = torch.full((1, 6, 6), 0.5)
    torch.testing.assert_close(blur(const)[0, 1:-1, 1:-1], const[0, 1:-1, 1:-1])
    assert blur(const)[0, 0, 0] < 0.5  # zero padding darkens the border


def test_sharpen_kernel_and_behaviour() -> None:
    k = sharpen_kernel()
    assert k[1, 1] == 3.0 and (k.flatten()[[0, 1, 2, 3, 5, 6, 7, 8]] == -0.25).all()
    const = torch.full((1, 6, 6), 0.4)
    torch.testing.assert_close(sharpen(const)[0, 1:-1, 1:-1], const[0, 1:-1, 1:-1])
    out = sharpen(_point())
    assert out[0, 3, 3] == 1.0  # 3.0 clamped
    assert out[0, 2, 3] == 0.0  # -0.25 clamped


def test_contrast_and_invert() -> None:
    x = torch.tensor([[[0.0, 0.2, 0.5, 0.6, 0.9]]])
    torch.testing.assert_close(EDITS["contrast"](x), torch.tensor([[[0.0, 0.0, 0.5, 0.7, 1.0]]]))
    torch.testing.assert_close(invert(x), 1 - x)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(3, 9), st.integers(3, 9), st.integers(0, 2**31 - 1))
def test_edits_shape_range_and_ordering(b: int, h: int, w: int, seed: int) -> None:
    x = torch.rand(b, h, w, generator=torch.Generator().manual_seed(seed))
    for name, edit in EDITS.items():
        y = edit(x)
        assert y.shape == x.shape, name
        assert y.min() >= -1e-6 and y.max() <= 1 + 1e-6, name
    assert (erode(x) <= x).all() and (x <= dilate(x)).all()
    torch.testing.assert_close(invert(invert(x)), x)
    assert EDITS["dilate"](x[0]).shape == (h, w)  # unbatched [H, W] also works
