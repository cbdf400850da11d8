"""NeuronGMN: exact equivariance on real architectures, its neuron graph against a brute-force
one, flat / dict / stacked calls agreeing, a fresh net outputting zeros, and torch.func."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from graphs import NeuronGMN, ParameterGraph
from graphs.neuron_gmn import _neighbour_mean, _structure
from graphs.permutation import permute_parameters, random_automorphism
from tasks import get_task
from tests.graphs import models


class TiedLM(nn.Module):
    """Embedding -> MLP -> output layer tied to the embedding (a tensor used twice)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 6)
        self.fc = nn.Linear(6, 6)
        self.out = nn.Linear(6, 7, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, tokens):
        return self.out(torch.tanh(self.fc(self.emb(tokens))))


def _random_net(in_channels: int, out_channels: int = 2, context: int = 0, seed: int = 0,
                **kwargs) -> NeuronGMN:
    torch.manual_seed(seed)
    net = NeuronGMN(in_channels, out_channels, hidden=12, context_channels=context,
                    **kwargs).double()
    with torch.no_grad():  # zero heads make every output 0: give the net real weights
        for p in net.parameters():
            p.normal_(0, 0.4)
    return net


ARCHITECTURES = {
    "mlp": (lambda: models.mlp(), None),
    "cnn_batchnorm": (lambda: get_task("digits_cnn").make_model(0), None),
    "resnet": (lambda: get_task("digits_resnet").make_model(0), None),
    "vit": (lambda: get_task("digits_vit").make_model(0), None),
    "transformer": (lambda: get_task("seq_transformer").make_model(0), None),
    "groupnorm": (lambda: models.GroupNormNet(), None),
}


CASES = [(arch, 0) for arch in sorted(ARCHITECTURES)] + [("cnn_batchnorm", 4), ("vit", 4)]


@pytest.mark.parametrize(("arch", "entry_hidden"), CASES)
def test_exactly_equivariant_to_sampled_automorphisms(arch, entry_hidden):
    build, example = ARCHITECTURES[arch]
    model = build().double()
    pg = ParameterGraph.from_module(model, example_inputs=example)
    net = _random_net(3, context=2, entry_hidden=entry_hidden)
    gen = torch.Generator().manual_seed(0)
    feats = [{n: torch.randn(s, generator=gen, dtype=torch.float64)
              for n, s in zip(pg.param_names, pg.param_shapes)} for _ in range(3)]
    context = torch.randn(2, generator=gen, dtype=torch.float64)
    out = net(pg, *feats, context=context)
    sigma = random_automorphism(pg, gen)
    assert (sigma != torch.arange(pg.num_nodes)).any(), "the sample moved nothing"
    moved = net(pg, *[permute_parameters(pg, f, sigma) for f in feats], context=context)
    expected = permute_parameters(pg, out, sigma)
    for name in out:
        torch.testing.assert_close(moved[name], expected[name], rtol=0, atol=1e-10)
    # sensitivity: the outputs are not simply invariant (entries of one tensor differ)
    assert max(float(v.detach().std()) for v in out.values() if v[..., 0].numel() > 1) > 1e-3


