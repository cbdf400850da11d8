"""Small modules exercising every converter and tracing rule (kept here, not in tasks/,
so the core's tests stand alone)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(widths=(5, 8, 7, 3), act=nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class CNN(nn.Module):
    """Conv -> BN -> ReLU -> pool -> grouped conv -> BN -> flatten -> Linear on [B, 2, 8, 8]."""

    def __init__(self, c1: int = 4, c2: int = 6, groups: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(2, c1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, groups=groups)
        self.bn2 = nn.BatchNorm2d(c2)
        self.fc = nn.Linear(c2 * 16, 3)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A plain (non-Sequential) module: stem, two stages of basic blocks, pooled head."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.block1 = BasicBlock(width, width)
        self.block2 = BasicBlock(width, 2 * width, stride=2)
        self.head = nn.Linear(2 * width, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = self.block2(self.block1(x))
        return self.head(x.mean(dim=(2, 3)))


class Transformer(nn.Module):
    """Token embedding + learned positions + encoder (post-norm) + GroupNorm-free head."""

    def __init__(self, vocab=11, length=6, dim=8, heads=2, depth=2, norm_first=False):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(0.1 * torch.randn(1, length, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 16, dropout=0.0, batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 3)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos
        return self.head(self.encoder(x).mean(dim=1))


class TinyViT(nn.Module):
    """Patch conv, cls token, positional embedding, one pre-norm block, cls readout."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 4, stride=4)
        self.cls = nn.Parameter(0.1 * torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.1 * torch.randn(1, 5, dim))
        self.block = nn.TransformerEncoderLayer(dim, heads, 16, dropout=0.0, batch_first=True,
                                                norm_first=True, activation="gelu")
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = torch.flatten(self.patch(x), 2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.block(x)[:, 0]))


class Attention(nn.Module):
    """Self-attention with a residual connection, as a module to permute heads of."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.inp = nn.Linear(3, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out = nn.Linear(dim, 2)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.attn(h, h, h)[0]
        return self.out(h)


class GroupNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.gn(self.conv(x))).mean(dim=(2, 3)))


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give norm layers non-trivial affine parameters (so permutations are visible)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.GroupNorm):
            if m.weight is not None:
                with torch.no_grad():
                    m.weight.copy_(1 + 0.5 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=g))
    return model
