"""Shape operations between layers: the tracer follows which axis carries the neurons.

A transpose, chunk, split, slice or reshape either moves / splits the neuron group exactly,
or is refused with an error naming the operation, the module path and the source line —
never a silent pass-through (two axes of equal size must never be confused).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from graphs import EdgeType, GraphConstructionError, ParameterGraph
from graphs.errors import ShapeOperationError
from graphs.permutation import node_permutation, permute_parameters
from tests.graphs.checks import assert_round_trip, assert_well_formed


class TokenMixing(nn.Module):
    """MLP-Mixer-style block on [B, 16, 16]: 16 tokens x 16 channels (equal sizes)."""

    def __init__(self, patch: bool = False):
        super().__init__()
        self.patch = nn.Conv2d(1, 16, 2, stride=2) if patch else None  # [B,1,8,8] -> 16 tokens
        self.channel_mix = nn.Linear(16, 16)
        self.token_mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        if self.patch is not None:
            x = self.patch(x).flatten(2).transpose(1, 2)  # [B, 16 tokens, 16 channels]
        x = torch.relu(self.channel_mix(x))
        x = self.token_mix(x.transpose(1, 2)).transpose(1, 2)
        return self.head(x.mean(dim=1))


class Outer(nn.Module):
    """Puts a model one level down, so errors must name the submodule path."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def _check_symmetry(model: nn.Module, pg: ParameterGraph, moves: dict, x: torch.Tensor) -> None:
    """The accepted permutation leaves the network's output unchanged."""
    sigma = node_permutation(pg, moves)
    assert not torch.equal(sigma, torch.arange(pg.num_nodes))
    params = dict(model.named_parameters())
    moved = permute_parameters(pg, params, sigma)
    assert any(not torch.equal(moved[k], params[k]) for k in params)
    torch.testing.assert_close(functional_call(model, moved, (x,)), model(x))


@pytest.mark.parametrize("patch", [False, True])
def test_equal_size_token_mixing_is_refused_not_confused(patch):
    model = Outer(TokenMixing(patch))
    with pytest.raises(ShapeOperationError) as info:
        ParameterGraph.from_module(model)
    err = info.value
    assert isinstance(err, GraphConstructionError)
    assert err.op == "transpose" and err.path == "inner"
    msg = str(err)
    assert "transpose" in msg and "'inner'" in msg and "test_shape_ops.py" in msg
    if patch:  # the rank is known: the refusal is the token-mixing Linear reading positions
        assert "inner.token_mix" in msg and "token mixing" in msg


def test_transpose_of_a_sequence_into_a_linear_is_refused_naming_the_op():
    class PatchTokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(1, 8, 4, stride=4)  # [B, 1, 8, 8] -> 4 tokens of 8
            self.mix = nn.Linear(4, 4)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)  # [B, 4, 8]: SEQ
            return self.mix(x.transpose(-1, -2))  # Linear over the 4 tokens

    with pytest.raises(ShapeOperationError, match="transpose") as info:
        ParameterGraph.from_module(Outer(PatchTokens()))
    assert info.value.path == "inner" and "inner.mix" in str(info.value)
    assert "x.transpose(-1, -2)" in info.value.line


def test_transposes_that_return_the_neurons_to_their_axis_build():
    class Back(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(1, 8, 4, stride=4)
            self.norm = nn.LayerNorm(8)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)  # [B, 4, 8]
            x = x.transpose(1, 2).transpose(1, 2).permute(0, 2, 1).permute(0, 2, 1)
            return self.head(self.norm(x).mean(1))

    model = Back()
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    # the head reads the LayerNorm's (= the patch conv's) 8 channels
    head = pg.edge_index[:, _param_edges(pg, "head.weight")]
    assert set(head[0].tolist()) == set(pg.node_groups["patch"].tolist())


class GLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(5, 8)
        self.down = nn.Linear(4, 3)

    def forward(self, x):
        a, b = self.up(x).chunk(2, dim=-1)
        return self.down(a * torch.sigmoid(b))


def test_chunk_along_features_splits_the_neuron_group():
    torch.manual_seed(0)
    model = GLU()
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    up = pg.node_groups["up"]
    a_ids, b_ids = up[:4], up[4:]
    product = pg.edge_index[:, pg.edge_feat[:, 0] == int(EdgeType.PRODUCT)]
    # neuron i of the first half is tied to neuron i of the second half
    assert sorted(zip(product[0].tolist(), product[1].tolist())) == sorted(
        zip(a_ids.tolist(), b_ids.tolist())
    )
    # an accepted permutation of the hidden units keeps the function
    perm = torch.tensor([2, 0, 3, 1])
    _check_symmetry(model, pg, {"up": torch.cat([perm, perm + 4])}, torch.randn(7, 5))