@pytest.mark.parametrize(("arch", "entry_hidden"), [*CASES, ("tied", 0)])
def test_the_one_graph_no_grad_path_equals_the_general_one(arch, entry_hidden):
    """Without autograd, one graph takes 1-D kernels (segment sums, index_select into a
    buffer, ``out=``): the same numbers as the batched scatter / gather path."""
    if arch == "tied":
        model = TiedLM().double()
        pg = ParameterGraph.from_module(model, torch.zeros(1, 3, dtype=torch.long))
    else:
        build, example = ARCHITECTURES[arch]
        pg = ParameterGraph.from_module(build().double(), example_inputs=example)
    net = _random_net(3, context=2, entry_hidden=entry_hidden)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, pg.num_params, generator=gen, dtype=torch.float64)
    context = torch.randn(2, generator=gen, dtype=torch.float64)
    general = net(pg, x, context=context)  # grad enabled: the batched path
    assert general.requires_grad
    with torch.no_grad():
        fast = net(pg, x, context=context)
        buffer = torch.full((1, 2, pg.num_params), float("nan"), dtype=torch.float64)
        into = net.forward_flat(pg, x, context, out=buffer)
    assert into is buffer
    torch.testing.assert_close(fast, general.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(buffer, general.detach(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="out must be"):
        net.forward_flat(pg, x, context, out=buffer[:, :1])


def test_neuron_graph_blocks_match_a_brute_force_aggregation():
    model = get_task("digits_resnet").make_model(0).double()
    pg = ParameterGraph.from_module(model)
    s = _structure(pg, torch.device("cpu"), 8)
    assert s.num_blocks > 0 and s.pair_src.numel() > 0  # both kinds are exercised
    # brute force: every tensor's distinct neuron pairs, then the pairs of all other edges
    src, dst = pg.edge_index
    pairs, offset = [], 0
    for numel in pg.param_numels:
        key = torch.unique(src[offset: offset + numel] * pg.num_nodes + dst[offset: offset + numel])
        pairs.append(key)
        offset += numel
    pairs.append(torch.unique(src[offset:] * pg.num_nodes + dst[offset:]))
    key = torch.cat(pairs)
    ps, pd = key // pg.num_nodes, key % pg.num_nodes
    z = torch.randn(2, pg.num_nodes, 5, dtype=torch.float64)
    for incoming, frm, to in ((True, ps, pd), (False, pd, ps)):
        total = torch.zeros_like(z).index_add(1, to, z[:, frm])
        count = torch.bincount(to, minlength=pg.num_nodes).clamp(min=1).double()
        torch.testing.assert_close(_neighbour_mean(z, s, incoming), total / count[:, None])


def test_fresh_net_outputs_zeros_and_dict_flat_stacked_calls_agree():
    model = get_task("digits_cnn").make_model(0).double()
    pg = ParameterGraph.from_module(model)
    fresh = NeuronGMN(2, 3).double()
    feats = [{n: torch.randn(4, *s, dtype=torch.float64)
              for n, s in zip(pg.param_names, pg.param_shapes)} for _ in range(2)]
    with torch.no_grad():
        assert all(float(v.abs().max()) == 0 for v in fresh(pg, *feats).values())
    net = _random_net(2, 3)
    stacked = net(pg, *feats)
    for b in range(4):
        one = net(pg, *[{n: v[b] for n, v in f.items()} for f in feats])
        for n, shape in zip(pg.param_names, pg.param_shapes):
            assert one[n].shape == (*shape, 3)
            torch.testing.assert_close(stacked[n][b], one[n], rtol=0, atol=1e-12)
    flat = torch.stack([torch.cat([f[n].reshape(4, -1) for n in pg.param_names], 1)
                        for f in feats], 1)
    out = net(pg, flat)  # one [B, C, P] tensor: the flat entries
    assert out.shape == (4, 3, pg.num_params)
    torch.testing.assert_close(out[2, :, :8].T, stacked[pg.param_names[0]][2].reshape(-1, 3)[:8])


def test_a_tied_tensor_gets_the_mean_output_of_its_uses():
    model = TiedLM().double()
    pg = ParameterGraph.from_module(model, example_inputs=torch.zeros(1, 3, dtype=torch.long))
    assert pg.num_tied == model.emb.weight.numel()
    net = _random_net(2, 1)
    x = torch.randn(1, 2, pg.num_params, dtype=torch.float64)
    out = net(pg, x)
    # the same net on a graph whose second use is dropped sees other neighbours: the tied
    # entries' outputs combine both uses (and stay finite), the shape is the parameters'
    assert out.shape == (1, 1, pg.num_params) and bool(torch.isfinite(out).all())
    s = _structure(pg, torch.device("cpu"), net.config.feature_dim)
    assert torch.equal(s.entry_count[: model.emb.weight.numel()],
                       torch.full((model.emb.weight.numel(),), 2.0))


def test_message_passing_reaches_other_tensors():
    model = models.mlp()
    pg = ParameterGraph.from_module(model)
    net = _random_net(1, 1, read_channels=(0,))
    feats = {n: torch.zeros(s, dtype=torch.float64) for n, s in zip(pg.param_names,
                                                                     pg.param_shapes)}
    base = net(pg, feats)
    first = pg.param_names[0]
    feats[first] = feats[first].clone()
    feats[first][0, 0] = 1.0  # one entry of the first layer
    moved = net(pg, feats)
    last = pg.param_names[-1]  # two layers away
    assert float((moved[last] - base[last]).detach().abs().max()) > 1e-6


def test_torch_func_grad_and_vmap_over_weights():
    model = models.mlp()
    pg = ParameterGraph.from_module(model)
    net = _random_net(2, 2, context=1)
    x = torch.randn(1, 2, pg.num_params, dtype=torch.float64)
    ctx = torch.ones(1, dtype=torch.float64)
    weights = {k: v.detach() for k, v in net.named_parameters()}

    def loss(w):
        return functional_call(net, w, (pg, x), {"context": ctx}).square().sum()

    g = grad(loss)(weights)
    assert set(g) == set(weights) and all(bool(torch.isfinite(v).all()) for v in g.values())
    assert float(g["entry_out.weight"].abs().sum()) > 0
    batched = {k: torch.stack([v, 2 * v]) for k, v in weights.items()}
    many = vmap(loss)(batched)
    torch.testing.assert_close(many[0], loss(weights))


def test_bad_calls_name_the_problem():
    model = models.mlp()
    pg = ParameterGraph.from_module(model)
    with pytest.raises(ValueError, match="read_channels"):
        NeuronGMN(2, 1, read_channels=(2,))
    net = NeuronGMN(2, 1, context_channels=1)
    with pytest.raises(ValueError, match="expects entries"):
        net(pg, torch.zeros(1, 3, pg.num_params))
    with pytest.raises(ValueError, match="context"):
        net(pg, torch.zeros(1, 2, pg.num_params))
    with pytest.raises(ValueError, match="in_channels=2"):
        net(pg, dict(model.named_parameters()))
