"""The Graph Metanetwork: message passing with edge updates over a parameter graph."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from graphs.features import NUM_ACTIVATIONS, NUM_EDGE_TYPES, NUM_NODE_TYPES
from graphs.parameter_graph import ParameterGraph, batch_graphs, unbatch_edges


def sinusoidal(values: Tensor, dim: int, max_period: float = 1e4) -> Tensor:
    """Transformer-style encoding of integer features: ``[...] -> [..., dim]``."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=values.device, dtype=torch.float32) / half
    )
    angles = values.float()[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class FourierValues(nn.Module):
    r"""Scalar channels -> ``[x, \sin(2^k \pi x), \cos(2^k \pi x)]`` for ``k`` in ``[-2, n-3]``.

    Parameter values and gradients are real numbers whose small differences matter; the
    Fourier features let the first linear layer resolve them at several scales.
    """

    def __init__(self, num_freqs: int = 6):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(-2, num_freqs - 2).float())

    @property
    def out_mult(self) -> int:
        return 1 + 2 * self.freqs.numel()

    def forward(self, x: Tensor) -> Tensor:  # [E, C] -> [E, C * (1 + 2 n)]
        angles = x[..., None] * self.freqs.to(x.dtype)
        feats = torch.cat([x[..., None], angles.sin(), angles.cos()], dim=-1)
        return rearrange(feats, "... c f -> ... (c f)")  # channel after channel


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """Two-layer SiLU MLP initialised to preserve activation scale.

    PyTorch's default Linear init shrinks activations ~3x per layer; stacked over the
    blocks of a GMN that would leave the outputs almost blind to parameter values at
    initialisation (and the invariant embedding almost blind to structure).
    """
    net = nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))
    nn.init.kaiming_normal_(net[0].weight, nonlinearity="relu")
    nn.init.normal_(net[2].weight, std=d_hidden**-0.5)
    nn.init.zeros_(net[0].bias)
    nn.init.zeros_(net[2].bias)
    return net


class GMNLayer(MessagePassing):
    r"""One pre-LayerNorm residual block with edge updates and messages both ways.

    .. math::
        m^{\to}_j &= \operatorname{mean}_{i \to j} \phi_{\to}(\bar x_i, \bar e_{ij}), \quad
        m^{\leftarrow}_i = \operatorname{mean}_{i \to j} \phi_{\leftarrow}(\bar x_j, \bar e_{ij}) \\
        x_j &\leftarrow x_j + \phi_x(\bar x_j, m^{\to}_j, m^{\leftarrow}_j) \\
        e_{ij} &\leftarrow e_{ij} + \phi_e(\bar e_{ij}, \bar x_i, \bar x_j)

    where a bar is a LayerNorm (the edge update reads the updated nodes) and every
    :math:`\phi` a two-layer MLP. Aggregation is permutation-invariant, so the block is
    equivariant to relabelling nodes.

    With ``context=True`` the node update also reads the mean node state of its graph, and
    the edge update the mean edge state of its parameter tensor (edges of one graph with the
    same type and layer, NP-NFN's whole-tensor term) and of its graph: each a linear term
    added to the first layer of :math:`\phi_x` / :math:`\phi_e`. Means over sets that a
    permutation maps onto themselves, so the block stays equivariant.
    """

    def __init__(self, hidden: int, aggr: str = "mean", context: bool = False):
        super().__init__(aggr=aggr)
        self.norm_x = nn.LayerNorm(hidden)
        self.norm_e = nn.LayerNorm(hidden)
        self.norm_x2 = nn.LayerNorm(hidden)
        self.edge_mlp = mlp(3 * hidden, hidden, hidden)
        self.msg_fwd = mlp(2 * hidden, hidden, hidden)
        self.msg_bwd = mlp(2 * hidden, hidden, hidden)
        self.node_mlp = mlp(3 * hidden, hidden, hidden)
        self.ctx_node = nn.Linear(hidden, hidden, bias=False) if context else None
        self.ctx_edge = nn.Linear(2 * hidden, hidden, bias=False) if context else None
        self._forward_direction = True  # which message MLP the next propagate uses

    def forward(self, x: Tensor, edge_index: Tensor, e: Tensor,
                groups: ContextGroups | None = None) -> tuple[Tensor, Tensor]:
        """One block; ``groups`` (:func:`context_groups`) is needed with ``context=True``."""
        if self.ctx_node is not None and groups is None:
            raise ValueError("a GMN block with context needs the context groups")
        xn, en = self.norm_x(x), self.norm_e(e)
        n = x.shape[0]
        # The first layer of an MLP over [node_i, edge_ij] is W_x x_i + W_e e_ij: the node
        # part is projected once per node (N << E) and gathered, never concatenated per edge.
        # Same parameters and outputs as the concatenated form, a fraction of the work.
        self._forward_direction = True
        px, pe = _split_first_layer(self.msg_fwd, xn, en)
        fwd = self.propagate(edge_index, x=px, e=pe, size=(n, n))
        self._forward_direction = False
        px, pe = _split_first_layer(self.msg_bwd, xn, en)
        bwd = self.propagate(edge_index.flip(0), x=px, e=pe, size=(n, n))
        pre_x = self.node_mlp[0](torch.cat([xn, fwd, bwd], dim=-1))
        if self.ctx_node is not None:
            pre_x = pre_x + self.ctx_node(groups.mean_nodes(xn))
        x = x + self.node_mlp[1:](pre_x)
        # edges read the updated nodes: information crosses a node and comes back in one block
        xn = self.norm_x2(x)
        src, dst = edge_index
        first, rest = self.edge_mlp[0], self.edge_mlp[1:]
        h = en.shape[-1]
        w = first.weight
        nodes_src = F.linear(xn, w[:, h: 2 * h])
        nodes_dst = F.linear(xn, w[:, 2 * h:])
        pre = F.linear(en, w[:, :h], first.bias) + nodes_src[src] + nodes_dst[dst]
        if self.ctx_edge is not None:
            pre = pre + self.ctx_edge(torch.cat(groups.mean_edges(en), dim=-1))
        e = e + rest(pre)
        return x, e

    def message(self, x_j: Tensor, e: Tensor) -> Tensor:
        mlp = self.msg_fwd if self._forward_direction else self.msg_bwd
        return mlp[1:](x_j + e)


