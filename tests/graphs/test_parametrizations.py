"""Parametrized tensors (``torch.nn.utils.parametrize``): the graph holds the originals.

``weight_norm``'s direction ``v`` takes the weight's edges and its magnitude ``g`` is a gain
per neuron; ``spectral_norm``'s original takes the edges and its power-iteration vectors
follow their neurons; parametrizations that do not commute with neuron permutations are
refused.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import orthogonal, spectral_norm, weight_norm

from graphs import EdgeType, NodeType, ParameterGraph, UnsupportedModuleError
from graphs.converters import find_converter
from graphs.permutation import node_permutation, permute_parameters, permute_state_dict
from graphs.tracing import trace
from tests.graphs.checks import assert_round_trip, assert_well_formed
from tests.graphs.test_gmn import assert_equivariant
from tests.graphs.test_recurrent import assert_automorphisms_keep_the_function


def names(model: nn.Module) -> list[str]:
    return sorted(n for n, _ in model.named_parameters())


def mlp(norm, **kw) -> nn.Sequential:
    return nn.Sequential(
        norm(nn.Linear(3, 5), **kw),
        nn.Tanh(),
        norm(nn.Linear(5, 4), **kw),
        nn.ReLU(),
        nn.Linear(4, 2),
    )


def cnn(norm, **kw) -> nn.Sequential:
    return nn.Sequential(
        norm(nn.Conv2d(2, 4, 3), **kw),
        nn.ReLU(),
        norm(nn.ConvTranspose2d(4, 3, 3), **kw),
        nn.ReLU(),
        nn.Conv2d(3, 2, 1),
        nn.Flatten(),
        nn.Linear(2 * 6 * 6, 2),
    )


WEIGHT_NORMED = {
    "mlp": (lambda: mlp(weight_norm), (4, 3)),
    "mlp_dim1": (lambda: mlp(weight_norm, dim=1), (4, 3)),  # a gain per input neuron
    "mlp_whole": (lambda: mlp(weight_norm, dim=None), (4, 3)),  # one gain for the tensor
    "cnn": (lambda: cnn(weight_norm), (2, 2, 6, 6)),  # ConvTranspose: per input channel
}


@pytest.mark.parametrize("name", sorted(WEIGHT_NORMED))
def test_weight_norm_round_trips_and_keeps_its_symmetries(name, float64):
    torch.manual_seed(0)
    make, shape = WEIGHT_NORMED[name]
    model = make()
    x = torch.randn(*shape)
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    assert sorted(pg.param_names) == names(model) and "0.weight" not in pg.param_names
    assert assert_automorphisms_keep_the_function(model, x) > 0
    if name == "cnn":
        moves = {"0": torch.tensor([2, 0, 3, 1]), "2": torch.tensor([1, 2, 0])}
    else:
        moves = {"0": torch.tensor([3, 0, 4, 1, 2]), "2": torch.tensor([2, 0, 3, 1])}
    assert_equivariant(model, moves, x)


def test_weight_norm_gain_is_one_edge_per_output_neuron():
    model = mlp(weight_norm)
    pg = ParameterGraph.from_module(model)
    i = pg.param_names.index("0.parametrizations.weight.original0")
    start = sum(pg.param_numels[:i])
    edges = slice(start, start + 5)
    src, dst = pg.edge_index[:, edges]
    assert (pg.edge_feat[edges, 0] == int(EdgeType.NORM_GAMMA)).all()
    assert src.unique().numel() == 1 and int(pg.node_feat[src[0], 0]) == NodeType.NORM_GAMMA
    assert torch.equal(dst, pg.node_groups["0"])  # g[j] scales output neuron j
    # v takes the weight's edges: those of the plain layer
    plain = ParameterGraph.from_module(nn.Sequential(nn.Linear(3, 5)))
    v = pg.param_names.index("0.parametrizations.weight.original1")
    start = sum(pg.param_numels[:v])
    assert torch.equal(pg.edge_index[:, start : start + 15], plain.edge_index[:, :15])


def test_the_gain_is_what_makes_it_a_symmetry(float64):
    torch.manual_seed(0)
    model = mlp(weight_norm)
    pg = ParameterGraph.from_module(model)
    params = {n: p.detach() for n, p in model.named_parameters()}
    with torch.no_grad():  # distinct gains, so one left behind shows
        params["0.parametrizations.weight.original0"] = torch.linspace(0.5, 2, 5)[:, None]
    sigma = node_permutation(pg, {"0": torch.tensor([1, 0, 2, 3, 4])})
    moved = permute_parameters(pg, params, sigma)
    x = torch.randn(4, 3)
    ref = functional_call(model, params, (x,))
    assert (functional_call(model, moved, (x,)) - ref).abs().max() < 1e-12
    moved["0.parametrizations.weight.original0"] = params["0.parametrizations.weight.original0"]
    assert (functional_call(model, moved, (x,)) - ref).abs().max() > 1e-4


SPECTRAL = {
    "mlp": (lambda: mlp(spectral_norm), (4, 3)),
    "pointwise_conv": (
        lambda: nn.Sequential(spectral_norm(nn.Conv2d(2, 4, 1)), nn.ReLU(), nn.Conv2d(4, 2, 1)),
        (2, 2, 3, 3),
    ),
}


@pytest.mark.parametrize("name", sorted(SPECTRAL))
def test_spectral_norm_vectors_follow_their_neurons(name, float64):
    torch.manual_seed(0)
    make, shape = SPECTRAL[name]
    model = make()
    x = torch.randn(*shape)
    u = model[0].parametrizations.weight[0]._u.clone()
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    # building the graph never computes the weight (in training mode that would step _u)
    assert torch.equal(model[0].parametrizations.weight[0]._u, u)
    assert sorted(pg.param_names) == names(model)
    buf = "0.parametrizations.weight.0"
    assert torch.equal(pg.buffer_nodes[f"{buf}._u"], pg.node_groups["0"])
    assert pg.buffer_nodes[f"{buf}._v"].numel() == model[0].parametrizations.weight[0]._v.numel()
    assert assert_automorphisms_keep_the_function(model, x) > 0
    # the estimate of the norm reads _u and _v: moving the weight alone changes the function
    state = model.state_dict()
    sigma = node_permutation(pg, {"0": torch.roll(torch.arange(pg.node_groups["0"].numel()), 1)})
    moved = permute_state_dict(pg, state, sigma)
    moved[f"{buf}._u"], moved[f"{buf}._v"] = state[f"{buf}._u"], state[f"{buf}._v"]
    twin = copy.deepcopy(model)
    twin.load_state_dict(moved)
    assert (twin(x) - model(x)).abs().max() > 1e-6


class Symmetric(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.triu() + x.triu(1).mT


REFUSED = {
    "orthogonal": (
        lambda: orthogonal(nn.Linear(4, 4)),
        ["0.parametrizations.weight.original"],
        "_Orthogonal",
    ),
    "custom": (
        lambda: parametrize.register_parametrization(nn.Linear(4, 4), "weight", Symmetric()),
        ["0.parametrizations.weight.original"],
        "Symmetric",
    ),
    "chained": (
        lambda: spectral_norm(weight_norm(nn.Linear(4, 4))),
        ["0.parametrizations.weight.original0", "0.parametrizations.weight.original1"],
        r"\['_WeightNorm', '_SpectralNorm'\]",
    ),
    "spectral_conv": (
        lambda: spectral_norm(nn.Conv2d(4, 4, 3)),
        ["0.parametrizations.weight.original"],
        "_v runs over axes",
    ),
    "grouped_gain": (
        lambda: weight_norm(nn.Conv2d(4, 4, 3, groups=2), dim=1),
        ["0.parametrizations.weight.original0", "0.parametrizations.weight.original1"],
        "gain g follows axis 1",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_parametrizations_the_rule_cannot_map_are_refused(name):
    make, originals, reason = REFUSED[name]
    with pytest.raises(UnsupportedModuleError, match=reason) as err:
        ParameterGraph.from_module(nn.Sequential(make(), nn.ReLU()))
    assert err.value.param_names == originals
    assert err.value.path == "0" and err.value.module_type.startswith("Parametrized")


def test_orthogonal_original_does_not_follow_neuron_permutations(float64):
    """Why orthogonal is refused: its original read through tril and a fixed base."""
    torch.manual_seed(0)
    layer = orthogonal(nn.Linear(4, 4))
    with torch.no_grad():
        layer.parametrizations.weight.original.normal_()
    original = layer.parametrizations.weight.original.detach()
    perm = torch.tensor([1, 2, 3, 0])
    x = torch.randn(3, 4)
    ref = layer(x)[:, perm]  # output neurons permuted: the symmetry the graph would claim
    moved = {"parametrizations.weight.original": original[perm], "bias": layer.bias[perm]}
    assert (functional_call(layer, moved, (x,)) - ref).abs().max() > 1e-3


def test_a_parametrized_layer_is_traced_as_a_leaf():
    model = mlp(weight_norm)
    assert type(model[0]).__name__ == "ParametrizedLinear"
    assert find_converter(model[0]) is find_converter(nn.Linear(1, 1))
    nodes = [(n.op, str(n.target)) for n in trace(model).graph.nodes]
    assert ("call_module", "0") in nodes and ("call_module", "2") in nodes
    assert not any(op == "get_attr" for op, _ in nodes)
