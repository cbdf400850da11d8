"""ParameterGraph: the immutable graph template of one architecture."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from einops import rearrange, repeat
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from graphs.features import EdgeType, NodeType
from graphs.tracing import build


@dataclass(frozen=True, eq=False)
class ParameterGraph:
    """Neurons as nodes, parameter entries as edges: one template per architecture.

    Built once with :meth:`from_module`; :meth:`encode` scatters parameter values of that
    architecture into a :class:`torch_geometric.data.Data` and :meth:`decode` gathers them
    back. The first ``num_param_edges`` edges are the parameter entries in ``param_names``
    order (each tensor row-major), so both directions are a reshape and a concatenation:
    vectorized, differentiable and safe inside ``torch.func`` transforms.

    Attributes:
        edge_index: ``[2, E]`` source and destination node of every edge.
        node_feat: ``[N, 4]`` int32: node type, layer, position, activation
            (see :mod:`graphs.features`).
        edge_feat: ``[E, 3]`` int32: edge type, layer, position (kernel offset, or the
            spatial / sequence offset of a weight reading a flattened tensor).
        param_names / param_shapes: the parameters covered, in edge order.
        trainable: per parameter, ``requires_grad`` at build time (frozen ones are covered
            too, and marked here).
        node_groups: named node id sets (network inputs and outputs, attention heads, ...).
        tied_index: ``[T]`` for a tensor used more than once (tied weights, a module called
            twice): the tensor is one set of ``P`` entries (its first use), and each further
            use adds edges ``P ... P + T - 1`` after them, edge ``P + t`` carrying entry
            ``tied_index[t]``. :meth:`encode` fills them by a gather; :meth:`decode` reads
            the first ``P`` edges (or, with ``tied="mean"``, averages every edge carrying an
            entry: how the GMN turns its edge outputs into one output per entry).
        param_aliases: other names of a tied tensor (``state_dict`` keys ``named_parameters``
            drops) -> its name in ``param_names``.
        buffer_nodes: buffers that follow neurons -> the node id of each entry along their
            first axis (BatchNorm ``running_mean`` / ``running_var`` follow their channels);
            :func:`graphs.permutation.permute_state_dict` moves them with the parameters.
    """

    edge_index: Tensor
    node_feat: Tensor
    edge_feat: Tensor
    param_names: tuple[str, ...]
    param_shapes: tuple[torch.Size, ...]
    trainable: tuple[bool, ...]
    node_groups: Mapping[str, Tensor] = field(default_factory=dict)
    tied_index: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    param_aliases: Mapping[str, str] = field(default_factory=dict)
    buffer_nodes: Mapping[str, Tensor] = field(default_factory=dict)
    _on_device: dict = field(default_factory=dict, repr=False)  # structure copies, by device

    # ------------------------------------------------------------ building
    @classmethod
    def from_module(cls, module: nn.Module, example_inputs: Any = None) -> ParameterGraph:
        """Trace ``module`` and build its parameter graph.

        Without ``example_inputs`` ``forward`` is traced symbolically (``torch.fx``); with
        them (a tensor, a tuple of arguments, a dict of keyword arguments, or both as
        ``(args, kwargs)``) it is run once and recorded (:mod:`graphs.recording`): the way
        for models ``torch.fx`` cannot trace, Hugging Face transformers among them. Only
        shapes matter: a batch of one and a short sequence are enough.

        Raises:
            UnsupportedModuleError: a submodule holds parameters no converter covers.
            UntraceableModuleError: ``forward`` cannot be traced symbolically.
            ShapeOperationError: an operation moves neurons in a way the tracer cannot follow.
        """
        b = build(module, example_inputs)
        tensors = b.finalize()
        groups = dict(b.node_groups)
        node_type = tensors["node_feat"][:, 0]
        groups["input"] = torch.nonzero(node_type == NodeType.INPUT).flatten()
        groups["output"] = torch.nonzero(node_type == NodeType.OUTPUT).flatten()
        # a tied tensor is named as named_parameters() names it (whichever use came first)
        canon = {id(p): n for n, p in module.named_parameters()}
        aliases = {
            n: canon[id(p)]
            for n, p in module.named_parameters(remove_duplicate=False)
            if canon[id(p)] != n
        }
        return cls(
            edge_index=tensors["edge_index"],
            node_feat=tensors["node_feat"],
            edge_feat=tensors["edge_feat"],
            param_names=tuple(canon.get(id(r.tensor), r.name) for r in b.params),
            param_shapes=tuple(r.shape for r in b.params),
            trainable=tuple(r.requires_grad for r in b.params),
            node_groups=groups,
            tied_index=tensors["tied_index"],
            param_aliases=aliases,
            buffer_nodes=dict(b.buffers),
        )

    # ---------------------------------------------------------- properties
    @property
    def num_nodes(self) -> int:
        return self.node_feat.shape[0]

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]

    @property
    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes)

    @property
    def num_param_edges(self) -> int:
        """Edges holding a parameter entry: the first ``num_params`` edges."""
        return self.num_params

    @property
    def num_tied(self) -> int:
        """Edges repeating an entry of a tensor used more than once (after the first ``P``)."""
        return self.tied_index.numel()

    @property
    def param_numels(self) -> list[int]:
        return [math.prod(s) for s in self.param_shapes]

    @property
    def frozen(self) -> tuple[str, ...]:
        return tuple(n for n, t in zip(self.param_names, self.trainable) if not t)

    @property
    def device(self) -> torch.device:
        return self.edge_index.device

    def nbytes(self) -> int:
        """Memory held by the graph's tensors."""
        tensors = [self.edge_index, self.node_feat, self.edge_feat, self.tied_index,
                   *self.node_groups.values(), *self.buffer_nodes.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, device: torch.device | str) -> ParameterGraph:
        return ParameterGraph(
            edge_index=self.edge_index.to(device),
            node_feat=self.node_feat.to(device),
            edge_feat=self.edge_feat.to(device),
            param_names=self.param_names,
            param_shapes=self.param_shapes,
            trainable=self.trainable,
            node_groups={k: v.to(device) for k, v in self.node_groups.items()},
            tied_index=self.tied_index.to(device),
            param_aliases=self.param_aliases,
            buffer_nodes={k: v.to(device) for k, v in self.buffer_nodes.items()},
        )

    def _structure_on(self, device: torch.device) -> ParameterGraph:
        """This graph with its structure on ``device`` (copied once, then cached)."""
        if device == self.device:
            return self
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = self.to(device)
        return self._on_device[key]

    def __repr__(self) -> str:
        return (
            f"ParameterGraph(params={self.num_params}, nodes={self.num_nodes}, "
            f"edges={self.num_edges}, tensors={len(self.param_names)})"
        )

    # ------------------------------------------------------ encode / decode
    def _checked(self, params: Mapping[str, Tensor]) -> list[Tensor]:
        """The tensors of one parameter dict in edge order (names and shapes checked)."""
        missing = [n for n in self.param_names if n not in params]
        if missing:
            raise KeyError(f"parameters missing for this graph: {missing}")
        out = []
        for name, shape in zip(self.param_names, self.param_shapes):
            value = params[name]
            if value.shape != shape:
                raise ValueError(
                    f"parameter '{name}' has shape {tuple(value.shape)}, the graph expects "
                    f"{tuple(shape)}"
                )
            out.append(value)
        return out

    def flatten_params(self, params: Mapping[str, Tensor]) -> Tensor:
        """One parameter dict -> ``[P]`` values in edge order."""
        return torch.cat([v.reshape(-1) for v in self._checked(params)])

    def encode(self, *param_dicts: Mapping[str, Tensor]) -> Data:
        """Parameter dicts (one per channel) -> ``Data`` with ``x [N, C]``, ``edge_attr [E, C]``.

        ``x`` and ``edge_attr`` hold parameter values and nothing else: in this construction
        every parameter entry is an edge, so ``x`` is zero and fixed structural edges are 0.
        Structure travels in ``edge_index``, ``node_feat`` and ``edge_feat``. Costs one
        concatenation over the parameters (one pass per channel).
        """
        if not param_dicts:
            raise ValueError("encode needs at least one parameter dict")
        channels = [self._checked(p) for p in param_dicts]
        if len(channels) == 1:
            pieces = [v.reshape(-1, 1) for v in channels[0]]
        else:
            stacked = (torch.stack(vs, dim=-1) for vs in zip(*channels))  # [*shape, C] each
            pieces = [rearrange(s, "... c -> (...) c") for s in stacked]
        ref = pieces[0]
        struct = self._structure_on(ref.device)
        pad = ref.new_zeros(self.num_edges - self.num_params - self.num_tied, len(channels))
        if self.num_tied:  # further uses of a tied tensor repeat its entries: one gather
            flat = torch.cat(pieces)
            edge_attr = torch.cat([flat, flat[struct.tied_index], pad])
        else:
            edge_attr = torch.cat([*pieces, pad])
        return Data(
            x=ref.new_zeros(self.num_nodes, len(channels)),
            edge_attr=edge_attr,
            edge_index=struct.edge_index,
            node_feat=struct.node_feat,
            edge_feat=struct.edge_feat,
            num_nodes=self.num_nodes,
        )

    def batch_size_of(self, params: Mapping[str, Tensor]) -> int | None:
        """``None`` for one parameter dict (the parameters' shapes), ``B`` for a stacked one.

        A stacked dict holds ``[B, *shape]`` for every parameter (a population of networks of
        this architecture). Raises ``ValueError`` on any other shape, or mixed batch sizes.
        """
        sizes = set()
        for name, shape in zip(self.param_names, self.param_shapes):
            if name not in params:
                raise KeyError(f"parameters missing for this graph: ['{name}']")
            value_shape = tuple(params[name].shape)
            if value_shape == tuple(shape):
                sizes.add(None)
            elif len(value_shape) == len(shape) + 1 and value_shape[1:] == tuple(shape):
                sizes.add(value_shape[0])
            else:
                raise ValueError(
                    f"parameter '{name}' has shape {value_shape}, the graph expects "
                    f"{tuple(shape)} (or [B, *{tuple(shape)}] for a stacked population)"
                )
        if len(sizes) != 1:
            raise ValueError(f"parameter tensors mix batch sizes {sorted(map(str, sizes))}")
        return sizes.pop()

    def encode_stacked(self, *param_dicts: Mapping[str, Tensor]) -> Data:
        """Stacked parameter dicts (``[B, *shape]`` each) -> one ``Data`` holding ``B`` graphs.

        The batched equivalent of :meth:`encode` for ``B`` networks of this architecture:
        ``edge_attr [B * E, C]`` (graph ``b``'s edges are rows ``b * E ... (b + 1) * E - 1``),
        node indices offset per graph and ``batch`` mapping nodes to graphs. The repeated
        structure is built once per ``(B, device)`` and cached; each call only concatenates
        the values, so a population of networks costs one pass over its parameters.
        """
        if not param_dicts:
            raise ValueError("encode_stacked needs at least one parameter dict")
        batch = self.batch_size_of(param_dicts[0])
        if batch is None:
            raise ValueError("encode_stacked expects stacked [B, *shape] tensors; use encode")
        for p in param_dicts[1:]:
            if self.batch_size_of(p) != batch:
                raise ValueError("all channels of encode_stacked must have the same batch size")
        c = len(param_dicts)
        rows = [torch.cat([rearrange(p[n], "b ... -> b (...)") for n in self.param_names], 1)
                for p in param_dicts]
        flat = torch.stack(rows, dim=-1)  # [B, P, C]
        if self.num_tied:
            flat = torch.cat([flat, flat[:, self._structure_on(flat.device).tied_index]], dim=1)
        pad = self.num_edges - self.num_params - self.num_tied
        if pad:
            flat = torch.cat([flat, flat.new_zeros(batch, pad, c)], dim=1)
        struct = self._stacked_structure(batch, flat.device)
        return Data(
            x=flat.new_zeros(batch * self.num_nodes, c),
            edge_attr=rearrange(flat, "b e c -> (b e) c"),
            edge_index=struct.edge_index,
            node_feat=struct.node_feat,
            edge_feat=struct.edge_feat,
            batch=struct.batch,
            num_nodes=batch * self.num_nodes,
        )

    def _stacked_structure(self, batch: int, device: torch.device) -> Data:
        key = (batch, str(device))
        if key not in self._on_device:
            g = self._structure_on(device)
            graph = torch.arange(batch, device=device)
            # graph b's nodes and edges are the rows b * N ... / b * E ... of the batch
            self._on_device[key] = Data(
                edge_index=repeat(g.edge_index, "two e -> two (b e)", b=batch)
                + repeat(graph * self.num_nodes, "b -> (b e)", e=self.num_edges),
                node_feat=repeat(g.node_feat, "n f -> (b n) f", b=batch),
                edge_feat=repeat(g.edge_feat, "e f -> (b e) f", b=batch),
                batch=repeat(graph, "b -> (b n)", n=self.num_nodes),
            )
        return self._on_device[key]

    def decode_stacked(
        self, edge_attr: Tensor, batch: int, tied: str = "first"
    ) -> dict[str, Tensor]:
        """Inverse of :meth:`encode_stacked`: ``[B * E(, C)]`` -> ``{name: [B, *shape(, C)]}``.

        ``tied`` as in :meth:`decode`.
        """
        if edge_attr.shape[0] != batch * self.num_edges:
            raise ValueError(
                f"edge_attr has {edge_attr.shape[0]} rows, {batch} stacked graphs have "
                f"{batch * self.num_edges} edges"
            )
        per_graph = rearrange(edge_attr, "(b e) ... -> b e ...", b=batch)
        values = self._entries(per_graph, 1, tied)
        if values.dim() == 3 and values.shape[2] == 1:
            values = values[..., 0]
        trailing = tuple(values.shape[2:])
        pieces = torch.split(values, self.param_numels, dim=1)
        return {
            name: piece.reshape(batch, *shape, *trailing)
            for name, shape, piece in zip(self.param_names, self.param_shapes, pieces)
        }

    def _entries(self, edge_attr: Tensor, dim: int, tied: str) -> Tensor:
        """The ``P`` entry rows of ``edge_attr`` along ``dim`` (0, or 1 when stacked)."""
        p, t = self.num_params, self.num_tied
        values = edge_attr.narrow(dim, 0, p)
        if tied == "first" or not t:
            return values
        if tied != "mean":
            raise ValueError(f"tied must be 'first' or 'mean', got {tied!r}")
        index = self._structure_on(edge_attr.device).tied_index
        total = torch.index_add(values, dim, index, edge_attr.narrow(dim, p, t))
        count = torch.bincount(index, minlength=p).to(values.dtype) + 1
        return total / count.view(*(1,) * dim, p, *(1,) * (values.dim() - dim - 1))

    def decode(self, x: Tensor | None, edge_attr: Tensor, tied: str = "first") -> dict[str, Tensor]:
        """Exact inverse of :meth:`encode`: ``edge_attr [E]`` or ``[E, C]`` -> parameter dict.

        With one channel the tensors have the parameters' shapes; with ``C > 1`` channels
        they get a trailing channel dimension. ``x`` is accepted for symmetry (it carries
        no parameter in this construction). An entry of a tensor used more than once sits on
        several edges: ``tied="first"`` reads its entry edge (the first ``P`` edges),
        ``tied="mean"`` averages all edges carrying it (per-edge outputs of a GMN).
        """
        if edge_attr.shape[0] != self.num_edges:
            raise ValueError(
                f"edge_attr has {edge_attr.shape[0]} rows, the graph has {self.num_edges} edges"
            )
        values = self._entries(edge_attr, 0, tied)
        if values.dim() == 2 and values.shape[1] == 1:
            values = values[:, 0]
        trailing = tuple(values.shape[1:])
        pieces = torch.split(values, self.param_numels)
        return {
            name: piece.reshape((*shape, *trailing))
            for name, shape, piece in zip(self.param_names, self.param_shapes, pieces)
        }

    def structure(self, device: torch.device | str | None = None) -> Data:
        """The graph with no values: ``Data`` with structure only (for batching templates)."""
        g = self if device is None else self.to(device)
        return Data(
            edge_index=g.edge_index, node_feat=g.node_feat, edge_feat=g.edge_feat,
            num_nodes=self.num_nodes,
        )

    def edges_of_type(self, etype: EdgeType) -> Tensor:
        return torch.nonzero(self.edge_feat[:, 0] == int(etype)).flatten()


def batch_graphs(
    graphs: list[ParameterGraph], params: list[tuple[Mapping[str, Tensor], ...]]
) -> Batch:
    """Encode several graphs (any mix of architectures) into one ``torch_geometric`` Batch.

    ``params[i]`` is the tuple of channel dicts for ``graphs[i]``. Node indices in
    ``edge_index`` are offset per graph by ``Batch``; ``batch`` maps nodes to graphs.
    """
    if len(graphs) != len(params):
        raise ValueError(f"{len(graphs)} graphs but {len(params)} parameter tuples")
    return Batch.from_data_list([g.encode(*p) for g, p in zip(graphs, params)])


def unbatch_edges(
    graphs: list[ParameterGraph], edge_out: Tensor, tied: str = "first"
) -> list[dict[str, Tensor]]:
    """Split a batched per-edge output ``[sum E_i, C]`` back into one dict per graph.

    ``tied`` as in :meth:`ParameterGraph.decode`.
    """
    sizes = [g.num_edges for g in graphs]
    return [g.decode(None, e, tied) for g, e in zip(graphs, torch.split(edge_out, sizes))]