class ContextGroups(NamedTuple):
    """Which graph each node / edge belongs to and which tensor group each edge, as dense ids
    (see :func:`context_groups`)."""

    node_graph: Tensor  # [N]
    edge_graph: Tensor  # [E]
    edge_group: Tensor  # [E] one id per (graph, edge type, edge layer)
    graphs: int
    groups: int

    def mean_nodes(self, x: Tensor) -> Tensor:
        """``[N, h]`` -> each node's graph mean, ``[N, h]``."""
        return scatter(x, self.node_graph, 0, dim_size=self.graphs, reduce="mean")[self.node_graph]

    def mean_edges(self, e: Tensor) -> tuple[Tensor, Tensor]:
        """``[E, h]`` -> each edge's tensor-group mean and graph mean, ``[E, h]`` each."""
        group = scatter(e, self.edge_group, 0, dim_size=self.groups, reduce="mean")
        graph = scatter(e, self.edge_graph, 0, dim_size=self.graphs, reduce="mean")
        return group[self.edge_group], graph[self.edge_graph]


def _graph_of_nodes(data: Data) -> tuple[Tensor, int]:
    """Each node's graph index (``data.batch``, zeros for one graph) and the graph count."""
    batch = getattr(data, "batch", None)
    if batch is None:
        batch = torch.zeros(data.node_feat.shape[0], dtype=torch.long,
                            device=data.node_feat.device)
    return batch, int(batch.max()) + 1 if batch.numel() else 1


def context_groups(data: Data) -> ContextGroups:
    """The :class:`ContextGroups` of a (batched) encoded graph: edges are grouped by graph,
    edge type and layer (for a parameter, its tensor; fixed edges form groups of their own)."""
    batch, graphs = _graph_of_nodes(data)
    edge_graph = batch[data.edge_index[0]]
    ef = data.edge_feat.long()
    key = (edge_graph * NUM_EDGE_TYPES + ef[:, 0]) * (int(ef[:, 1].max()) + 1 if len(ef) else 1)
    _, group = torch.unique(key + ef[:, 1], return_inverse=True)
    return ContextGroups(batch, edge_graph, group, graphs, int(group.max()) + 1 if len(ef) else 0)


