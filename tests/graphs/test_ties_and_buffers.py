"""Tied weights (one tensor, one set of entries) and buffers that follow neurons."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from graphs import GMN, ParameterGraph
from graphs.params import detach
from graphs.permutation import (
    edge_permutation,
    node_permutation,
    permute_parameters,
    permute_state_dict,
)
from tests.graphs import models
from tests.graphs.checks import assert_round_trip, assert_well_formed

pytestmark = pytest.mark.usefixtures("float64")


class TiedLM(nn.Module):
    """Embedding -> MLP -> output head whose weight *is* the embedding matrix."""

    def __init__(self, vocab: int = 7, dim: int = 5, hidden: int = 6):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens):
        return self.head(self.fc2(torch.relu(self.fc1(self.emb(tokens)))))


class Twice(nn.Module):
    """One Linear module called twice in forward."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(torch.tanh(self.fc(torch.tanh(self.fc(x)))))


TIED = {
    "lm": (TiedLM, lambda: torch.randint(0, 7, (3, 4)), 7 * 5),
    "twice": (Twice, lambda: torch.randn(3, 4), 4 * 4 + 4),
}


def random_gmn(seed: int = 0) -> GMN:
    torch.manual_seed(seed)
    gmn = GMN(2, 1, hidden=16, layers=2).double()
    nn.init.normal_(gmn.edge_out.weight)
    nn.init.normal_(gmn.edge_out.bias)
    return gmn


@pytest.mark.parametrize("name", sorted(TIED))
def test_a_tied_tensor_is_one_set_of_entries(name):
    make, _, tied = TIED[name]
    model = make()
    pg = assert_round_trip(model)  # names, entries = distinct elements, exact round trip
    assert_well_formed(pg)
    assert pg.param_names == tuple(n for n, _ in model.named_parameters())
    assert pg.num_params == sum(p.numel() for p in model.parameters())
    assert pg.num_tied == tied
    if name == "lm":
        assert pg.param_aliases == {"head.weight": "emb.weight"}
        # the head's edges (fc2 neurons -> outputs) carry the embedding matrix, row-major
        w = model.emb.weight
        data = pg.encode(dict(model.named_parameters()))
        p = pg.num_params
        assert torch.equal(data.edge_attr[p : p + tied, 0], w.detach().flatten())
        head_src = pg.edge_index[0, p : p + tied].reshape(w.shape)
        assert torch.equal(head_src[0], pg.node_groups["fc2"])


@pytest.mark.parametrize("name", sorted(TIED))
def test_gmn_output_covers_named_parameters_and_averages_tied_edges(name):
    make, _, tied = TIED[name]
    model = make()
    pg = ParameterGraph.from_module(model)
    params = detach(dict(model.named_parameters()))
    grads = {k: torch.randn_like(v) for k, v in params.items()}
    gmn = random_gmn()
    out = gmn(pg, params, grads)
    assert list(out) == [n for n, _ in model.named_parameters()]
    assert all(out[n].shape == p.shape for n, p in params.items())
    edge = gmn.forward_data(pg.encode(params, grads)).edge[:, 0]
    p = pg.num_params
    want = edge[:p].clone()
    want[pg.tied_index] += edge[p : p + tied]  # each tied entry has exactly two edges here
    want[pg.tied_index] /= 2
    got = torch.cat([out[n].flatten() for n in pg.param_names])
    assert torch.allclose(got, want, atol=1e-12)
    assert not torch.allclose(got, edge[:p]), "the further uses' outputs must count"
    # stacked populations and mixed batches reduce the same way
    stacked = gmn(pg, {k: v[None].repeat(2, *[1] * v.dim()) for k, v in params.items()},
                  {k: v[None].repeat(2, *[1] * v.dim()) for k, v in grads.items()})
    assert all(torch.allclose(stacked[n][1], out[n], atol=1e-10) for n in out)
    (batched,), _ = gmn.forward_batch([pg], [(params, grads)])
    assert all(torch.allclose(batched[n], out[n], atol=1e-10) for n in out)


@pytest.mark.parametrize("name", sorted(TIED))
def test_gmn_optimizer_steps_and_keeps_the_tie(name):
    from lopt import GMNOptimizer
    from tests.lopt.helpers import random_lopt

    make, inputs, _ = TIED[name]
    model = make()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = GMNOptimizer(model, checkpoint=random_lopt())
    for _ in range(2):
        opt.zero_grad()
        model(inputs()).square().mean().backward()
        opt.step()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    if name == "lm":
        assert model.head.weight is model.emb.weight
        assert not torch.equal(before["emb.weight"], model.emb.weight)


