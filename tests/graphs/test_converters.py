"""``register_converter``, the core's extension point, exercised with a layer of our own;
registration by qualified class name, and Hugging Face's ``Conv1D`` registered that way."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from graphs import EdgeType, NodeType, ParameterGraph, UnsupportedModuleError, converters
from graphs.builder import FLAT, GraphBuilder, Group
from graphs.permutation import node_permutation, permute_parameters
from graphs.tracing import trace
from tests.graphs.checks import assert_round_trip, assert_well_formed
from tests.graphs.test_gmn import assert_equivariant
from tests.graphs.test_recurrent import assert_automorphisms_keep_the_function


class LowRank(nn.Module):
    """``y = x v^T u^T + b``: a linear layer stored as factors ``u [O, R]``, ``v [R, I]``."""

    def __init__(self, d_in: int = 5, rank: int = 3, d_out: int = 4):
        super().__init__()
        self.u = nn.Parameter(torch.randn(d_out, rank))
        self.v = nn.Parameter(torch.randn(rank, d_in))
        self.bias = nn.Parameter(torch.randn(d_out))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(F.linear(x, self.v), self.u, self.bias)


class RegisteredLowRank(LowRank):
    """The same layer, given a converter by the ``converter`` fixture."""


class WideLowRank(RegisteredLowRank):
    """A subclass: it inherits its parent's converter."""

    def __init__(self):
        super().__init__(d_in=5, rank=6, d_out=4)


def low_rank(b: GraphBuilder, m: LowRank, path: str, x: Group) -> Group:
    """Inputs -> rank neurons (edges: ``v``) -> output neurons (edges: ``u``, bias node)."""

    def name(p: str) -> str:
        return f"{path}.{p}" if path else p

    b.next_layer()
    src, pos = b.resolve(x, m.v.shape[1], f"LowRank '{path}'")
    rank = b.neurons(m.v.shape[0])
    b.dense(b.add_param(name("v"), m.v), src, rank, EdgeType.LINEAR, src_pos=pos)
    b.next_layer()
    out = b.neurons(m.u.shape[0])
    b.dense(b.add_param(name("u"), m.u), rank, out, EdgeType.LINEAR)
    b.vector(b.add_param(name("bias"), m.bias), b.new_nodes(1, NodeType.BIAS), out, EdgeType.BIAS)
    b.node_groups[name("rank")] = rank
    b.node_groups[path] = out
    return Group(out, FLAT)


@pytest.fixture
def converter(monkeypatch):
    """``low_rank`` registered for RegisteredLowRank, in a registry restored afterwards."""
    monkeypatch.setattr(converters, "_REGISTRY", dict(converters._REGISTRY))
    assert converters.register_converter(RegisteredLowRank)(low_rank) is low_rank
    return low_rank


def net(layer: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), layer, nn.ReLU(), nn.Linear(4, 2))


def test_registered_layer_builds_and_round_trips_exactly(converter, seeded):
    model = net(RegisteredLowRank())
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    # 3 in + 5 hidden + bias, 3 rank + 4 out + bias, 2 out + bias
    assert (pg.num_nodes, pg.num_edges) == (3 + 5 + 1 + 3 + 4 + 1 + 2 + 1, pg.num_params)
    assert pg.node_groups["2.rank"].numel() == 3
    alone = assert_round_trip(RegisteredLowRank())  # the root module itself: no trace needed
    assert alone.param_names == ("v", "u", "bias")


def test_tracer_treats_a_registered_layer_as_a_leaf(converter):
    calls = {(n.op, str(n.target)) for n in trace(net(RegisteredLowRank())).graph.nodes}
    assert ("call_module", "2") in calls
    assert not any(op == "call_function" and "linear" in t for op, t in calls)
    inside = {(n.op, str(n.target)) for n in trace(net(LowRank())).graph.nodes}
    assert any(op == "call_function" and "linear" in t for op, t in inside)


def test_subclass_inherits_the_converter(converter, seeded):
    model = net(WideLowRank())
    pg = assert_round_trip(model)
    assert pg.node_groups["2.rank"].numel() == 6


def test_rank_permutation_is_a_symmetry(converter, seeded, float64):
    model = net(RegisteredLowRank())
    pg = ParameterGraph.from_module(model)
    sigma = node_permutation(pg, {"2.rank": torch.tensor([2, 0, 1])})
    params = dict(model.named_parameters())
    moved = permute_parameters(pg, params, sigma)
    x = torch.randn(7, 3)
    assert not torch.equal(moved["2.u"], params["2.u"])
    torch.testing.assert_close(functional_call(model, moved, (x,)), model(x), rtol=0, atol=1e-12)


