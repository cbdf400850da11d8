"""Per-channel gains held by bare parameters (layer scale) and LayerNorm over channels.

``x * gamma.view(1, -1, 1, 1)`` after a convolution is encoded as a normalization gamma of
the convolution's channels, so each gain moves with its channel; a LayerNorm that permutes to
channels-last (ConvNeXt's ``LayerNorm2d``) normalizes the channels. Anything whose axes do not
line up is refused.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphs import ParameterGraph
from graphs.errors import ShapeOperationError, UnsupportedModuleError
from graphs.permutation import node_permutation, permute_state_dict
from tests.graphs.checks import assert_round_trip, assert_well_formed

pytestmark = pytest.mark.usefixtures("float64")

C = 6


class ViewGain(nn.Module):
    """conv -> relu -> per-channel gain through ``view`` -> conv; ``how`` picks the spelling."""

    def __init__(self, how: str = "view"):
        super().__init__()
        self.how = how
        self.conv1 = nn.Conv2d(3, C, 3)
        self.gamma = nn.Parameter(torch.randn(C, 1, 1) if how == "bare" else torch.randn(C))
        self.conv2 = nn.Conv2d(C, 4, 3)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        if self.how == "view":
            x = x * self.gamma.view(1, -1, 1, 1)
        elif self.how == "mul_reshape":
            x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        elif self.how == "index":
            x = self.gamma[:, None, None] * x
        else:  # a parameter of shape [C, 1, 1] (torchvision's CNBlock.layer_scale)
            x = self.gamma * x
        return self.conv2(x).mean((2, 3))


class LayerNorm2d(nn.LayerNorm):
    """Channels-first LayerNorm as torchvision and timm write it."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ChannelNorm(nn.Module):
    """conv -> LayerNorm over channels (a LayerNorm2d subclass, or permute + nn.LayerNorm)
    -> conv."""

    def __init__(self, subclass: bool = True):
        super().__init__()
        self.subclass = subclass
        self.conv1 = nn.Conv2d(3, C, 3)
        self.norm = LayerNorm2d(C) if subclass else nn.LayerNorm(C)
        self.conv2 = nn.Conv2d(C, 4, 3)

    def forward(self, x):
        x = self.conv1(x)
        if self.subclass:
            x = self.norm(x)
        else:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.conv2(torch.relu(x)).mean((2, 3))


def _randomized(model: nn.Module) -> nn.Module:
    with torch.no_grad():  # norms away from their init (ones, zeros), so gains matter
        for name, p in model.named_parameters():
            if name.startswith("norm"):
                p.copy_(torch.randn_like(p))
    return model


def _moved(model: nn.Module, state: dict) -> torch.Tensor:
    twin = copy.deepcopy(model)
    twin.load_state_dict(state)
    with torch.no_grad():
        return twin(torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(1)))


def _check_symmetry(model: nn.Module, gain: str) -> None:
    """A channel permutation of conv1 moves its gain with it and keeps the output; the same
    permutation with the gain left behind changes it."""
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    state = model.state_dict()
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    sigma = node_permutation(pg, {"conv1": perm})
    moved = permute_state_dict(pg, state, sigma)  # strict: raises unless an automorphism
    assert not torch.equal(moved[gain], state[gain])
    assert torch.equal(moved[gain].flatten(), state[gain].flatten()[perm])
    ref = _moved(model, state)
    assert torch.allclose(_moved(model, moved), ref, atol=1e-12, rtol=1e-12)
    stale = dict(moved, **{gain: state[gain]})  # the gain out of step with its channels
    assert not torch.allclose(_moved(model, stale), ref, atol=1e-6)


@pytest.mark.parametrize("how", ["view", "mul_reshape", "index", "bare"])
def test_a_per_channel_gain_moves_with_its_channel(how, seeded):
    _check_symmetry(ViewGain(how), "gamma")


@pytest.mark.parametrize("subclass", [True, False], ids=["LayerNorm2d", "permute"])
def test_a_layer_norm_over_channels_moves_with_them(subclass, seeded):
    model = _randomized(ChannelNorm(subclass))
    _check_symmetry(model, "norm.weight")
    pg = ParameterGraph.from_module(model)
    assert set(pg.param_names) >= {"norm.weight", "norm.bias"}


class ScalarGain(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.conv1 = nn.Conv2d(3, C, 3)
        self.scale = nn.Parameter(torch.randn(shape))
        self.conv2 = nn.Conv2d(C, 4, 3)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)) * self.scale).mean((2, 3))


@pytest.mark.parametrize("shape", [(), (1,)])
def test_a_scalar_gain_is_shared_by_every_channel(shape, seeded):
    model = ScalarGain(shape)
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    state = model.state_dict()
    sigma = node_permutation(pg, {"conv1": torch.tensor([3, 0, 5, 1, 4, 2])})
    moved = permute_state_dict(pg, state, sigma)
    assert torch.equal(moved["scale"], state["scale"])
    assert torch.allclose(_moved(model, moved), _moved(model, state), atol=1e-12, rtol=1e-12)


class WrongAxis(nn.Module):
    """A gain along the height of a map whose height equals its channel count."""

    def __init__(self, spelling: str):
        super().__init__()
        self.spelling = spelling
        self.conv = nn.Conv2d(3, C, 3, padding=1)
        self.gamma = nn.Parameter(torch.randn(C))
        self.grid = nn.Parameter(torch.randn(C, C))

    def forward(self, x):  # x: [B, 3, C, C]
        x = self.conv(x)
        if self.spelling == "height":
            return x * self.gamma.view(1, 1, -1, 1)
        if self.spelling == "last":
            return x * self.gamma
        return x * self.grid  # two axes of size > 1


@pytest.mark.parametrize("spelling", ["height", "last", "grid"])
def test_a_gain_on_another_axis_is_refused(spelling):
    with pytest.raises(ShapeOperationError, match="gain|positions"):
        ParameterGraph.from_module(WrongAxis(spelling))


class Reordered(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, C, 3)
        self.gamma = nn.Parameter(torch.randn(2, 3))

    def forward(self, x):
        return self.conv(x) * self.gamma.t().reshape(1, -1, 1, 1)


def test_a_gain_whose_entries_are_reordered_is_refused():
    with pytest.raises(UnsupportedModuleError, match="gamma"):
        ParameterGraph.from_module(Reordered())


class NoPermute(nn.LayerNorm):
    def forward(self, x):  # normalizes the width of an NCHW map, not its channels
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


@pytest.mark.parametrize("norm", [NoPermute, nn.LayerNorm])
def test_a_layer_norm_off_the_channel_axis_is_refused(norm):
    model = nn.Sequential(nn.Conv2d(3, C, 3, padding=1), norm(C))
    with pytest.raises(ShapeOperationError, match="last axis"):
        ParameterGraph.from_module(model)  # the input is [B, 3, C, C]: sizes would agree
