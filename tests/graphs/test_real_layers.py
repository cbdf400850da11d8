"""Layers real models use: attention called with keywords, PReLU, transposed convolutions,
and modules whose forward takes several tensors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from graphs import EdgeType, GraphConstructionError, NodeType, ParameterGraph
from graphs.permutation import node_permutation, permute_parameters
from tests.graphs.checks import assert_round_trip, assert_well_formed
from tests.graphs.test_gmn import assert_equivariant, assert_sensitive, check_symmetry


def same_graph(a: ParameterGraph, b: ParameterGraph) -> None:
    assert torch.equal(a.edge_index, b.edge_index)
    assert torch.equal(a.edge_feat, b.edge_feat)
    assert torch.equal(a.node_feat, b.node_feat)
    assert a.param_names == b.param_names


# ------------------------------------------------------------------ attention keywords
class Attend(nn.Module):
    """Self-attention called the way torchvision's ViT calls it, with ``kwargs``."""

    def __init__(self, kwargs: dict, batch_first: bool = True):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.head = nn.Linear(8, 3)
        self.kwargs = kwargs

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.attn(x, x, x, **self.kwargs)
        return self.head(out)


MASK = torch.triu(torch.full((5, 5), float("-inf")), 1)
KEYWORDS = {
    "need_weights": dict(need_weights=False),
    "attn_mask": dict(attn_mask=MASK),
    "key_padding_mask": dict(key_padding_mask=torch.zeros(2, 5, dtype=torch.bool)),
    "is_causal": dict(attn_mask=MASK, is_causal=True),
    "average_attn_weights": dict(need_weights=True, average_attn_weights=False),
}


@pytest.mark.parametrize("kw", list(KEYWORDS))
def test_attention_keywords_build_the_same_graph(kw, seeded):
    plain = assert_round_trip(Attend({}))
    model = Attend(KEYWORDS[kw])
    model(torch.randn(2, 5, 8))  # the call is valid torch
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    same_graph(pg, plain)


def test_attention_sequence_first_builds_the_batch_first_graph(seeded):
    model = Attend(dict(need_weights=False), batch_first=False)
    model(torch.randn(5, 2, 8))
    same_graph(assert_round_trip(model), ParameterGraph.from_module(Attend({})))


class Encoder(nn.Module):
    def __init__(self, kwargs: dict, norm_first: bool = False):
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.one = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.kwargs = kwargs

    def forward(self, x: Tensor) -> Tensor:
        layer_kw = {("src_mask" if k == "mask" else k): v for k, v in self.kwargs.items()}
        return self.one(self.encoder(x, **self.kwargs), **layer_kw)


@pytest.mark.parametrize(
    "kwargs",
    [dict(mask=MASK), dict(src_key_padding_mask=torch.zeros(2, 5, dtype=torch.bool)),
     dict(mask=MASK, is_causal=True)],
    ids=["mask", "src_key_padding_mask", "is_causal"],
)
def test_transformer_encoder_keywords_build_the_same_graph(kwargs, seeded):
    model = Encoder(kwargs)
    model.eval()(torch.randn(2, 5, 8))
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    same_graph(pg, ParameterGraph.from_module(Encoder({})))


def test_a_keyword_no_converter_takes_is_a_clear_error():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x, scale=2.0)  # fx does not run a leaf's forward

    with pytest.raises(GraphConstructionError, match=r"'lin' \(Linear\).*scale"):
        ParameterGraph.from_module(Odd())


