"""Accuracy predictors: a network's weights -> its predicted test accuracy in ``[0, 1]``.

All predictors read the same input: a ``torch_geometric`` Batch of encoded parameter graphs
(``graphs.batch_graphs`` / ``ParameterGraph.encode``; ``edge_attr [E, 1]`` holds the
parameter values, ``edge_feat [E, 3]`` the edge type / layer / position, ``batch`` maps nodes
to networks), plus for the non-graph baselines features precomputed per network by
:func:`network_features`. Every ``forward`` returns ``[B]`` predictions in ``(0, 1)``
(a sigmoid over a regression output).

* :class:`GMNPredictor`: the GMN's edge and node states -> invariant readout -> MLP. Default
  readout ``"groups"``: final edge states pooled per parameter group (edges of one network
  sharing edge type and layer index), an MLP per group, mean over groups; ``"mean"``: the
  GMN's own graph embedding (one mean over all nodes and one over all edges).
* :class:`DeepSetsPredictor`: every parameter entry ``(value, edge type, layer)`` -> MLP ->
  mean over the network's entries -> MLP. Invariant to every permutation of the entries.
* :class:`DMCPredictor`: DMC-style (Eilertsen et al., 2020) 1-D CNN over the flattened
  weights. Mixed architectures: each network's parameters, concatenated in graph edge order,
  are zero-padded to the zoo's longest network (``max_len``).
* :class:`StatNNPredictor`: per parameter tensor (mean, variance, quantiles 0/25/50/75/100)
  -> MLP (Unterthiner et al., 2020). Mixed architectures: tensors in graph order, zero-padded
  to the zoo's most tensors, with a presence flag per slot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from graphs import GMN, ParameterGraph
from graphs.features import NUM_EDGE_TYPES
from graphs.gmn import FourierValues

__all__ = [
    "METHODS",
    "DMCPredictor",
    "DeepSetsPredictor",
    "GMNPredictor",
    "StatNNPredictor",
    "build_predictor",
    "network_features",
]

GMN_READOUTS = ("mean", "groups")
GROUP_MAX_LAYERS = 64
STAT_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
NUM_STATS = 2 + len(STAT_QUANTILES)


def _head(d_in: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, 1))


class GMNPredictor(nn.Module):
    """GMN -> invariant readout ``[B, d]`` -> MLP -> sigmoid -> ``[B]``.

    Args:
        hidden / layers: width and depth of the GMN (see :class:`graphs.GMN`).
        readout: ``"mean"``: the GMN's own graph embedding (mean of node states and of edge
            states -> MLP). ``"groups"``: the final edge states are pooled (mean and max) per
            *parameter group* -- the edges of one network sharing an edge type and a layer
            index (e.g. one conv kernel, one bias vector) -- each group vector (plus learned
            embeddings of its type and layer) goes through an MLP, and the group vectors are
            averaged per network, concatenated with the GMN's graph embedding. Edge types and
            layer indices are structural features that no neuron permutation changes, so the
            readout is exactly permutation invariant; it keeps per-layer information that a
            single mean over all edges of a network washes out.
    """

    def __init__(self, hidden: int = 32, layers: int = 3, readout: str = "mean",
                 **_: Any) -> None:
        super().__init__()
        if readout not in GMN_READOUTS:
            raise ValueError(f"unknown readout {readout!r}; choose from {GMN_READOUTS}")
        self.readout = readout
        groups = readout == "groups"
        self.gmn = GMN(in_channels=1, out_channels=hidden if groups else 1, hidden=hidden,
                       layers=layers)
        d = hidden
        if groups:
            # per-edge embeddings: the GMN's (zero-initialised) edge head, re-initialised
            nn.init.normal_(self.gmn.edge_out.weight, std=hidden**-0.5)
            self.group_type = nn.Embedding(NUM_EDGE_TYPES, hidden)
            self.group_layer = nn.Embedding(GROUP_MAX_LAYERS, hidden)
            self.group_mlp = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.SiLU(),
                                           nn.Linear(hidden, hidden))
            d = 2 * hidden
        self.head = _head(d, hidden)

    def forward(self, batch: Batch, features: Mapping[str, Tensor] | None = None) -> Tensor:
        out = self.gmn.forward_data(batch)
        if self.readout == "mean":
            return torch.sigmoid(self.head(out.graph)[:, 0])
        ef = batch.edge_feat.long()
        graph_batch = getattr(batch, "batch", None)
        if graph_batch is None:
            graph_batch = torch.zeros(batch.num_nodes, dtype=torch.long, device=ef.device)
        num_graphs = out.graph.shape[0]
        etype = ef[:, 0]
        layer = ef[:, 1].clamp(0, GROUP_MAX_LAYERS - 1)
        graph = graph_batch[batch.edge_index[0]]
        key = (graph * GROUP_MAX_LAYERS + layer) * NUM_EDGE_TYPES + etype
        uniq, group = torch.unique(key, return_inverse=True)
        e = out.edge
        mean = scatter(e, group, dim=0, dim_size=len(uniq), reduce="mean")
        mx = scatter(e, group, dim=0, dim_size=len(uniq), reduce="max")
        g_type = uniq % NUM_EDGE_TYPES
        g_layer = (uniq // NUM_EDGE_TYPES) % GROUP_MAX_LAYERS
        g_graph = uniq // (NUM_EDGE_TYPES * GROUP_MAX_LAYERS)
        struct = self.group_type(g_type) + self.group_layer(g_layer)
        z = self.group_mlp(torch.cat([mean, mx, struct], dim=-1))
        pooled = scatter(z, g_graph, dim=0, dim_size=num_graphs, reduce="mean")
        h = torch.cat([pooled, out.graph], dim=-1)
        return torch.sigmoid(self.head(h)[:, 0])


class DeepSetsPredictor(nn.Module):
    r"""DeepSets over parameter entries: :math:`\rho(\operatorname{mean}_e \phi(v_e, t_e, l_e))`.

    ``v_e`` is the entry's value (with Fourier features), ``t_e`` its edge type and ``l_e``
    its layer index (learned embeddings). Output ``[B]``.
    """

    def __init__(self, hidden: int = 32, max_layers: int = 64, **_: Any) -> None:
        super().__init__()
        self.values = FourierValues(6)
        self.type_emb = nn.Embedding(NUM_EDGE_TYPES, hidden)
        self.layer_emb = nn.Embedding(max_layers, hidden)
        self.value_in = nn.Linear(self.values.out_mult, hidden)
        self.phi = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden))
        self.rho = _head(hidden, hidden)
        self.max_layers = max_layers

    def forward(self, batch: Batch, features: Mapping[str, Tensor] | None = None) -> Tensor:
        ef = batch.edge_feat.long()
        layer = ef[:, 1].clamp(max=self.max_layers - 1)
        h = self.value_in(self.values(batch.edge_attr)) + self.type_emb(ef[:, 0])
        h = self.phi(h + self.layer_emb(layer))
        graph_of_edge = batch.batch[batch.edge_index[0]]
        pooled = scatter(h, graph_of_edge, dim=0, dim_size=batch.num_graphs, reduce="mean")
        return torch.sigmoid(self.rho(pooled)[:, 0])


class DMCPredictor(nn.Module):
    """1-D CNN over zero-padded flattened weights ``[B, max_len]`` -> ``[B]``.

    Three ``Conv1d(kernel 8, stride 4) -> SiLU`` stages, flatten (the position of a weight
    matters: this model is not permutation invariant), then an MLP.
    """

    def __init__(self, max_len: int, hidden: int = 32, channels: int = 16, **_: Any) -> None:
        super().__init__()
        self.max_len = max_len
        c = channels
        self.conv = nn.Sequential(
            nn.Conv1d(1, c, 8, stride=4), nn.SiLU(),
            nn.Conv1d(c, 2 * c, 8, stride=4), nn.SiLU(),
            nn.Conv1d(2 * c, 2 * c, 8, stride=4), nn.SiLU(),
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, 1, max_len)).numel()
        self.head = _head(flat, hidden)

    def forward(self, batch: Batch | None, features: Mapping[str, Tensor]) -> Tensor:
        h = self.conv(rearrange(features["flat"], "b l -> b 1 l"))  # one input channel
        return torch.sigmoid(self.head(torch.flatten(h, 1))[:, 0])


class StatNNPredictor(nn.Module):
    """Per-tensor statistics ``[B, max_tensors, NUM_STATS + 1]`` -> MLP -> ``[B]``.

    Features are standardized with the training set's mean / std (``set_normalization``).
    """

    def __init__(self, max_tensors: int, hidden: int = 32, **_: Any) -> None:
        super().__init__()
        d = max_tensors * (NUM_STATS + 1)
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("std", torch.ones(d))
        self.mlp = nn.Sequential(nn.Linear(d, 4 * hidden), nn.SiLU(), nn.Linear(4 * hidden, hidden),
                                 nn.SiLU(), nn.Linear(hidden, 1))

    def set_normalization(self, stats: Tensor) -> None:
        """Standardize with ``stats [N_train, max_tensors, NUM_STATS + 1]``."""
        flat = rearrange(stats, "n t s -> n (t s)")
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0).clamp_min(1e-6))

    def forward(self, batch: Batch | None, features: Mapping[str, Tensor]) -> Tensor:
        z = (rearrange(features["stats"], "b t s -> b (t s)") - self.mean) / self.std
        return torch.sigmoid(self.mlp(z)[:, 0])


METHODS = ("DeepSets", "DMC", "StatNN", "GMN")
"""Predictor names in table order."""


def build_predictor(
    method: str, dims: Mapping[str, int], hidden: int, layers: int, readout: str = "mean"
) -> nn.Module:
    """A fresh predictor by name; ``dims`` holds ``max_len`` and ``max_tensors`` of the zoo.

    ``readout`` applies to the GMN only (see :class:`GMNPredictor`).
    """
    if method == "GMN":
        return GMNPredictor(hidden=hidden, layers=layers, readout=readout)
    if method == "DeepSets":
        return DeepSetsPredictor(hidden=hidden)
    if method == "DMC":
        return DMCPredictor(max_len=dims["max_len"], hidden=hidden)
    if method == "StatNN":
        return StatNNPredictor(max_tensors=dims["max_tensors"], hidden=hidden)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def tensor_stats(t: Tensor) -> Tensor:
    """``[NUM_STATS]``: mean, variance and quantiles 0 / 25 / 50 / 75 / 100 of a tensor."""
    v = t.detach().flatten()
    var = v.var() if v.numel() > 1 else v.new_zeros(())
    q = torch.quantile(v, torch.tensor(STAT_QUANTILES, dtype=v.dtype))
    return torch.cat([v.mean()[None], var[None], q])


def network_features(
    graphs: Sequence[ParameterGraph],
    params: Sequence[Mapping[str, Tensor]],
    max_len: int | None = None,
    max_tensors: int | None = None,
) -> dict[str, Tensor]:
    """Baseline inputs for networks: ``flat [N, max_len]`` and ``stats [N, T, NUM_STATS + 1]``.

    ``flat`` is each network's parameters in graph edge order, zero-padded (longer networks
    are truncated); ``stats`` holds per tensor its statistics and a presence flag, zero-padded
    to ``max_tensors`` slots. Defaults: the largest sizes among ``graphs``.
    """
    max_len = max_len or max(g.num_params for g in graphs)
    max_tensors = max_tensors or max(len(g.param_names) for g in graphs)
    flat = torch.zeros(len(graphs), max_len)
    stats = torch.zeros(len(graphs), max_tensors, NUM_STATS + 1)
    for i, (g, p) in enumerate(zip(graphs, params)):
        v = g.flatten_params(p).detach().to(flat.dtype)[:max_len]
        flat[i, : v.numel()] = v
        for j, name in enumerate(g.param_names[:max_tensors]):
            stats[i, j, :NUM_STATS] = tensor_stats(p[name])
            stats[i, j, NUM_STATS] = 1.0
    return {"flat": flat, "stats": stats}
