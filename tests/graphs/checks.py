"""Assertions shared by the graph tests."""

from __future__ import annotations

import torch
from torch import nn

from graphs import ParameterGraph


def assert_round_trip(model: nn.Module, example_inputs=None) -> ParameterGraph:
    """Build ``model``'s graph; ``decode(encode(params))`` must give the parameters exactly."""
    pg = ParameterGraph.from_module(model, example_inputs=example_inputs)
    params = dict(model.named_parameters())
    assert set(pg.param_names) == set(params)
    assert pg.num_params == sum(p.numel() for p in params.values())
    assert pg.num_tied == 0 or pg.tied_index.max() < pg.num_params
    data = pg.encode(params)
    assert data.edge_attr.shape == (pg.num_edges, 1) and data.x.shape == (pg.num_nodes, 1)
    back = pg.decode(data.x, data.edge_attr)
    assert list(back) == list(pg.param_names)
    for name, value in params.items():
        assert back[name].shape == value.shape
        assert torch.equal(back[name], value), name
    # x and edge_attr hold parameter values and nothing else
    assert torch.count_nonzero(data.x) == 0
    # (and the further uses of a tied tensor repeat its entries)
    p, t = pg.num_params, pg.num_tied
    assert torch.equal(data.edge_attr[p : p + t], data.edge_attr[pg.tied_index])
    assert torch.count_nonzero(data.edge_attr[p + t :]) == 0
    return pg


def assert_well_formed(pg: ParameterGraph) -> None:
    """Indices in range, no isolated node, no two edges alike."""
    assert pg.edge_index.min() >= 0 and pg.edge_index.max() < pg.num_nodes
    degree = torch.bincount(pg.edge_index.flatten(), minlength=pg.num_nodes)
    assert bool((degree > 0).all()), "isolated nodes"
    # every parameter edge is unique by (src, dst, type, position)
    key = torch.cat([pg.edge_index.T, pg.edge_feat[:, [0, 2]].long()], 1)
    key = key - key.amin(0)
    radix = key.amax(0) + 1
    if float(radix.double().prod()) < 2**62:  # one int64 per edge: 1-D unique is fast
        flat = torch.zeros(pg.num_edges, dtype=torch.long)
        for column, r in zip(key.T, radix.tolist()):
            flat = flat * r + column
        assert torch.unique(flat).numel() == pg.num_edges
    else:
        assert torch.unique(key, dim=0).shape[0] == pg.num_edges