# ------------------------------------------------------------------------------ PReLU
def prelu_cnn(slopes: int) -> nn.Sequential:
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.PReLU(slopes),
                          nn.Conv2d(4, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    with torch.no_grad():  # distinct slopes, so a slope left behind would show
        model[2].weight.copy_(torch.linspace(-0.5, 0.9, slopes))
    return model


def slope_edges(pg: ParameterGraph) -> Tensor:
    return pg.edge_index[:, pg.edge_feat[:, 0] == int(EdgeType.ACT_SLOPE)]


def test_prelu_per_channel_slope_moves_with_its_channel(float64):
    model = prelu_cnn(4)
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    src, dst = slope_edges(pg)
    assert torch.equal(dst, pg.node_groups["0"]) and src.unique().numel() == 1
    assert int(pg.node_feat[src[0], 0]) == NodeType.ACT_SLOPE
    moves = {"0": torch.tensor([2, 0, 3, 1]), "3": torch.tensor([1, 2, 0])}
    assert_equivariant(model, moves, torch.randn(2, 2, 8, 8))
    # the slopes are what made it a symmetry: leave them behind and the function changes
    pg = ParameterGraph.from_module(model.double())
    params = dict(model.named_parameters())
    moved = permute_parameters(pg, params, node_permutation(pg, moves))
    assert not torch.equal(moved["2.weight"], params["2.weight"])
    moved["2.weight"] = params["2.weight"]
    x = torch.randn(2, 2, 8, 8)
    assert (functional_call(model, moved, (x,)) - model(x)).abs().max() > 1e-6


def test_prelu_single_slope_is_shared_by_all_channels(float64):
    model = prelu_cnn(1)
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    src, dst = slope_edges(pg)
    assert src.numel() == 1 and int(pg.node_feat[dst[0], 0]) == NodeType.ACT_SHARED
    members = pg.edge_index[:, pg.edge_feat[:, 0] == int(EdgeType.ACT_MEMBER)]
    assert torch.equal(members[0], dst.expand(4)) and torch.equal(members[1], pg.node_groups["0"])
    # every channel permutation is an automorphism (strict) and keeps the function
    for perm in ([1, 0, 2, 3], [3, 2, 1, 0], [1, 2, 3, 0]):
        assert_equivariant(model, {"0": torch.tensor(perm)}, torch.randn(2, 2, 8, 8))
    assert_sensitive(model, {"input": torch.tensor([1, 0])}, torch.randn(2, 2, 8, 8))


def test_prelu_on_features_and_its_limits(seeded):
    mlp = nn.Sequential(nn.Linear(3, 5), nn.PReLU(5), nn.Linear(5, 2), nn.PReLU())
    assert_well_formed(assert_round_trip(mlp))

    # PReLU(C) scales dim 1, which in [batch, tokens, features] is the tokens
    tokens = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 6), nn.PReLU(6))
    with pytest.raises(GraphConstructionError, match="PReLU"):
        ParameterGraph.from_module(tokens)
    with pytest.raises(GraphConstructionError, match="PReLU"):  # one slope, input size unknown
        ParameterGraph.from_module(nn.Sequential(nn.PReLU(), nn.Linear(3, 2)))


# -------------------------------------------------------------- transposed convolutions
@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("groups", [1, 2])
def test_conv_transpose_round_trips_with_its_own_layout(dim, groups, seeded):
    conv_t = getattr(nn, f"ConvTranspose{dim}d")
    conv = getattr(nn, f"Conv{dim}d")
    model = nn.Sequential(conv(2, 4, 1), nn.ReLU(),
                          conv_t(4, 6, 3, stride=2, output_padding=1, groups=groups),
                          nn.ReLU(), conv(6, 1, 1))
    model(torch.randn(1, 2, *[4] * dim))
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    # entry (i, o, k) of the weight [in, out / groups, *kernel] is the edge
    # in[i] -> out[g(i) * out/groups + o] at kernel position k + 1
    w = model[2].weight
    start = pg.param_names.index("2.weight")
    start = sum(pg.param_numels[:start])
    edges = pg.edge_index[:, start : start + w.numel()].reshape(2, *w.shape)
    pos = pg.edge_feat[start : start + w.numel(), 2].reshape(w.shape)
    assert (pg.edge_feat[start : start + w.numel(), 0] == int(EdgeType.CONV_TRANSPOSE)).all()
    cin, cout = pg.node_groups["0"], pg.node_groups["2"]
    per_out = 6 // groups
    for i, o in ((0, 0), (3, 1), (1, 2), (2, per_out - 1)):
        assert (edges[0, i, o] == cin[i]).all()
        assert (edges[1, i, o] == cout[i // (4 // groups) * per_out + o]).all()
        assert torch.equal(pos[i, o].flatten(), torch.arange(1, 3**dim + 1, dtype=pos.dtype))


def conv_t_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(),
                         nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), nn.ReLU(),
                         nn.Conv2d(6, 2, 1))