def _split_first_layer(mlp: nn.Sequential, nodes: Tensor, edges: Tensor) -> tuple[Tensor, Tensor]:
    """``mlp[0]`` applied to ``cat([node, edge])`` as a node part and an edge part (+ bias)."""
    first, h = mlp[0], nodes.shape[-1]
    return F.linear(nodes, first.weight[:, :h]), F.linear(edges, first.weight[:, h:], first.bias)


class GMNOutput(NamedTuple):
    edge: Tensor  # [E, out_channels] per-edge outputs (the first P are the parameters)
    node: Tensor  # [N, hidden] final node states
    graph: Tensor  # [B, hidden] permutation-invariant graph embeddings


@dataclass
class GMNConfig:
    in_channels: int = 1
    out_channels: int = 1
    hidden: int = 64
    layers: int = 4
    value_freqs: int = 6
    feature_dim: int = 16
    aggr: str = "mean"
    output_heads: int = 1
    context: bool = False


class GMN(nn.Module):
    """Graph Metanetwork over :class:`ParameterGraph` s.

    Args:
        in_channels: parameter-shaped inputs per call (e.g. 2 for parameters and gradients).
        out_channels: outputs per parameter entry (a trailing dim when > 1).
        hidden: width of node and edge states (default 64).
        layers: message-passing blocks (default 4).
        value_freqs: Fourier frequencies per input channel (default 6).
        feature_dim: width of the sinusoidal encodings of layer / position (default 16).
        aggr: message aggregation, ``"mean"``, ``"sum"`` or ``"max"`` (default ``"mean"``).
        output_heads: output-capacity expansion (OCE) with ``k > 1``: the final edge states
            are widened k-fold (``Linear(hidden, k * hidden)`` + SiLU) and read by ``k``
            parallel linear heads, one per ``hidden``-wide slice, whose outputs are averaged
            (default 1: one linear head on the edge states).
        context: every block also reads graph and per-tensor means of the node / edge
            states (see :class:`GMNLayer`; default off).

    The output heads are zero-initialised: a fresh GMN outputs zeros ("no change").
    Calling ``gmn(pg, *feature_dicts)`` returns a dict shaped like the parameters;
    :meth:`embed` returns the invariant graph embedding; :meth:`forward_data` runs on any
    (batched) ``Data`` from :meth:`ParameterGraph.encode`.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, **kwargs):
        super().__init__()
        self.config = GMNConfig(in_channels=in_channels, out_channels=out_channels, **kwargs)
        c = self.config
        h, f = c.hidden, c.feature_dim
        self.values = FourierValues(c.value_freqs)
        self.node_type = nn.Embedding(NUM_NODE_TYPES, h)
        self.node_act = nn.Embedding(NUM_ACTIVATIONS, h)
        self.node_in = nn.Linear(2 * f, h)
        self.edge_type = nn.Embedding(NUM_EDGE_TYPES, h)
        self.edge_in = nn.Linear(2 * f + in_channels * self.values.out_mult, h)
        self.blocks = nn.ModuleList(GMNLayer(h, c.aggr, c.context) for _ in range(c.layers))
        self.norm_out = nn.LayerNorm(h)
        if c.output_heads < 1:
            raise ValueError(f"output_heads must be >= 1, got {c.output_heads}")
        if c.output_heads == 1:
            self.edge_out = nn.Linear(h, out_channels)
            nn.init.zeros_(self.edge_out.weight)
            nn.init.zeros_(self.edge_out.bias)
        else:  # OCE: k heads on k slices of widened edge states, averaged
            k = c.output_heads
            self.edge_expand = nn.Linear(h, k * h)
            nn.init.kaiming_normal_(self.edge_expand.weight, nonlinearity="relu")
            nn.init.zeros_(self.edge_expand.bias)
            self.edge_heads = nn.Parameter(torch.zeros(k, h, out_channels))
            self.edge_heads_bias = nn.Parameter(torch.zeros(out_channels))  # k averaged: one
        self.graph_out = mlp(2 * h, h, h)

    def forward_data(self, data: Data) -> GMNOutput:
        """Run on ``Data`` / ``Batch`` with ``edge_attr [E, in_channels]`` and structure."""
        c = self.config
        edge_attr = data.edge_attr
        if edge_attr.dim() == 1:
            edge_attr = edge_attr[:, None]
        if edge_attr.shape[1] != c.in_channels:
            raise ValueError(
                f"GMN built for {c.in_channels} input channels got {edge_attr.shape[1]}"
            )
        dtype = edge_attr.dtype
        nf, ef = data.node_feat.long(), data.edge_feat.long()
        f = c.feature_dim
        node_struct = torch.cat([sinusoidal(nf[:, 1], f), sinusoidal(nf[:, 2], f)], -1)
        x = self.node_type(nf[:, 0]) + self.node_act(nf[:, 3]) + self.node_in(node_struct.to(dtype))
        struct = torch.cat([sinusoidal(ef[:, 1], f), sinusoidal(ef[:, 2], f)], -1).to(dtype)
        e = self.edge_type(ef[:, 0]) + self.edge_in(torch.cat([struct, self.values(edge_attr)], -1))
        groups = context_groups(data) if c.context else None
        for block in self.blocks:
            x, e = block(x, data.edge_index, e, groups)
        x, e = self.norm_out(x), self.norm_out(e)
        batch, size = _graph_of_nodes(data)
        pooled_x = scatter(x, batch, dim=0, dim_size=size, reduce="mean")
        pooled_e = scatter(e, batch[data.edge_index[0]], dim=0, dim_size=size, reduce="mean")
        graph = self.graph_out(torch.cat([pooled_x, pooled_e], dim=-1))
        return GMNOutput(self._edge_head(e), x, graph)

    def _edge_head(self, e: Tensor) -> Tensor:
        """``[E, hidden] -> [E, out_channels]``: the linear head, or the mean of the OCE heads."""
        k = self.config.output_heads
        if k == 1:
            return self.edge_out(e)
        z = F.silu(self.edge_expand(e)).unflatten(-1, (k, -1))  # [E, k, hidden]
        return torch.einsum("ekh,kho->eo", z, self.edge_heads) / k + self.edge_heads_bias

    def forward(self, pg: ParameterGraph, *feature_dicts: Mapping[str, Tensor]) -> dict:
        """Per-parameter outputs: a dict with ``pg.param_names``, shaped like the parameters.

        Stacked inputs (``[B, *shape]`` per parameter: ``B`` networks of one architecture)
        run as one batched graph and give ``[B, *shape]`` outputs. An entry of a tensor used
        more than once (tied weights) gets the mean of the outputs of all its edges.
        """
        self._check_channels(feature_dicts)
        batch = pg.batch_size_of(feature_dicts[0])
        if batch is None:
            return pg.decode(None, self.forward_data(pg.encode(*feature_dicts)).edge, "mean")
        out = self.forward_data(pg.encode_stacked(*feature_dicts)).edge
        return pg.decode_stacked(out, batch, "mean")

    def embed(self, pg: ParameterGraph, *feature_dicts: Mapping[str, Tensor]) -> Tensor:
        """The permutation-invariant graph embedding: ``[hidden]``, or ``[B, hidden]`` stacked."""
        self._check_channels(feature_dicts)
        if pg.batch_size_of(feature_dicts[0]) is None:
            return self.forward_data(pg.encode(*feature_dicts)).graph[0]
        return self.forward_data(pg.encode_stacked(*feature_dicts)).graph

    def forward_batch(
        self, graphs: list[ParameterGraph], features: list[tuple[Mapping[str, Tensor], ...]]
    ) -> tuple[list[dict[str, Tensor]], Tensor]:
        """Many graphs (any mix of architectures) in one call.

        Returns one output dict per graph and the graph embeddings ``[len(graphs), hidden]``.
        """
        for f in features:
            self._check_channels(f)
        out = self.forward_data(batch_graphs(graphs, features))
        return unbatch_edges(graphs, out.edge, "mean"), out.graph

    def _check_channels(self, feature_dicts) -> None:
        if len(feature_dicts) != self.config.in_channels:
            raise ValueError(
                f"GMN built for in_channels={self.config.in_channels} got "
                f"{len(feature_dicts)} feature dicts"
            )

    def hparams(self) -> dict:
        return asdict(self.config)
