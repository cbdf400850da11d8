"""Baseline metanetworks for the INR editor: the NP-NFN neural functional, an MLP on flattened
weights, and no edit.

Both map *normalized* batched parameters ``{"layers.{i}.weight": [B, out, in], ...}`` to
outputs of the same shapes, like :class:`editing.editor.GMNMetanet`; the :class:`Editor`
wraps them in the same residual form ``theta + gamma * s * f(theta / s)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = ["FlatMLPMetanet", "NPNFNLayer", "NPNFNMetanet", "NoEditMetanet"]


class FlatMLPMetanet(nn.Module):
    """MLP on the flattened parameter vector (not permutation-equivariant).

    ``[B, P] -> Linear(P, h) -> ReLU -> ... (depth hidden layers) -> Linear(h, P)``; the last
    layer is zero-initialised, so a fresh editor leaves the parameters unchanged.

    Args:
        shapes: per-INR parameter shapes in layer order (``{"layers.0.weight": (32, 2), ...}``).
        hidden: width of the hidden layers (default 512).
        depth: number of hidden layers (default 3).
    """

    def __init__(
        self, shapes: Mapping[str, tuple[int, ...]], hidden: int = 512, depth: int = 3
    ) -> None:
        super().__init__()
        self.shapes = dict(shapes)
        n = sum(math.prod(s) for s in self.shapes.values())
        dims = [n] + [hidden] * depth
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.head = nn.Linear(dims[-1], n)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.body = nn.Sequential(*layers)

    def forward(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Batched params (``[B, *shape]`` each) -> outputs of the same shapes."""
        batch = next(iter(params.values())).shape[0]
        flat = torch.cat([rearrange(params[k], "b ... -> b (...)") for k in self.shapes], dim=1)
        out = self.head(self.body(flat))
        pieces = out.split([math.prod(s) for s in self.shapes.values()], dim=1)
        return {
            k: p.reshape(batch, *s) for (k, s), p in zip(self.shapes.items(), pieces, strict=True)
        }


