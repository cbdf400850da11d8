import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from graphs import GMN, ParameterGraph
from graphs.params import detach, member, stack
from graphs.permutation import head_moves, node_permutation, permute_parameters
from tests.graphs import models

pytestmark = pytest.mark.usefixtures("float64")


def random_gmn(in_channels=2, out_channels=1, seed=0, **kw) -> GMN:
    """A GMN whose zero-initialised output head is randomized, so outputs are non-trivial."""
    torch.manual_seed(seed)
    gmn = GMN(in_channels, out_channels, hidden=16, layers=3, **kw).double()
    nn.init.normal_(gmn.edge_out.weight)
    nn.init.normal_(gmn.edge_out.bias)
    return gmn


def features(model: nn.Module, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    params = detach(dict(model.named_parameters()))
    grads = {k: torch.randn(v.shape, generator=g) for k, v in params.items()}
    return params, grads


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def check_symmetry(model, moves, inputs, symmetric=True, **gmn_kw):
    """Move parameters along a node permutation; compare network and GMN outputs."""
    model = models.randomize_norms(model).double()
    pg = ParameterGraph.from_module(model)
    sigma = node_permutation(pg, moves)
    assert not torch.equal(sigma, torch.arange(pg.num_nodes))
    params, grads = features(model)
    p2 = permute_parameters(pg, params, sigma, strict=symmetric)
    g2 = permute_parameters(pg, grads, sigma, strict=symmetric)
    net_diff = (functional_call(model, p2, (inputs,)) - model(inputs)).abs().max().item()
    gmn = random_gmn(**gmn_kw)
    out = gmn(pg, params, grads)
    out_perm = gmn(pg, p2, g2)
    gmn_diff = max_diff(permute_parameters(pg, out, sigma, strict=symmetric), out_perm)
    emb_diff = (gmn.embed(pg, params, grads) - gmn.embed(pg, p2, g2)).abs().max().item()
    return net_diff, gmn_diff, emb_diff


def assert_equivariant(model, moves, inputs, **gmn_kw):
    net_diff, gmn_diff, emb_diff = check_symmetry(model, moves, inputs, **gmn_kw)
    assert net_diff < 1e-9, "the permutation helper broke the network's function"
    assert gmn_diff < 1e-6 and emb_diff < 1e-6


def assert_sensitive(model, moves, inputs):
    # An untrained GMN reacts weakly to a single swap (1e-5-ish here), but equivariant
    # diffs are at float64 round-off (1e-15): the thresholds sit orders above both.
    net_diff, gmn_diff, emb_diff = check_symmetry(model, moves, inputs, symmetric=False)
    assert net_diff > 1e-6, "not a non-symmetry after all"
    assert gmn_diff > 1e-7 and emb_diff > 1e-10


def test_fresh_gmn_outputs_zero():
    model = models.mlp()
    pg = ParameterGraph.from_module(model)
    out = GMN(2, 1)(pg, *features(model))
    assert all(torch.count_nonzero(v) == 0 for v in out.values())
    assert {k: v.shape for k, v in out.items()} == {
        k: v.shape for k, v in model.named_parameters()
    }


def test_multichannel_output_has_trailing_dim():
    model = models.mlp()
    pg = ParameterGraph.from_module(model)
    out = random_gmn(out_channels=3)(pg, *features(model))
    assert out["0.weight"].shape == (*model[0].weight.shape, 3)


def test_output_capacity_expansion_heads_start_at_zero_and_stay_equivariant():
    model = models.mlp((5, 8, 7, 3))
    pg = ParameterGraph.from_module(model)
    params, grads = features(model)
    gmn = GMN(2, 2, hidden=16, layers=2, output_heads=4).double()
    assert all(torch.count_nonzero(v) == 0 for v in gmn(pg, params, grads).values())
    assert not hasattr(gmn, "edge_out") and gmn.edge_heads.shape == (4, 16, 2)
    nn.init.normal_(gmn.edge_heads)
    out = gmn(pg, params, grads)
    sigma = node_permutation(pg, {"0": torch.randperm(8), "2": torch.randperm(7)})
    moved = gmn(pg, permute_parameters(pg, params, sigma), permute_parameters(pg, grads, sigma))
    assert max_diff(permute_parameters(pg, out, sigma), moved) < 1e-9
    assert max(float(v.std()) for v in out.values()) > 1e-3  # not trivially equivariant
    with pytest.raises(ValueError, match="output_heads"):
        GMN(1, 1, output_heads=0)


def test_mlp_hidden_permutation():
    model = models.mlp((5, 8, 7, 3))
    moves = {"0": torch.randperm(8), "2": torch.randperm(7)}
    assert_equivariant(model, moves, torch.randn(4, 5))


def test_cnn_channels_through_batchnorm_and_grouped_conv():
    # conv2 has 2 groups: channels move within their group, or whole groups swap
    moves = {"conv1": torch.tensor([1, 0, 3, 2]), "conv2": torch.tensor([2, 0, 1, 5, 3, 4])}
    assert_equivariant(models.CNN(), moves, torch.randn(2, 2, 8, 8))
    moves = {"conv1": torch.tensor([2, 3, 0, 1]), "conv2": torch.tensor([3, 4, 5, 0, 1, 2])}
    assert_equivariant(models.CNN(), moves, torch.randn(2, 2, 8, 8))
    with pytest.raises(ValueError, match="automorphism"):  # across groups: not a symmetry
        check_symmetry(models.CNN(), {"conv1": torch.tensor([2, 1, 0, 3])}, torch.randn(1, 2, 8, 8))


def test_resnet_channels_across_residual_shortcuts():
    model = models.ResNet(width=4)
    moves = {"stem": torch.randperm(4), "block1.conv1": torch.randperm(4),
             "block2.conv2": torch.randperm(8)}
    pg = ParameterGraph.from_module(model)
    sigma = node_permutation(pg, moves)
    tied = pg.node_groups["block1.conv2"]
    assert not torch.equal(sigma[tied], tied), "the residual tie moved block1.conv2 too"
    assert_equivariant(model, moves, torch.randn(2, 1, 8, 8))


def test_attention_head_permutation():
    model = models.Attention(8, 2)
    moves = head_moves(ParameterGraph.from_module(model), "attn", torch.tensor([1, 0]))
    assert torch.equal(moves["attn.q"], torch.tensor([4, 5, 6, 7, 0, 1, 2, 3]))
    assert_equivariant(model, moves, torch.randn(2, 5, 3))


def test_dimensions_within_a_head():
    within = torch.tensor([1, 3, 0, 2, 4, 5, 6, 7])  # head 0's dims shuffled, head 1 kept
    moves = {"attn.q": within, "attn.k": within,
             "attn.v": torch.tensor([0, 1, 2, 3, 7, 4, 5, 6])}  # values move on their own
    assert_equivariant(models.Attention(8, 2), moves, torch.randn(2, 5, 3))


def test_transformer_heads_and_hidden():
    model = models.Transformer(dim=8, heads=2, depth=1)
    pg = ParameterGraph.from_module(model)
    moves = head_moves(pg, "encoder.layers.0.self_attn", torch.tensor([1, 0]))
    moves["encoder.layers.0.linear1"] = torch.randperm(16)
    tokens = torch.randint(0, 11, (2, 6))
    assert_equivariant(model, moves, tokens)


def test_input_and_output_permutations_are_noticed():
    assert_sensitive(models.mlp((5, 8, 3)), {"input": torch.tensor([1, 0, 2, 3, 4])},
                     torch.randn(4, 5))
    assert_sensitive(models.mlp((5, 8, 3)), {"output": torch.tensor([2, 0, 1])},
                     torch.randn(4, 5))


def test_swapping_dimensions_across_heads_is_noticed():
    swap = torch.tensor([4, 1, 2, 3, 0, 5, 6, 7])  # dim 0 of head 0 <-> dim 0 of head 1
    moves = {"attn.q": swap, "attn.k": swap}
    assert_sensitive(models.Attention(8, 2), moves, torch.randn(2, 5, 3))


def test_swapping_channels_across_groupnorm_groups_is_noticed():
    moves = {"conv": torch.tensor([2, 1, 0, 3])}  # channels 0 (group 0) and 2 (group 1)
    assert_sensitive(models.GroupNormNet(), moves, torch.randn(2, 1, 6, 6))
    ok = {"conv": torch.tensor([1, 0, 3, 2])}  # within groups: a true symmetry
    assert_equivariant(models.GroupNormNet(), ok, torch.randn(2, 1, 6, 6))


def test_mixed_architecture_batch_equals_separate_calls():
    gmn = random_gmn()
    nets = [models.mlp(), models.CNN().double(), models.Attention().double()]
    graphs = [ParameterGraph.from_module(m) for m in nets]
    feats = [features(m.double()) for m in nets]
    batched, emb = gmn.forward_batch(graphs, feats)
    for pg, f, out, e in zip(graphs, feats, batched, emb):
        assert max_diff(out, gmn(pg, *f)) < 1e-10
        assert (e - gmn.embed(pg, *f)).abs().max() < 1e-10


def test_stacked_population_equals_separate_calls():
    gmn = random_gmn(out_channels=2)
    model = models.CNN().double()
    pg = ParameterGraph.from_module(model)
    members = [features(model, seed=s) for s in range(3)]
    stacked = [stack([m[c] for m in members]) for c in range(2)]
    out = gmn(pg, *stacked)
    emb = gmn.embed(pg, *stacked)
    assert emb.shape == (3, gmn.config.hidden)
    for b, f in enumerate(members):
        assert max_diff(member(out, b), gmn(pg, *f)) < 1e-10
        assert (emb[b] - gmn.embed(pg, *f)).abs().max() < 1e-10
    assert pg.decode_stacked(pg.encode_stacked(stacked[0]).edge_attr, 3).keys() == out.keys()
    back = pg.decode_stacked(pg.encode_stacked(stacked[0]).edge_attr, 3)
    for k in pg.param_names:  # encode_stacked / decode_stacked round trip exactly
        assert torch.equal(back[k], stacked[0][k])


def test_context_blocks_stay_equivariant_and_keep_graphs_apart():
    """Graph and per-tensor means: equivariant on real architectures, never mixing the
    graphs of a batch, and they change the output."""
    moves = {"0": torch.randperm(8), "2": torch.randperm(7)}
    assert_equivariant(models.mlp((5, 8, 7, 3)), moves, torch.randn(4, 5), context=True)
    moves = {"conv1": torch.tensor([1, 0, 3, 2]), "conv2": torch.tensor([2, 0, 1, 5, 3, 4])}
    assert_equivariant(models.CNN(), moves, torch.randn(2, 2, 8, 8), context=True)
    model = models.Transformer(dim=8, heads=2, depth=1)
    moves = head_moves(ParameterGraph.from_module(model), "encoder.layers.0.self_attn",
                       torch.tensor([1, 0]))
    assert_equivariant(model, moves, torch.randint(0, 11, (2, 6)), context=True)
    gmn = random_gmn(context=True)
    nets = [models.mlp(), models.CNN().double(), models.Attention().double()]
    graphs = [ParameterGraph.from_module(m) for m in nets]
    feats = [features(m.double()) for m in nets]
    for pg, f, out in zip(graphs, feats, gmn.forward_batch(graphs, feats)[0]):
        assert max_diff(out, gmn(pg, *f)) < 1e-10
    model = models.CNN().double()
    pg = ParameterGraph.from_module(model)
    members = [features(model, seed=s) for s in range(3)]
    out = gmn(pg, *[stack([m[c] for m in members]) for c in range(2)])
    for b, f in enumerate(members):
        assert max_diff(member(out, b), gmn(pg, *f)) < 1e-10
    plain = random_gmn()
    plain.load_state_dict(gmn.state_dict(), strict=False)  # all but the context terms
    assert max_diff(plain(pg, *members[0]), gmn(pg, *members[0])) > 1e-3


def test_stacked_shapes_are_checked():
    model = models.mlp()
    pg = ParameterGraph.from_module(model)
    params = detach(dict(model.named_parameters()))
    mixed = stack([params, params])
    mixed[pg.param_names[0]] = params[pg.param_names[0]]
    with pytest.raises(ValueError, match="mix batch sizes"):
        pg.batch_size_of(mixed)
    bad = dict(params)
    bad[pg.param_names[-1]] = torch.zeros(2, 2, 2, 2)
    with pytest.raises(ValueError, match="stacked population"):
        pg.encode_stacked(bad)
    with pytest.raises(ValueError, match="use encode"):
        pg.encode_stacked(params)


def test_composes_with_torch_func():
    model = models.mlp()
    pg = ParameterGraph.from_module(model.double())
    params, grads = features(model)
    gmn = random_gmn()
    weights = detach(dict(gmn.named_parameters()))

    def meta_loss(w, p):
        out = functional_call(gmn, w, (pg, p, grads))
        return sum((p[k] - 0.1 * out[k]).square().sum() for k in p)

    g_w = grad(meta_loss)(weights, params)
    ref = torch.autograd.grad(meta_loss(dict(gmn.named_parameters()), params),
                              list(gmn.parameters()), allow_unused=True)
    for (name, value), r in zip(g_w.items(), ref):
        torch.testing.assert_close(value, torch.zeros_like(value) if r is None else r, msg=name)
    assert g_w["edge_out.weight"].abs().sum() > 0
    g_p = grad(meta_loss, argnums=1)(weights, params)
    assert set(g_p) == set(params)
    doubled = {k: 2 * v for k, v in params.items()}
    batched = vmap(lambda p: gmn(pg, p, grads))(stack([params, doubled]))
    assert max_diff(member(batched, 1), gmn(pg, doubled, grads)) < 1e-10


def test_wrong_channel_count_is_a_clear_error():
    model = models.mlp()
    pg = ParameterGraph.from_module(model)
    with pytest.raises(ValueError, match="in_channels=2"):
        GMN(2, 1)(pg, dict(model.named_parameters()))


def test_conflicting_moves_of_tied_groups_are_rejected():
    pg = ParameterGraph.from_module(models.ResNet(width=4))
    with pytest.raises(ValueError, match="conflicting moves"):
        node_permutation(pg, {"stem": torch.tensor([1, 0, 2, 3]),
                              "block1.conv2": torch.tensor([0, 1, 3, 2])})