def test_tied_embedding_symmetry_must_move_both_uses():
    model = TiedLM()
    pg = ParameterGraph.from_module(model)
    tokens = torch.randint(0, 7, (3, 4))
    g = torch.Generator().manual_seed(0)
    dims, hidden = torch.randperm(5, generator=g), torch.randperm(6, generator=g)
    # the embedding's dims and the head's inputs (fc2's outputs) are one tensor's columns
    sigma = node_permutation(pg, {"emb": dims, "fc2": dims, "fc1": hidden})
    params = detach(dict(model.named_parameters()))
    grads = {k: torch.randn_like(v) for k, v in params.items()}
    p2 = permute_parameters(pg, params, sigma)
    assert not torch.equal(p2["emb.weight"], params["emb.weight"])
    out = functional_call(model, p2, (tokens,))
    assert torch.allclose(out, model(tokens), atol=1e-12)
    gmn = random_gmn()
    moved = permute_parameters(pg, gmn(pg, params, grads), sigma)
    after = gmn(pg, p2, permute_parameters(pg, grads, sigma))
    assert all(torch.allclose(moved[n], after[n], atol=1e-8) for n in moved)
    # moving only the embedding's dims is a graph automorphism edge by edge, but the two
    # uses of the tied tensor would disagree: not a symmetry
    sigma = node_permutation(pg, {"emb": dims})
    with pytest.raises(ValueError, match="tied"):
        edge_permutation(pg, sigma)
    p3 = permute_parameters(pg, params, sigma, strict=False)
    assert not torch.allclose(functional_call(model, p3, (tokens,)), model(tokens), atol=1e-6)


def _within_groups(n: int, groups: int, g: torch.Generator) -> torch.Tensor:
    k = n // groups
    return torch.cat([torch.randperm(k, generator=g) + i * k for i in range(groups)])


def test_permuted_state_dict_keeps_a_trained_batchnorm_network():
    torch.manual_seed(0)
    model = models.CNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 2, 8, 8) * 2 + 1, torch.randint(0, 3, (16,))
    for _ in range(3):  # running statistics become non-trivial
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    assert not torch.allclose(model.bn1.running_mean, torch.zeros(4))
    pg = ParameterGraph.from_module(model)
    assert set(pg.buffer_nodes) == {f"bn{i}.{s}" for i in (1, 2)
                                    for s in ("running_mean", "running_var")}
    assert torch.equal(pg.buffer_nodes["bn2.running_var"], pg.node_groups["conv2"])
    assert set(pg.to("cpu").buffer_nodes) == set(pg.buffer_nodes)

    g = torch.Generator().manual_seed(1)  # a random automorphism: within conv2's 2 groups
    sigma = node_permutation(pg, {"conv1": _within_groups(4, 2, g),
                                  "conv2": _within_groups(6, 2, g)})
    edge_permutation(pg, sigma)  # strict: an automorphism
    state = model.state_dict()
    moved = permute_state_dict(pg, state, sigma)
    assert set(moved) == set(state)
    assert torch.equal(moved["bn1.num_batches_tracked"], state["bn1.num_batches_tracked"])
    assert not torch.equal(moved["bn1.running_mean"], state["bn1.running_mean"])
    twin = copy.deepcopy(model)
    twin.load_state_dict(moved)
    ref = model(x)
    assert torch.allclose(twin(x), ref, atol=1e-5)
    # parameters alone (the old behaviour) leave the statistics behind: the function changes
    params_only = {**state, **permute_parameters(pg, dict(model.named_parameters()), sigma)}
    twin.load_state_dict(params_only)
    assert (twin(x) - ref).abs().max() > 1e-3


def test_permuted_state_dict_fills_aliases_of_tied_tensors():
    model = TiedLM()
    pg = ParameterGraph.from_module(model)
    dims = torch.randperm(5)
    sigma = node_permutation(pg, {"emb": dims, "fc2": dims})
    state = model.state_dict()
    assert "head.weight" in state
    moved = permute_state_dict(pg, state, sigma)
    assert torch.equal(moved["head.weight"], moved["emb.weight"])
    twin = copy.deepcopy(model)
    twin.load_state_dict(moved)
    tokens = torch.randint(0, 7, (2, 3))
    assert torch.allclose(twin(tokens), model(tokens), atol=1e-12)
