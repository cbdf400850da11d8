"""Architectures of the inner networks (the networks a metanetwork reads and writes).

Every module here traces with ``torch.fx.symbolic_trace`` and follows the conventions of
the parameter-graph tracer in ``graphs``:

* residual connections are written ``out = f(x) + shortcut(x)``;
* flattening is ``torch.flatten(x, 1)`` / ``nn.Flatten()``;
* activations are ``nn`` modules (one instance per use) or torch functions (``torch.sin``);
* no parameter is used twice; learned tokens / positional embeddings are bare
  ``nn.Parameter`` s.

Shapes in docstrings use B = batch, C = channels, H/W = spatial size, T = tokens, D = width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "MLP",
    "Autoencoder",
    "SIREN",
    "ViT",
    "BasicBlock",
    "DigitsCNN",
    "ResNet",
    "ResidualMLP",
    "SequenceTransformer",
    "digits_resnet",
    "InvertedResidual",
    "MobileNet",
    "mobilenet_like",
    "digits_vit",
    "make_activation",
    "resnet18",
    "siren_weight_bound",
    "small_vit",
]

ActivationName = Literal["relu", "tanh", "gelu", "silu", "sigmoid"]
NormName = Literal["layer", "batch"] | None

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}"
        ) from None


# ----------------------------------------------------------------------------- MLPs


class MLP(nn.Module):
    """Fully connected network ``in -> hidden[0] -> ... -> out``.

    Each hidden layer is ``Linear -> (norm) -> activation``; the last layer is a plain
    ``Linear``. Parameters are named ``layers.{i}.weight`` / ``layers.{i}.bias`` (and
    ``norms.{i}.*`` when ``norm`` is set).

    Shapes: ``[B, in_features] -> [B, out_features]``.
    """

    def __init__(
        self,
        in_features: int = 64,
        hidden: Sequence[int] = (32,),
        out_features: int = 10,
        activation: ActivationName = "relu",
        norm: NormName = None,
    ) -> None:
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.acts = nn.ModuleList(make_activation(activation) for _ in hidden)
        if norm is None:
            self.norms = None
        elif norm == "layer":
            self.norms = nn.ModuleList(nn.LayerNorm(h) for h in hidden)
        elif norm == "batch":
            self.norms = nn.ModuleList(nn.BatchNorm1d(h) for h in hidden)
        else:
            raise ValueError(f"unknown norm {norm!r}")

    def forward(self, x: Tensor) -> Tensor:
        for i, act in enumerate(self.acts):
            x = self.layers[i](x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = act(x)
        return self.layers[-1](x)


class ResidualBlockMLP(nn.Module):
    """Pre-LayerNorm residual block ``x -> lin2(act(lin1(norm(x)))) + x``; ``[B, D] -> [B, D]``."""

    def __init__(self, width: int, hidden: int, activation: ActivationName = "relu") -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.lin1 = nn.Linear(width, hidden)
        self.act = make_activation(activation)
        self.lin2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(self.act(self.lin1(self.norm(x)))) + x


class ResidualMLP(nn.Module):
    """``Linear(in, width) -> depth x ResidualBlockMLP -> LayerNorm -> Linear(width, out)``.

    Shapes: ``[B, in_features] -> [B, out_features]``.
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        out_features: int,
        activation: ActivationName = "relu",
        expansion: int = 2,
    ) -> None:
        super().__init__()
        self.input = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(
            ResidualBlockMLP(width, expansion * width, activation) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, out_features)

    def forward(self, x: Tensor) -> Tensor:
        x = self.input(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class Autoencoder(nn.Module):
    """MLP autoencoder: ``encoder`` (an :class:`MLP` ``in -> hidden -> code``, the code
    linear) and ``decoder`` (an :class:`MLP` ``code -> reversed(hidden) -> in``).

    The default is 64-32-8-32-64. Shapes: ``[B, in_features] -> [B, in_features]``.
    """

    def __init__(
        self,
        in_features: int = 64,
        hidden: Sequence[int] = (32,),
        code: int = 8,
        activation: ActivationName = "relu",
    ) -> None:
        super().__init__()
        self.encoder = MLP(in_features, hidden, code, activation)
        self.decoder = MLP(code, tuple(reversed(hidden)), in_features, activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


# ----------------------------------------------------------------------------- CNNs


class DigitsCNN(nn.Module):
    """Small CNN for ``[B, C_in, H, W]`` images (8x8 digits by default).

    Each stage is ``Conv3x3(pad 1) -> (BatchNorm2d) -> act -> (MaxPool2d(2))`` inside
    ``self.features`` (an ``nn.Sequential``). The head is ``AdaptiveAvgPool2d(1) -> flatten
    -> Linear(C, classes)`` for ``pool="avg"`` or ``flatten -> Linear(C * H' * W', classes)``
    for ``pool="flatten"``.

    Shapes: ``[B, in_channels, image_size, image_size] -> [B, num_classes]``.
    """

    def __init__(
        self,
        channels: Sequence[int] = (8, 16),
        num_classes: int = 10,
        norm: Literal["batch"] | None = "batch",
        activation: ActivationName = "relu",
        pool: Literal["avg", "flatten"] = "avg",
        maxpool: bool = True,
        in_channels: int = 1,
        image_size: int = 8,
    ) -> None:
        super().__init__()
        if norm not in ("batch", None):
            raise ValueError(f"unknown norm {norm!r}")
        layers: list[nn.Module] = []
        size, c_in = image_size, in_channels
        for c_out in channels:
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(make_activation(activation))
            if maxpool:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c_in = c_out
        if size < 1:
            raise ValueError(f"{len(channels)} max-pool stages shrink {image_size}px to nothing")
        self.features = nn.Sequential(*layers)
        if pool == "avg":
            self.pool: nn.Module = nn.AdaptiveAvgPool2d(1)
            head_in = c_in
        elif pool == "flatten":
            self.pool = nn.Identity()
            head_in = c_in * size * size
        else:
            raise ValueError(f"unknown pool {pool!r}")
        self.classifier = nn.Linear(head_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block.

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` where the shortcut is the
    identity, or ``Conv1x1(stride, no bias) -> BatchNorm2d`` (``self.downsample``) when
    ``stride != 1`` or ``in_planes != planes``. Parameter names match torchvision.

    Shapes: ``[B, in_planes, H, W] -> [B, planes, ceil(H / stride), ceil(W / stride)]``.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        if stride != 1 or in_planes != planes:
            self.downsample: nn.Module = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        else:
            self.downsample = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.downsample(x)
        return self.relu2(out)


class ResNet(nn.Module):
    """ResNet with basic blocks (torchvision layout and parameter names).

    ``stem="imagenet"``: ``Conv7x7(stride 2, pad 3) -> BN -> ReLU -> MaxPool3x3(stride 2)``;
    ``stem="small"``: ``Conv3x3(pad 1) -> BN -> ReLU`` (for 8x8 / 32x32 inputs). Then one
    stage ``layer{i}`` per entry of ``block_counts`` (stride 1 for the first, 2 after),
    ``AdaptiveAvgPool2d(1) -> flatten -> fc``.

    Shapes: ``[B, in_channels, H, W] -> [B, num_classes]``.
    """

    def __init__(
        self,
        block_counts: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 3,
        num_classes: int = 10,
        stem: Literal["imagenet", "small"] = "imagenet",
    ) -> None:
        super().__init__()
        if len(block_counts) != len(widths) or not widths:
            raise ValueError("block_counts and widths must be non-empty and of equal length")
        stem_width = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, stem_width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        elif stem == "small":
            self.conv1 = _conv3x3(in_channels, stem_width)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"unknown stem {stem!r}")
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU()
        self.num_stages = len(widths)
        in_planes = stem_width
        for i, (count, planes) in enumerate(zip(block_counts, widths)):
            blocks = []
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(in_channels: int = 3, num_classes: int = 1000) -> ResNet:
    """ResNet-18 (11,689,512 parameters for 3 -> 1000, as torchvision)."""
    return ResNet((2, 2, 2, 2), (64, 128, 256, 512), in_channels, num_classes, stem="imagenet")


def digits_resnet(num_classes: int = 10, widths: Sequence[int] = (8, 16)) -> ResNet:
    """Small ResNet for ``[B, 1, 8, 8]`` digits: small stem, one block per stage (~5k params)."""
    return ResNet((1,) * len(widths), widths, in_channels=1, num_classes=num_classes, stem="small")


def _round_channels(channels: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: nearest multiple of ``divisor``, never 10 % below."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


class InvertedResidual(nn.Module):
    """MobileNetV2's inverted residual block.

    ``Conv1x1(expand) -> BN -> ReLU6 -> depthwise Conv3x3(stride) -> BN -> ReLU6 ->
    Conv1x1(project) -> BN`` inside ``self.conv`` (an ``nn.Sequential``; expansion 1 drops
    the first convolution), plus the input (``self.shortcut``, the identity) when
    ``stride == 1`` and ``in_channels == out_channels``. No convolution has a bias.

    Shapes: ``[B, in_channels, H, W] -> [B, out_channels, ceil(H / stride), ceil(W / stride)]``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels
        self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return out + self.shortcut(x) if self.residual else out


MOBILENET_V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
"""MobileNetV2's stages as (expansion, channels, blocks, stride of the first block)."""


class MobileNet(nn.Module):
    """MobileNetV2-style CNN: inverted residual blocks with depthwise convolutions.

    ``Conv3x3(stride 2) -> BN -> ReLU6`` stem (32 x ``width_mult`` channels), one stage of
    :class:`InvertedResidual` blocks per entry of ``stages``, ``Conv1x1 -> BN -> ReLU6`` to
    ``last_channel`` (x ``width_mult`` when above 1), ``AdaptiveAvgPool2d(1) -> flatten ->
    Linear``. Channels are scaled by ``width_mult`` and rounded to multiples of 8, as
    torchvision's ``mobilenet_v2`` (whose parameter count this matches for
    ``num_classes=1000``: 3,504,872 at width 1).

    Shapes: ``[B, in_channels, H, W] -> [B, num_classes]`` (any ``H, W``; 32x32 keeps the
    forward cheap, the stem and four stages halve it to 1x1).
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 10,
        in_channels: int = 3,
        stages: Sequence[tuple[int, int, int, int]] = MOBILENET_V2_STAGES,
        last_channel: int = 1280,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        c_in = _round_channels(32 * width_mult)
        c_last = _round_channels(last_channel * max(1.0, width_mult))
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_in, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(c_in), nn.ReLU6())
        blocks: list[nn.Module] = []
        for expansion, channels, count, stride in stages:
            c_out = _round_channels(channels * width_mult)
            for j in range(count):
                blocks.append(InvertedResidual(c_in, c_out, stride if j == 0 else 1, expansion))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(c_in, c_last, 1, bias=False),
                                  nn.BatchNorm2d(c_last), nn.ReLU6())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_last, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def mobilenet_like(width_mult: float = 1.2, num_classes: int = 10,
                   in_channels: int = 3) -> MobileNet:
    """MobileNetV2-style CNN for 3x32x32 inputs; width 1.2, 10 classes: 3,204,362 parameters."""
    return MobileNet(width_mult, num_classes, in_channels)


# ----------------------------------------------------------------------------- transformers


def _encoder(dim: int, heads: int, mlp_dim: int, depth: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        dim, heads, mlp_dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class ViT(nn.Module):
    """Vision transformer with a cls token and learned positional embeddings.

    ``Conv2d(patch, stride patch)`` patch embedding ``[B, D, H/p, W/p]`` -> tokens
    ``[B, N, D]`` -> prepend cls ``[B, N + 1, D]`` -> ``+ pos_embedding`` -> pre-norm
    ``nn.TransformerEncoder`` -> cls token ``[B, D]`` -> LayerNorm -> Linear.

    Shapes: ``[B, in_channels, image_size, image_size] -> [B, num_classes]``.
    """

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 4,
        in_channels: int = 3,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        mlp_dim: int = 384,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"patch_size {patch_size} does not divide image_size {image_size}")
        num_patches = (image_size // patch_size) ** 2
        self.patch_embedding = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim) * 0.02)
        self.encoder = _encoder(dim, heads, mlp_dim, depth)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embedding(x)  # [B, D, H/p, W/p]
        x = torch.flatten(x, 2).transpose(1, 2)  # [B, N, D]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # [B, N + 1, D]
        x = x + self.pos_embedding
        x = self.encoder(x)
        x = x[:, 0]  # [B, D]
        return self.head(self.norm(x))


def small_vit(num_classes: int = 10) -> ViT:
    """ViT for 32x32x3 inputs: patch 4, dim 192, depth 6, 3 heads, MLP 384 (~1.8M params)."""
    return ViT(32, 4, 3, dim=192, depth=6, heads=3, mlp_dim=384, num_classes=num_classes)


def digits_vit(num_classes: int = 10, depth: int = 1) -> ViT:
    """Tiny ViT for ``[B, 1, 8, 8]`` digits: patch 2, dim 32, 2 heads, MLP 64 (~10k params)."""
    return ViT(8, 2, 1, dim=32, depth=depth, heads=2, mlp_dim=64, num_classes=num_classes)


class SequenceTransformer(nn.Module):
    """Token classifier: embedding + learned positions -> pre-norm encoder -> mean-pool -> head.

    Shapes: ``[B, seq_len]`` int64 token ids -> ``[B, num_classes]``.
    """

    def __init__(
        self,
        vocab_size: int = 16,
        seq_len: int = 12,
        dim: int = 32,
        heads: int = 2,
        depth: int = 1,
        num_classes: int = 2,
        mlp_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, seq_len, dim) * 0.02)
        self.encoder = _encoder(dim, heads, mlp_dim or 2 * dim, depth)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embedding(tokens) + self.pos_embedding  # [B, T, D]
        x = self.encoder(x)
        x = x.mean(dim=1)  # [B, D]
        return self.head(self.norm(x))


# ----------------------------------------------------------------------------- implicit networks


def siren_weight_bound(layer: int, fan_in: int, w0: float) -> float:
    """SIREN init bound of layer ``layer``'s weights: ``1/in`` for the first layer,
    ``sqrt(6/in)/w0`` for the others (Sitzmann et al., 2020); weights are ``U(-bound, bound)``."""
    return 1.0 / fan_in if layer == 0 else math.sqrt(6.0 / fan_in) / w0


class SIREN(nn.Module):
    """Sinusoidal representation network (Sitzmann et al., 2020).

    ``depth`` hidden layers ``x -> sin(w0 * Linear(x))`` followed by a plain ``Linear``;
    parameters are ``layers.{i}.weight`` / ``layers.{i}.bias``. First-layer weights are
    ``U(-1/in, 1/in)``, later ones ``U(-sqrt(6/in)/w0, sqrt(6/in)/w0)``
    (:func:`siren_weight_bound`); biases keep the ``nn.Linear`` default. The default
    2 -> 32 -> 32 -> 1 has 1,185 parameters.

    Args:
        in_features, hidden, depth, out_features: ``in -> hidden x depth -> out``.
        w0: frequency factor of every layer but the last (linear).
        widths: all layer widths at once, e.g. ``(2, 64, 32, 1)`` (hidden layers of different
            widths; at least two entries); replaces the four size arguments when given.

    Shapes: ``[B, in_features] -> [B, out_features]`` (B = number of coordinates).
    """

    def __init__(
        self,
        in_features: int = 2,
        hidden: int = 32,
        depth: int = 2,
        out_features: int = 1,
        w0: float = 30.0,
        *,
        widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if widths is None:
            if depth < 1:
                raise ValueError("SIREN needs at least one sine layer")
            sizes = [in_features] + [hidden] * depth + [out_features]
        else:
            sizes = [int(w) for w in widths]
            if len(sizes) < 2 or min(sizes) < 1:
                raise ValueError(f"widths must be >= 2 positive sizes, got {tuple(widths)}")
        self.w0 = float(w0)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                bound = siren_weight_bound(i, layer.in_features, self.w0)
                layer.weight.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = torch.sin(self.w0 * layer(x))
        return self.layers[-1](x)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "residual_mlp": ResidualMLP,
    "autoencoder": Autoencoder,
    "digits_cnn": DigitsCNN,
    "resnet": ResNet,
    "resnet18": resnet18,
    "digits_resnet": digits_resnet,
    "mobilenet": MobileNet,
    "mobilenet_like": mobilenet_like,
    "vit": ViT,
    "small_vit": small_vit,
    "digits_vit": digits_vit,
    "sequence_transformer": SequenceTransformer,
    "siren": SIREN,
}
"""Architecture constructors by name; each returns a fresh, randomly initialised module."""
