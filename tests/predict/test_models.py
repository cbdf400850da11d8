import pytest
import torch

from graphs import ParameterGraph
from graphs.permutation import node_permutation, permute_parameters
from predict.architectures import build_module
from predict.models import build_predictor, network_features

SPECS = {
    "zoo_cnn": (
        {
            "family": "zoo_cnn",
            "kwargs": {"channels": [4, 6, 5], "activation": "relu", "dropout": 0.0},
        },
        ["features.0", "features.2"],
    ),
    "cnn_bn": (
        {
            "family": "digits_cnn",
            "kwargs": {"channels": [4, 8], "norm": "batch", "activation": "tanh"},
        },
        ["features.0"],
    ),
    "mlp": (
        {"family": "mlp", "kwargs": {"hidden": [16, 12], "activation": "relu"}},
        ["mlp.layers.0", "mlp.layers.1"],
    ),
}


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _permuted(spec, groups, seed=0):
    torch.manual_seed(seed)
    module = build_module(spec).double()
    pg = ParameterGraph.from_module(module)
    params = {k: v.detach() for k, v in module.named_parameters()}
    moves = {g: torch.randperm(len(pg.node_groups[g])) for g in groups}
    sigma = node_permutation(pg, moves)
    assert not torch.equal(sigma, torch.arange(pg.num_nodes))
    moved = permute_parameters(pg, params, sigma)
    x = torch.rand(3, 1, 8, 8)
    same = torch.func.functional_call(module.eval(), moved, (x,))
    assert torch.allclose(same, module(x), atol=1e-10), "not a symmetry of the network"
    assert any(not torch.equal(params[k], moved[k]) for k in params)
    return pg, params, moved


@pytest.mark.parametrize("arch", sorted(SPECS))
@pytest.mark.parametrize("method", ["GMN", "GMN-mean", "DeepSets", "StatNN"])
def test_predictions_invariant_to_neuron_permutations(arch, method):
    spec, groups = SPECS[arch]
    pg, params, moved = _permuted(spec, groups)
    feats = network_features([pg, pg], [params, moved])
    torch.manual_seed(1)
    dims = {"max_len": feats["flat"].shape[1], "max_tensors": feats["stats"].shape[1]}
    readout = "mean" if method == "GMN-mean" else "groups"
    model = build_predictor(method.split("-")[0], dims, 16, 2, readout).double()
    for p in model.parameters():  # make the output head non-trivial (GMN heads start at zero)
        p.data.add_(0.05 * torch.randn_like(p))
    from torch_geometric.data import Batch

    batch = Batch.from_data_list([pg.encode(params), pg.encode(moved)])
    out = model(batch, feats)
    assert out.shape == (2,)
    assert torch.allclose(out[0], out[1], atol=1e-10, rtol=0)
    assert ((out > 0) & (out < 1)).all()


def test_gmn_predictor_sensitive_to_weights():
    spec, groups = SPECS["zoo_cnn"]
    pg, params, _ = _permuted(spec, groups)
    other = {k: v * 1.5 for k, v in params.items()}
    feats = network_features([pg, pg], [params, other])
    torch.manual_seed(0)
    model = build_predictor("GMN", {}, 16, 2, "groups").double()
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    from torch_geometric.data import Batch

    out = model(Batch.from_data_list([pg.encode(params), pg.encode(other)]), feats)
    assert (out[0] - out[1]).abs() > 1e-6


def test_gmn_group_readout_batches_like_single_graphs():
    """Group pooling never mixes networks of a batch (mixed architectures included)."""
    from torch_geometric.data import Batch

    torch.manual_seed(0)
    datas = []
    for spec, _ in SPECS.values():
        module = build_module(spec).double()
        pg = ParameterGraph.from_module(module)
        datas.append(pg.encode({k: v.detach() for k, v in module.named_parameters()}))
    model = build_predictor("GMN", {}, 16, 2, "groups").double()
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    together = model(Batch.from_data_list(datas))
    alone = torch.cat([model(Batch.from_data_list([d])) for d in datas])
    assert torch.allclose(together, alone, atol=1e-10, rtol=0)


def test_unknown_readout():
    with pytest.raises(ValueError, match="unknown readout"):
        build_predictor("GMN", {}, 8, 1, "attention")
