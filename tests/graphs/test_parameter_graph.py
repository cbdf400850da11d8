import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from graphs import (
    EdgeType,
    NodeType,
    ParameterGraph,
    UnsupportedModuleError,
    UntraceableModuleError,
    batch_graphs,
)
from tests.graphs import models
from tests.graphs.checks import assert_round_trip, assert_well_formed

MODELS = {
    "mlp": lambda: models.mlp(),
    "cnn_bn": lambda: models.CNN(),
    "resnet": lambda: models.ResNet(),
    "transformer": lambda: models.Transformer(),
    "transformer_prenorm": lambda: models.Transformer(norm_first=True),
    "vit": lambda: models.TinyViT(),
    "attention": lambda: models.Attention(),
    "groupnorm": lambda: models.GroupNormNet(),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_round_trip_and_structure(name, seeded):
    pg = assert_round_trip(MODELS[name]())
    assert_well_formed(pg)


def test_pinned_sizes_from_the_gmn_paper():
    block = models.BasicBlock(1, 1)
    pg = ParameterGraph.from_module(block)
    assert (pg.num_params, pg.num_nodes, pg.num_edges) == (22, 7, 23)
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.LayerNorm(3), nn.Linear(3, 1))
    pg = ParameterGraph.from_module(net)
    assert (pg.num_params, pg.num_nodes, pg.num_edges) == (16, 9, 16)


def test_node_features_mark_inputs_outputs_and_share_hidden_positions():
    pg = ParameterGraph.from_module(models.mlp((5, 8, 3)))
    ntype, pos = pg.node_feat[:, 0], pg.node_feat[:, 2]
    inputs, outputs = pg.node_groups["input"], pg.node_groups["output"]
    assert inputs.numel() == 5 and outputs.numel() == 3
    assert torch.equal(pos[inputs], torch.arange(1, 6, dtype=torch.int32))
    assert torch.equal(pos[outputs], torch.arange(1, 4, dtype=torch.int32))
    hidden = pg.node_groups["0"]
    assert bool((ntype[hidden] == NodeType.HIDDEN).all()) and bool((pos[hidden] == 0).all())
    assert bool((pg.node_feat[hidden, 3] != 0).all()), "ReLU recorded on the hidden neurons"


def test_conv_kernel_positions_and_groups():
    conv = nn.Conv2d(4, 6, 3, groups=2)
    pg = ParameterGraph.from_module(conv)
    kpos = pg.edge_feat[: conv.weight.numel(), 2].reshape(conv.weight.shape)
    assert torch.equal(kpos[0, 0].flatten(), torch.arange(1, 10, dtype=torch.int32))
    src = pg.edge_index[0, : conv.weight.numel()].reshape(6, 2, 9)[..., 0]
    inputs = pg.node_groups["input"]
    # output channels 0-2 read input channels 0-1 only, 3-5 read 2-3
    assert set(src[:3].flatten().tolist()) == set(inputs[:2].tolist())
    assert set(src[3:].flatten().tolist()) == set(inputs[2:].tolist())


def test_flatten_into_linear_uses_spatial_positions():
    model = models.CNN()
    pg = ParameterGraph.from_module(model)
    start = pg.param_names.index("fc.weight")
    offset = sum(pg.param_numels[:start])
    w = model.fc.weight
    src = pg.edge_index[0, offset : offset + w.numel()].reshape(w.shape)
    pos = pg.edge_feat[offset : offset + w.numel(), 2].reshape(w.shape)
    channels = pg.node_groups["conv2"]
    assert torch.equal(src[0], channels.repeat_interleave(16))
    assert torch.equal(pos[0], torch.arange(1, 17, dtype=torch.int32).repeat(6))


def test_attention_heads_and_groups_are_encoded():
    pg = ParameterGraph.from_module(models.Attention(dim=8, heads=2))
    assert pg.node_groups["attn.heads"].numel() == 2
    assert pg.edges_of_type(EdgeType.HEAD_MEMBER).numel() == 3 * 8
    assert pg.edges_of_type(EdgeType.QK_PAIR).numel() == 8
    pg = ParameterGraph.from_module(models.GroupNormNet())
    assert pg.edges_of_type(EdgeType.GROUP_MEMBER).numel() == 4


def test_frozen_parameters_are_covered_and_marked():
    model = models.mlp()
    model[0].weight.requires_grad_(False)
    pg = assert_round_trip(model)
    assert pg.frozen == ("0.weight",)