class EinsumLowRank(LowRank):
    """The same layer written with einsum, which the tracer does not read."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bi,ri,or->bo", x, self.v, self.u) + self.bias


def test_functional_linear_with_bare_parameters_is_a_linear_layer(seeded, float64):
    model = net(LowRank())
    pg = assert_round_trip(model)
    sigma = node_permutation(pg, {"2.v": torch.tensor([2, 0, 1])})  # the rank neurons
    moved = permute_parameters(pg, dict(model.named_parameters()), sigma)
    x = torch.randn(7, 3)
    torch.testing.assert_close(functional_call(model, moved, (x,)), model(x), rtol=0, atol=1e-12)


def test_unregistered_layer_is_an_error_naming_it(converter):
    with pytest.raises(UnsupportedModuleError) as err:
        ParameterGraph.from_module(net(EinsumLowRank()))
    assert (err.value.path, err.value.module_type) == ("2", "EinsumLowRank")
    assert err.value.param_names[0] in {"2.u", "2.v"}
    assert "submodule '2' (EinsumLowRank)" in str(err.value)
    assert "graphs.register_converter(ModuleClass)" in str(err.value)


# ------------------------------------------------- registration by qualified class name
class NamedLowRank(LowRank):
    """Registered by name, as a layer of an optional library the core must not import."""


class WideNamed(NamedLowRank):
    def __init__(self):
        super().__init__(d_in=5, rank=6, d_out=4)


NAME = f"{__name__}.NamedLowRank"


def other(b: GraphBuilder, m: LowRank, path: str, x: Group) -> Group:
    raise AssertionError("the less specific converter was chosen")


def test_a_converter_registered_by_name_is_found_along_the_mro(converter, seeded):
    converters.register_converter(NAME)(low_rank)
    assert converters.find_converter(NamedLowRank()) is low_rank
    assert converters.find_converter(WideNamed()) is low_rank  # a subclass inherits it
    assert converters.find_converter(LowRank()) is None
    calls = {(n.op, str(n.target)) for n in trace(net(WideNamed())).graph.nodes}
    assert ("call_module", "2") in calls  # a leaf of the trace
    pg = assert_round_trip(net(WideNamed()))
    assert pg.node_groups["2.rank"].numel() == 6


def test_the_most_specific_class_wins_and_a_class_object_before_its_name(converter):
    converters.register_converter(LowRank)(other)  # a parent, by class object
    converters.register_converter(NAME)(low_rank)
    assert converters.find_converter(WideNamed()) is low_rank
    converters.register_converter(NAME)(other)
    converters.register_converter(NamedLowRank)(low_rank)  # the same class, by object
    assert converters.find_converter(NamedLowRank()) is low_rank


def test_a_name_must_be_qualified():
    with pytest.raises(ValueError, match="package.module.Class"):
        converters.register_converter("Conv1D")


# ------------------------------------------------------------ Hugging Face's Conv1D
class GPT2MLP(nn.Module):
    """GPT-2's feed-forward block between two plain layers: ``Conv1D`` stores ``W [in, out]``."""

    def __init__(self, conv1d: type, linear: bool = False):
        super().__init__()
        self.embed = nn.Linear(3, 8)
        if linear:  # the same block with nn.Linear (weights transposed)
            self.c_fc, self.c_proj = nn.Linear(8, 16), nn.Linear(16, 8)
        else:
            self.c_fc, self.c_proj = conv1d(16, 8), conv1d(8, 16)
        self.head = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        return self.head(h + self.c_proj(F.gelu(self.c_fc(h))))


def test_transformers_conv1d_is_a_linear_layer_stored_transposed(float64):
    conv1d = pytest.importorskip("transformers.pytorch_utils").Conv1D
    torch.manual_seed(0)
    model = GPT2MLP(conv1d)
    x = torch.randn(2, 5, 3)
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    assert pg.param_names == tuple(n for n, _ in model.named_parameters())
    # the edges (and values) of the nn.Linear twin holding the transposed weights
    twin = GPT2MLP(conv1d, linear=True)
    with torch.no_grad():
        for name in ("c_fc", "c_proj"):
            getattr(twin, name).weight.copy_(getattr(model, name).weight.T)
            getattr(twin, name).bias.copy_(getattr(model, name).bias)
    twin.embed.load_state_dict(model.embed.state_dict())
    twin.head.load_state_dict(model.head.state_dict())
    torch.testing.assert_close(twin(x), model(x), rtol=0, atol=1e-12)
    tg = ParameterGraph.from_module(twin)

    def edges(g: ParameterGraph, m: nn.Module) -> list[tuple]:
        value = g.encode(dict(m.named_parameters())).edge_attr[:, 0]
        rows = torch.cat([g.edge_index.T, g.edge_feat], 1).tolist()
        return sorted((*r, v) for r, v in zip(rows, value.tolist()))

    assert edges(pg, model) == edges(tg, twin)
    assert (pg.edge_feat[: pg.num_params, 0] == int(EdgeType.LINEAR)).sum() == 3 * 8 + 2 * 128 + 16
    assert_equivariant(model, {"c_fc": torch.randperm(16)}, x)
    assert assert_automorphisms_keep_the_function(model, x) >= 16
