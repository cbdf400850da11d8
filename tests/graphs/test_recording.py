"""The recording front end (``from_module(model, example_inputs=...)``) and the patterns
people write by hand that it follows exactly: attention split into heads, channel shuffles,
rotary-like constants, in-place writes, control flow."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from graphs import GraphConstructionError, ParameterGraph
from graphs.errors import ShapeOperationError
from graphs.features import EdgeType, NodeType
from graphs.permutation import permute_state_dict, random_automorphism
from tests.graphs.checks import assert_round_trip
from tests.graphs.models import CNN, Attention, ResNet, TinyViT, Transformer, mlp


@pytest.mark.parametrize("make, x", [
    (mlp, torch.randn(2, 5)),
    (CNN, torch.randn(2, 2, 8, 8)),
    (lambda: ResNet(), torch.randn(2, 1, 16, 16)),
    (Transformer, torch.randint(0, 11, (2, 6))),
    (TinyViT, torch.randn(2, 1, 8, 8)),
    (Attention, torch.randn(2, 5, 3)),
], ids=["mlp", "cnn", "resnet", "transformer", "vit", "mha"])
def test_a_recorded_graph_equals_the_symbolic_one(make, x, seeded):
    model = make()
    traced = ParameterGraph.from_module(model)
    recorded = ParameterGraph.from_module(model, example_inputs=x)
    for field in ("edge_index", "node_feat", "edge_feat", "tied_index"):
        assert torch.equal(getattr(traced, field), getattr(recorded, field)), field
    assert traced.param_names == recorded.param_names


class HandAttention(nn.Module):
    """Self-attention written out: q / k / v layers, heads by view, scores by matmul (or
    ``F.scaled_dot_product_attention``), heads merged by reshape."""

    def __init__(self, dim=8, heads=2, sdpa=False, fused=False):
        super().__init__()
        self.heads, self.sdpa, self.fused = heads, sdpa, fused
        self.inp = nn.Linear(3, dim)
        if fused:
            self.qkv = nn.Linear(dim, 3 * dim)
        else:
            self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.proj = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, 2)

    def forward(self, x):
        h = self.inp(x)
        b, t, d = h.shape
        if self.fused:  # timm's layout: [B, T, 3, H, D] -> [3, B, H, T, D]
            qkv = self.qkv(h).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
        else:
            q, k, v = (m(h).view(b, t, self.heads, -1).transpose(1, 2)
                       for m in (self.q, self.k, self.v))
        if self.sdpa:
            a = F.scaled_dot_product_attention(q, k, v)
        else:
            scores = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
            a = scores.softmax(-1) @ v
        a = a.transpose(1, 2).reshape(b, t, d)
        return self.out(h + self.proj(a))


def _run_permuted(model, pg, sigma, x, strict=True):
    twin = copy.deepcopy(model)
    twin.load_state_dict(permute_state_dict(pg, model.state_dict(), sigma, strict))
    with torch.no_grad():
        return twin(x)


@pytest.mark.parametrize("sdpa", [False, True], ids=["matmul", "sdpa"])
@pytest.mark.parametrize("fused", [False, True], ids=["qkv-layers", "fused-qkv"])
def test_attention_written_by_hand_gets_heads_and_only_true_symmetries(sdpa, fused, seeded,
                                                                       float64):
    model = HandAttention(sdpa=sdpa, fused=fused)
    x = torch.randn(3, 5, 3)
    pg = assert_round_trip(model, x[:1])
    types = pg.node_feat[:, 0]
    assert int((types == int(NodeType.HEAD)).sum()) == 2
    assert int((pg.edge_feat[:, 0] == int(EdgeType.QK_PAIR)).sum()) == 8  # q_i - k_i
    ref = model(x)
    for seed in range(2):
        sigma = random_automorphism(pg, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(_run_permuted(model, pg, sigma, x), ref, rtol=0, atol=1e-12)
    q = pg.node_groups["qkv" if fused else "q"][:8]
    swap = torch.arange(pg.num_nodes)
    swap[q[0]], swap[q[-1]] = q[-1], q[0]  # a query dimension into the other head
    with pytest.raises(ValueError, match="automorphism"):
        permute_state_dict(pg, model.state_dict(), swap)
    assert (_run_permuted(model, pg, swap, x, strict=False) - ref).abs().max() > 1e-6


def test_a_head_permutation_of_hand_written_attention_is_a_symmetry(seeded, float64):
    model = HandAttention()
    x = torch.randn(3, 5, 3)
    pg = ParameterGraph.from_module(model, example_inputs=x[:1])
    sigma = torch.arange(pg.num_nodes)
    for name in ("q", "k", "v"):  # head 0 <-> head 1, each dimension with it
        ids = pg.node_groups[name]
        sigma[ids] = rearrange(ids, "(h d) -> h d", h=2).flip(0).flatten()
    heads = torch.nonzero(pg.node_feat[:, 0] == int(NodeType.HEAD)).flatten()
    sigma[heads] = heads.flip(0)
    torch.testing.assert_close(_run_permuted(model, pg, sigma, x), model(x), rtol=0, atol=1e-12)


class Shuffle(nn.Module):
    """ShuffleNet's unit: split channels, convolve one half, concatenate, shuffle."""

    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Conv2d(2, c, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(c // 2, c // 2, 1), nn.ReLU())
        self.head = nn.Conv2d(c, 3, 1)

    def forward(self, x):
        x = self.stem(x)
        a, b = x.chunk(2, dim=1)
        x = torch.cat([a, self.branch(b)], dim=1)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.head(x).mean((2, 3))


def test_a_channel_shuffle_is_followed_exactly(seeded, float64):
    model = Shuffle()
    x = torch.randn(2, 2, 6, 6)
    pg = assert_round_trip(model, x[:1])
    ref = model(x)
    sigma = random_automorphism(pg, torch.Generator().manual_seed(0))
    assert (sigma != torch.arange(pg.num_nodes)).any()
    torch.testing.assert_close(_run_permuted(model, pg, sigma, x), ref, rtol=0, atol=1e-12)


class Scaled(nn.Module):
    """A constant that treats neurons differently (like a rotary table) pins them."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)) * torch.arange(1.0, 5.0))


def test_a_constant_varying_along_neurons_pins_them(seeded):
    pg = ParameterGraph.from_module(Scaled(), example_inputs=torch.randn(1, 3))
    hidden = pg.node_groups["a"]
    assert pg.node_feat[hidden, 2].tolist() == [1, 2, 3, 4]
    swap = torch.arange(pg.num_nodes)
    swap[hidden[0]], swap[hidden[1]] = hidden[1], hidden[0]
    with pytest.raises(ValueError, match="automorphism"):
        permute_state_dict(pg, Scaled().state_dict(), swap)


class GroupedQuery(HandAttention):
    def forward(self, x):
        h = self.inp(x)
        b, t, d = h.shape
        q = self.q(h).view(b, t, 2, -1).transpose(1, 2)
        k, v = (m(h)[..., :4].view(b, t, 1, -1).transpose(1, 2).expand(b, 2, t, 4)
                for m in (self.k, self.v))
        a = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.out(self.proj(a.transpose(1, 2).reshape(b, t, d)))


class TokenMixing(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.mix, self.b = nn.Linear(3, 4), nn.Linear(5, 5), nn.Linear(4, 2)

    def forward(self, x):  # [B, 5 tokens, 3]
        return self.b(self.mix(self.a(x).transpose(1, 2)).transpose(1, 2))


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        h[:, 0] = 0.0
        return self.b(h)


class GroupedQuerySDPA(HandAttention):
    def forward(self, x):
        h = self.inp(x)
        b, t, d = h.shape
        q = self.q(h).view(b, t, 2, -1).transpose(1, 2)
        k, v = (m(h)[..., :4].view(b, t, 1, -1).transpose(1, 2) for m in (self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return self.out(self.proj(a.transpose(1, 2).reshape(b, t, d)))


@pytest.mark.parametrize("make", [GroupedQuery, GroupedQuerySDPA], ids=["repeat", "sdpa"])
def test_grouped_query_heads_share_keys_and_values_and_permute_within_their_group(
        make, seeded, float64):
    """Two query heads read one key / value head (Llama's repeat_kv, or SDPA's enable_gqa):
    they may be exchanged (with their outputs), and nothing else may move across heads."""
    model = make()
    x = torch.randn(3, 5, 3)
    pg = ParameterGraph.from_module(model, example_inputs=x[:1])
    assert int((pg.node_feat[:, 0] == int(NodeType.HEAD)).sum()) == 2
    heads = torch.nonzero(pg.node_feat[:, 0] == int(NodeType.HEAD)).flatten()
    ref = model(x)
    moved_heads = False
    for seed in range(4):
        sigma = random_automorphism(pg, torch.Generator().manual_seed(seed))
        moved_heads |= bool((sigma[heads] != heads).any())
        torch.testing.assert_close(_run_permuted(model, pg, sigma, x), ref, rtol=0, atol=1e-12)
    assert moved_heads


def test_token_mixing_reads_positions_and_gives_them_back(seeded, float64):
    """MLP-Mixer's token MLP: a Linear over the token axis reads fixed position nodes, its
    hidden neurons permute, its outputs are tokens again (pinned), channels pass through."""
    model = TokenMixing()
    x = torch.randn(3, 5, 3)
    pg = assert_round_trip(model, x[:1])
    assert int((pg.node_feat[:, 0] == int(NodeType.POSITION)).sum()) == 5
    assert pg.node_feat[pg.node_groups["mix"], 2].tolist() == [1, 2, 3, 4, 5]
    ref = model(x)
    sigma = random_automorphism(pg, torch.Generator().manual_seed(0))
    assert (sigma[pg.node_groups["a"]] != pg.node_groups["a"]).any()  # channels move
    torch.testing.assert_close(_run_permuted(model, pg, sigma, x), ref, rtol=0, atol=1e-12)
    tokens = pg.node_groups["mix"]
    swap = torch.arange(pg.num_nodes)
    swap[tokens[0]], swap[tokens[1]] = tokens[1], tokens[0]
    with pytest.raises(ValueError, match="automorphism"):
        permute_state_dict(pg, model.state_dict(), swap)


@pytest.mark.parametrize("model, x, op, words", [
    (InPlace(), torch.randn(1, 3), "__setitem__", "in place"),
], ids=["in-place"])
def test_what_the_recorder_cannot_follow_is_refused_by_name(model, x, op, words):
    with pytest.raises(ShapeOperationError, match=words) as err:
        ParameterGraph.from_module(model, example_inputs=x)
    assert err.value.op == op
    assert "test_recording.py" in err.value.line  # the source line that does it


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h) if bool(h.sum() > -1e9) else self.c(h)


def test_control_flow_on_values_records_the_path_taken():
    model = Branchy()
    with pytest.raises(GraphConstructionError):  # symbolic tracing cannot branch on values
        ParameterGraph.from_module(model)
    with pytest.raises(GraphConstructionError, match=r"c\.weight"):  # the branch not taken
        ParameterGraph.from_module(model, example_inputs=torch.randn(1, 3))


def test_a_forward_that_fails_on_the_inputs_names_the_model():
    with pytest.raises(GraphConstructionError, match="running Sequential on the example inputs"):
        ParameterGraph.from_module(mlp(), example_inputs=torch.randn(1, 7))
    model = mlp()
    before = {n: p.clone() for n, p in model.named_parameters()}
    ParameterGraph.from_module(model, example_inputs=torch.randn(1, 5))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert "forward" not in vars(model[0])  # the recorder leaves no patch behind