def test_unsupported_module_names_path_and_parameters():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.bil = nn.Bilinear(3, 3, 2)

        def forward(self, x):
            h = self.fc(x)
            return self.bil(h, h)

    with pytest.raises(UnsupportedModuleError) as err:
        ParameterGraph.from_module(Odd())
    assert err.value.path == "bil"
    assert err.value.param_names == ["bil.weight", "bil.bias"]
    assert "bil" in str(err.value)


def test_bare_parameter_in_unknown_use_is_unsupported():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.w = nn.Parameter(torch.ones(3, 3))

        def forward(self, x):
            return torch.einsum("bi,oi->bo", self.fc(x), self.w)

    with pytest.raises(UnsupportedModuleError, match="'w'"):
        ParameterGraph.from_module(Scale())


def test_untraceable_module_says_so():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            if x.sum() > 0:
                return self.fc(x)
            return x

    with pytest.raises(UntraceableModuleError, match="control flow"):
        ParameterGraph.from_module(Branchy())


def test_encode_rejects_wrong_shapes_and_missing_names():
    model = models.mlp()
    pg = ParameterGraph.from_module(model)
    params = dict(model.named_parameters())
    with pytest.raises(ValueError, match="0.weight"):
        pg.encode({**params, "0.weight": torch.zeros(2, 2)})
    with pytest.raises(KeyError, match="2.bias"):
        pg.encode({k: v for k, v in params.items() if k != "2.bias"})


def test_encode_decode_are_differentiable_and_multichannel():
    model = models.mlp()
    pg = ParameterGraph.from_module(model)
    a = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    b = {k: torch.randn_like(v) for k, v in a.items()}
    data = pg.encode(a, b)
    assert data.edge_attr.shape == (pg.num_edges, 2)
    out = pg.decode(data.x, data.edge_attr)
    assert out["0.weight"].shape == (*a["0.weight"].shape, 2)
    torch.autograd.grad(sum((v[..., 0] ** 2).sum() for v in out.values()), list(a.values()))


def test_batch_offsets_indices_of_mixed_architectures():
    graphs = [ParameterGraph.from_module(m()) for m in (models.mlp, models.CNN, models.Attention)]
    params = [(dict(m.named_parameters()),) for m in (models.mlp(), models.CNN(),
                                                        models.Attention())]
    batch = batch_graphs(graphs, params)
    offset = 0
    for i, g in enumerate(graphs):
        edges = batch.edge_index[:, batch.batch[batch.edge_index[0]] == i]
        assert torch.equal(edges - offset, g.edge_index)
        offset += g.num_nodes
    assert batch.num_nodes == offset


@settings(max_examples=15, deadline=None)
@given(widths=st.lists(st.integers(1, 9), min_size=2, max_size=5), bias=st.booleans())
def test_random_mlps_round_trip(widths, bias):
    layers = [nn.Linear(a, b, bias=bias) for a, b in zip(widths[:-1], widths[1:])]
    model = nn.Sequential(*[m for layer in layers for m in (layer, nn.Tanh())][:-1])
    pg = assert_round_trip(model)
    assert pg.num_nodes == sum(widths) + (len(widths) - 1 if bias else 0)
    assert_well_formed(pg)


@settings(max_examples=10, deadline=None)
@given(
    channels=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    kernel=st.sampled_from([1, 3]),
    norm=st.booleans(),
)
def test_random_cnns_round_trip(channels, kernel, norm):
    layers: list[nn.Module] = []
    for a, b in zip(channels[:-1], channels[1:]):
        layers += [nn.Conv2d(a, b, kernel, padding=kernel // 2)]
        layers += [nn.BatchNorm2d(b)] if norm else []
        layers += [nn.ReLU()]
    layers += [nn.Flatten(), nn.Linear(channels[-1] * 16, 2)]
    model = nn.Sequential(*layers)
    assert model(torch.randn(1, channels[0], 4, 4)).shape == (1, 2)
    pg = assert_round_trip(model)
    assert_well_formed(pg)


def test_conv1d_batchnorm1d_and_layer_norm_limits():
    model = nn.Sequential(nn.Conv1d(2, 4, 5, padding=2), nn.BatchNorm1d(4), nn.GELU(),
                          nn.Flatten(), nn.Linear(4 * 10, 3))
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    assert int(pg.edge_feat[: model[0].weight.numel(), 2].max()) == 5
    with pytest.raises(UnsupportedModuleError, match="only the last dimension"):
        ParameterGraph.from_module(nn.Sequential(nn.Linear(4, 6), nn.LayerNorm((2, 3))))


def test_parameter_free_module_is_an_error():
    from graphs import GraphConstructionError

    with pytest.raises(GraphConstructionError, match="does not depend on any parameter"):
        ParameterGraph.from_module(nn.Sequential(nn.ReLU()))