def test_conv_transpose_channels_permute_within_groups(float64):
    x = torch.randn(2, 2, 6, 6)
    # input channels 0-1 feed group 0 (outputs 0-2), channels 2-3 group 1 (outputs 3-5)
    assert_equivariant(conv_t_net(), {"0": torch.tensor([1, 0, 3, 2]),
                                      "2": torch.tensor([2, 0, 1, 4, 5, 3])}, x)
    assert_equivariant(conv_t_net(), {"0": torch.tensor([2, 3, 0, 1]),
                                      "2": torch.tensor([3, 4, 5, 0, 1, 2])}, x)
    for moves in ({"0": torch.tensor([2, 1, 0, 3])}, {"2": torch.tensor([3, 1, 2, 0, 4, 5])}):
        with pytest.raises(ValueError, match="automorphism"):  # across groups
            check_symmetry(conv_t_net(), moves, x)
    assert_sensitive(conv_t_net(), {"output": torch.tensor([1, 0])}, x)


# ----------------------------------------------------------------- several inputs
class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(3, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.out(torch.relu(self.a(x) + self.b(y)))


class Decoder(nn.Module):
    """``decoder(tgt, memory)``: cross-attention from one sequence to another."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(5, 8)
        self.cross = nn.MultiheadAttention(8, 2, kdim=6, vdim=7, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, tgt: Tensor, memory: Tensor, values: Tensor, mask=None) -> Tensor:
        q = self.embed(tgt)
        h, _ = self.cross(q, memory, values, key_padding_mask=mask, need_weights=False)
        return self.head(h + q)


def input_nodes(pg: ParameterGraph) -> Tensor:
    return torch.nonzero(pg.node_feat[:, 0] == int(NodeType.INPUT)).flatten()


def test_each_tensor_input_gets_its_own_input_nodes(float64):
    model = TwoInputs()
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    ins = input_nodes(pg)
    assert ins.numel() == 6
    # positions continue across inputs: x and y are never interchangeable
    assert torch.equal(pg.node_feat[ins, 2].sort().values, torch.arange(1, 7, dtype=torch.int32))
    src_a = pg.edge_index[0, : model.a.weight.numel()].unique()
    src_b = pg.edge_index[0, sum(pg.param_numels[:2]) : sum(pg.param_numels[:3])].unique()
    assert src_a.numel() == src_b.numel() == 3 and not set(src_a.tolist()) & set(src_b.tolist())
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    sigma = node_permutation(pg, {"a": torch.tensor([3, 1, 0, 2])})
    params = dict(model.named_parameters())
    moved = permute_parameters(pg, params, sigma)
    assert (functional_call(model, moved, (x, y)) - model(x, y)).abs().max() < 1e-12


def test_decoder_with_memory_and_mask(seeded):
    model = Decoder()
    model(torch.randn(2, 4, 5), torch.randn(2, 3, 6), torch.randn(2, 3, 7))
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    assert input_nodes(pg).numel() == 5 + 6 + 7
    assert pg.node_feat[input_nodes(pg), 2].unique().numel() == 18


class EncoderBlock(nn.Module):
    """torchvision's ViT block: ``self_attention(x, x, x, need_weights=False)``."""

    def __init__(self, dim: int = 8, heads: int = 2):
        super().__init__()
        self.embed = nn.Linear(3, dim)
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 16), nn.GELU(), nn.Linear(16, dim))
        self.head = nn.Linear(dim, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        h = self.ln_1(x)
        h, _ = self.self_attention(h, h, h, need_weights=False, attn_mask=MASK)
        x = x + h
        return self.head(x + self.mlp(self.ln_2(x)))


def test_attention_called_with_keywords_keeps_its_head_symmetry(float64):
    from graphs.permutation import head_moves

    model = EncoderBlock()
    moves = head_moves(ParameterGraph.from_module(model), "self_attention", torch.tensor([1, 0]))
    moves["mlp.0"] = torch.randperm(16)
    assert_equivariant(model, moves, torch.randn(2, 5, 3))