class NoEditMetanet(nn.Module):
    """Outputs zeros: the editor returns its input unchanged (the "no edit" baseline)."""

    def forward(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Batched params -> zeros of the same shapes."""
        return {k: torch.zeros_like(v) for k, v in params.items()}


class NPNFNLayer(nn.Module):
    r"""One NP layer of a neural functional (Zhou et al., *Permutation Equivariant Neural
    Functionals*, NeurIPS 2023), for the weights of an MLP / SIREN with ``n_layers`` layers.

    Every tensor is kept channel-last: weight ``i`` as ``[B, n_i, n_{i-1}, C]`` (row ``j`` =
    output neuron, column ``k`` = input neuron), bias ``i`` as ``[B, n_i, C]``. The output
    for weight entry :math:`(i, j, k)` is a linear map of

    * the entry itself;
    * quantities of its output neuron :math:`j`: the mean of its row of :math:`W^{(i)}`, the
      mean of its column of :math:`W^{(i+1)}` (the same neuron, read by the next layer) and
      its bias :math:`b^{(i)}_j`;
    * quantities of its input neuron :math:`k`: the mean of its column of :math:`W^{(i)}`,
      the mean of its row of :math:`W^{(i-1)}` and its bias :math:`b^{(i-1)}_k`;
    * the mean of every tensor of the network (one vector per network);

    and the output for bias entry :math:`(i, j)` of the bias itself, the quantities of neuron
    :math:`j` (its row of :math:`W^{(i)}`, its column of :math:`W^{(i+1)}`) and the means.
    Terms a boundary layer lacks read zeros. Each is a sum over neurons, a broadcast or a
    per-entry map, so the layer commutes with every permutation of the hidden neurons; the
    maps are specific to each layer ``i``, as in the paper.
    """

    def __init__(self, n_layers: int, c_in: int, c_out: int) -> None:
        super().__init__()
        self.n_layers = n_layers
        g = 2 * n_layers * c_in

        def maps(width: int) -> nn.ModuleList:
            return nn.ModuleList(nn.Linear(width, c_out, bias=False) for _ in range(n_layers))

        self.w_self, self.w_row, self.w_col = maps(c_in), maps(3 * c_in), maps(3 * c_in)
        self.b_self, self.b_row = maps(c_in), maps(2 * c_in)
        self.w_global = nn.ModuleList(nn.Linear(g, c_out) for _ in range(n_layers))
        self.b_global = nn.ModuleList(nn.Linear(g, c_out) for _ in range(n_layers))

    def forward(self, ws: list[Tensor], bs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """``ws[i] [B, n_i, n_{i-1}, C]``, ``bs[i] [B, n_i, C]`` -> the same with ``c_out``."""
        row = [w.mean(2) for w in ws]  # [B, n_i, C]: per output neuron of layer i
        col = [w.mean(1) for w in ws]  # [B, n_{i-1}, C]: per input neuron of layer i
        pooled = torch.cat([t for w, b in zip(ws, bs, strict=True)
                            for t in (w.mean((1, 2)), b.mean(1))], -1)  # [B, 2 L C]
        out_w, out_b = [], []
        for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
            nxt = col[i + 1] if i + 1 < self.n_layers else torch.zeros_like(row[i])
            prev_row = row[i - 1] if i else torch.zeros_like(col[i])
            prev_b = bs[i - 1] if i else torch.zeros_like(col[i])
            at_j = torch.cat([row[i], nxt, b], -1)  # [B, n_i, 3C]
            at_k = torch.cat([col[i], prev_row, prev_b], -1)  # [B, n_{i-1}, 3C]
            out_w.append(self.w_self[i](w) + self.w_row[i](at_j)[:, :, None]
                         + self.w_col[i](at_k)[:, None] + self.w_global[i](pooled)[:, None, None])
            out_b.append(self.b_self[i](b) + self.b_row[i](torch.cat([row[i], nxt], -1))
                         + self.b_global[i](pooled)[:, None])
        return out_w, out_b


class NPNFNMetanet(nn.Module):
    """The NP-NFN editor of Zhou et al. (2023) as a metanetwork, in its published form.

    Every value is first encoded by random Gaussian Fourier features (``fourier`` frequencies
    ``b ~ N(0, fourier_scale^2)``, fixed at construction and saved with the editor:
    ``[sin(2 pi b x), cos(2 pi b x)]``, so ``2 fourier`` channels; ``fourier=0`` reads the raw
    value, one channel) and, with ``io``, given 7 more channels that encode the position of
    its input neuron (first layer) or output neuron (last layer) in ``[-1, 1]`` (``x`` and
    ``sin`` / ``cos`` of ``x pi`` times 1, 1.25, 1.5; zeros elsewhere): the input and output
    neurons of a SIREN are not interchangeable, its hidden ones are. Then ``layers`` NP layers
    of ``channels`` channels with ReLU between, and an NP layer to one channel whose weights
    start at zero (a fresh editor leaves the parameters unchanged). The published editor
    (``nfnet=equiv_io`` of the authors' INR-editing code) is 128 Fourier features of scale 3,
    the I/O encoding and 3 x 128 channels: the defaults.

    Maps normalized batched SIREN parameters ``{"layers.{i}.weight": [B, out, in],
    "layers.{i}.bias": [B, out]}`` to outputs of the same shapes; equivariant to every
    permutation of the hidden neurons (:func:`editing.permute_hidden`; tested).

    Args:
        shapes: per-INR parameter shapes in layer order.
        channels: hidden channels (the published editor: 128).
        layers: hidden NP layers (the published editor: 3).
        fourier: Gaussian Fourier features per value (published: 128; 0: the raw value).
        fourier_scale: standard deviation of their frequencies (published: 3).
        io: the input / output neuron position encoding (published: on).
    """

    IO_CHANNELS = 7

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], channels: int = 128,
                 layers: int = 3, fourier: int = 128, fourier_scale: float = 3.0,
                 io: bool = True) -> None:
        super().__init__()
        self.shapes = dict(shapes)
        self.n_layers = len(self.shapes) // 2
        self.io = io
        self.takes_scale = True  # the Fourier features read raw values (see forward)
        self.register_buffer("frequencies", torch.randn(fourier) * fourier_scale)
        c_in = (2 * fourier if fourier else 1) + (self.IO_CHANNELS if io else 0)
        dims = [c_in] + [channels] * layers
        self.body = nn.ModuleList(NPNFNLayer(self.n_layers, a, b)
                                  for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.head = NPNFNLayer(self.n_layers, dims[-1], 1)
        for p in self.head.parameters():
            nn.init.zeros_(p)

    def _encode(self, x: Tensor) -> Tensor:
        """``[..., 1]`` values -> ``[..., 2 fourier]`` Fourier features (or the value)."""
        if not len(self.frequencies):
            return x
        angle = 2 * math.pi * x * self.frequencies.to(x.dtype)
        return torch.cat([angle.sin(), angle.cos()], -1)

    @staticmethod
    def _positions(n: int, like: Tensor) -> Tensor:
        """``[n, 7]``: neuron ``i`` of ``n`` at ``x = -1 + 2 i / (n - 1)``, as ``sin`` /
        ``cos`` of ``x pi`` times 1, 1.25, 1.5 and ``x``."""
        x = torch.linspace(-1.0, 1.0, n, dtype=like.dtype, device=like.device)[:, None]
        angle = x * torch.linspace(1.0, 1.5, 3, dtype=like.dtype, device=like.device) * math.pi
        return torch.cat([angle.sin(), angle.cos(), x], -1)

    def forward(self, params: Mapping[str, Tensor],
                scale: Tensor | None = None) -> dict[str, Tensor]:
        """Batched params (``[B, *shape]`` each) -> outputs of the same shapes.

        ``scale`` (one value per tensor, in order): the factors that undo the editor's input
        normalisation. The Fourier features then read the raw values, as the published editor
        does (a SIREN's hidden weights are ~0.01: at scale 3 their features are smooth; read
        at unit scale they oscillate and the editor overfits).
        """
        def value(i: int, kind: str) -> Tensor:
            x = params[f"layers.{i}.{kind}"][..., None]
            if scale is not None and len(self.frequencies):
                x = x * scale[2 * i + (kind == "bias")]
            return self._encode(x)

        ws = [value(i, "weight") for i in range(self.n_layers)]
        bs = [value(i, "bias") for i in range(self.n_layers)]
        if self.io:
            last = self.n_layers - 1
            pos_w = [ws[i].new_zeros(ws[i].shape[-3:-1] + (self.IO_CHANNELS,))
                     for i in range(self.n_layers)]
            pos_b = [bs[i].new_zeros(bs[i].shape[-2:-1] + (self.IO_CHANNELS,))
                     for i in range(self.n_layers)]
            pos_w[0] = pos_w[0] + self._positions(ws[0].shape[-2], ws[0])[None]  # input k
            out_pos = self._positions(ws[last].shape[-3], ws[last])
            pos_w[last] = pos_w[last] + out_pos[:, None]  # output neuron j
            pos_b[last] = pos_b[last] + out_pos
            ws = [torch.cat([w, p.expand(*w.shape[:-1], -1)], -1) for w, p in zip(ws, pos_w)]
            bs = [torch.cat([b, p.expand(*b.shape[:-1], -1)], -1) for b, p in zip(bs, pos_b)]
        for layer in self.body:
            ws, bs = layer(ws, bs)
            ws, bs = [torch.relu(w) for w in ws], [torch.relu(b) for b in bs]
        ws, bs = self.head(ws, bs)
        out = {}
        for i in range(self.n_layers):
            out[f"layers.{i}.weight"] = ws[i][..., 0]
            out[f"layers.{i}.bias"] = bs[i][..., 0]
        return {k: out[k] for k in self.shapes}
