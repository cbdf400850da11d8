"""``register_converter``, the core's extension point, exercised with a layer of our own."""

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


def test_unregistered_layer_is_an_error_naming_it(converter):
    with pytest.raises(UnsupportedModuleError) as err:
        ParameterGraph.from_module(net(LowRank()))
    assert (err.value.path, err.value.module_type) == ("2", "LowRank")
    assert err.value.param_names[0] in {"2.u", "2.v"}
    assert "submodule '2' (LowRank)" in str(err.value)
    assert "graphs.register_converter(ModuleClass)" in str(err.value)