class Pieces(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(3, 9)
        self.a = nn.Linear(2, 2)
        self.b = nn.Linear(3, 2)
        self.c = nn.Linear(4, 2)
        self.d = nn.Linear(3, 2)

    def forward(self, x):
        h = self.up(x)
        p, q, r = torch.split(h, [2, 3, 4], dim=-1)
        return self.a(p) + self.b(q) + self.c(r) + self.d(h[..., 5:].narrow(-1, 1, 3))


def test_split_slice_and_narrow_along_features():
    pg = ParameterGraph.from_module(Pieces())
    assert_well_formed(pg)
    up = pg.node_groups["up"]
    for layer, ids in (("a", up[:2]), ("b", up[2:5]), ("c", up[5:]), ("d", up[6:])):
        weight = pg.edge_index[:, _param_edges(pg, f"{layer}.weight")]
        assert set(weight[0].tolist()) == set(ids.tolist()), layer


def _param_edges(pg: ParameterGraph, name: str) -> slice:
    start = 0
    for n, shape in zip(pg.param_names, pg.param_shapes):
        size = int(torch.Size(shape).numel())
        if n == name:
            return slice(start, start + size)
        start += size
    raise KeyError(name)


def test_chunk_and_split_along_other_axes_pass_through():
    class Halves(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            top, bottom = self.conv(x).chunk(2, dim=2)  # split the height, not the channels
            left, right = torch.split(top + bottom, 2, dim=-1)
            first = (left * right).unbind(0)[0]  # one sample: [C, H, W]
            return self.fc(first.mean(dim=(1, 2)).unsqueeze(0))

    model = Halves()
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    conv = pg.node_groups["conv"]
    fc = pg.edge_index[:, _param_edges(pg, "fc.weight")]
    assert set(fc[0].tolist()) <= set(conv.tolist()) | set(pg.edge_index[1].tolist())


@pytest.mark.parametrize(
    "op, forward",
    [
        ("reshape", lambda m, x: m.fc(m.emb(x).reshape(x.shape[0], 4, 2, 4).flatten(2))),
        ("__getitem__", lambda m, x: m.fc2(m.emb(x)[:, :, 0])),
        ("unbind", lambda m, x: m.fc2(m.emb(x).unbind(-1)[0])),
        ("matmul", lambda m, x: m.fc(m.emb(x) @ m.emb(x).transpose(1, 2))),
    ],
)
def test_refusals_name_the_operation_module_and_line(op, forward):
    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(1, 8, 2, stride=2)
            self.fc = nn.Linear(8, 2)
            self.fc2 = nn.Linear(4, 2)

        def emb(self, x):
            return self.patch(x).flatten(2).transpose(1, 2)  # [B, 4, 8]

        def forward(self, x):
            return forward(self, x)

    with pytest.raises(ShapeOperationError) as info:
        ParameterGraph.from_module(Outer(Inner()))
    err = info.value
    assert err.op == op and err.path == "inner", str(err)
    assert f"'{op}' in submodule 'inner'" in str(err)
    assert "test_shape_ops.py" in err.line


def test_view_flatten_and_sequence_reshapes_that_keep_the_neurons():
    class Views(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3, padding=1)
            self.seq = nn.Linear(3, 5)
            self.fc = nn.Linear(5 * 16, 2)

        def forward(self, x):
            b = x.shape[0]
            h = self.conv(x).flatten(2).transpose(1, 2)  # [B, 16, 3]
            h = self.seq(h.reshape(b, 4, 4, 3).reshape(b, 16, 3))  # features stay last, whole
            return self.fc(h.view(b, -1))  # [B, 16 * 5] (token-major: tiled)

    model = Views()
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    fc = pg.edge_index[:, _param_edges(pg, "fc.weight")]
    # each fc input reads seq neuron d of token t as feature t * 5 + d
    seq = pg.node_groups["seq"]
    assert torch.equal(fc[0].view(2, 80)[0], seq.repeat(16))


class SqueezeExcite(nn.Module):
    """Channel gating: pooled channels -> Linear -> view(B, C, 1, 1) -> times the map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.gate = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        s = torch.sigmoid(self.gate(h.mean(dim=(2, 3))))
        h = h * s.view(s.shape[0], 4, 1, 1)
        return self.head(h.amax(dim=(-2, -1)))


def test_view_with_trailing_unit_axes_keeps_channels_and_permutes_safely():
    torch.manual_seed(0)
    model = SqueezeExcite()
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    _check_symmetry(model, pg, {"conv": torch.tensor([3, 1, 0, 2])}, torch.randn(2, 2, 5, 5))


class MisalignedGate(SqueezeExcite):
    def forward(self, x):  # [B, C, H, W] * [B, C]: broadcasting pairs channels with W
        h = torch.relu(self.conv(x))
        return self.head((h * self.gate(h.mean(dim=(2, 3)))).amax(dim=(-2, -1)))


def test_broadcast_pairing_neurons_with_positions_is_refused():
    with pytest.raises(ShapeOperationError, match="different axes") as info:
        ParameterGraph.from_module(MisalignedGate())
    assert info.value.op == "mul"
