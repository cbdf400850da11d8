"""Incremental construction of a parameter graph.

Converters (``graphs.converters``) talk to a :class:`GraphBuilder`: they create neuron
nodes, declare which parameter entries become which edges, and return the :class:`Group`
of neurons their output lives on. Edge index tensors are *not* materialized while tracing:
each parameter contributes a small chunk description, and :meth:`GraphBuilder.finalize`
allocates the final tensors once and fills them slice by slice, so peak memory stays close
to the size of the graph itself.

Edge order is the layout contract that makes encode/decode a pure reshape: the first ``P``
edges are the parameter entries, parameter after parameter in ``param_names`` order, each in
its own row-major order; fixed structural edges (residual, head membership, ...) follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from graphs.errors import GraphConstructionError
from graphs.features import Activation, EdgeType, NodeType

# Layouts of the activation tensor a group describes.
FLAT = "flat"  # [B, F]
SPATIAL = "spatial"  # [B, C, *spatial]
SEQ = "seq"  # [B, T, F] (features last)
UNKNOWN = "unknown"


def layout_of(ndim: int, axis: int) -> str | None:
    """The layout of a rank-``ndim`` tensor whose neurons are on ``axis`` (``>= 0``), or
    ``None`` when no usual layout puts them there."""
    if axis == 1:
        return FLAT if ndim == 2 else SPATIAL
    return SEQ if axis == ndim - 1 else None


@dataclass(frozen=True)
class Group:
    """The neurons along the feature axis of one activation tensor.

    ``ids`` holds one graph node per feature (``None`` while the network input's size is not
    yet known). ``repeat`` marks a flattened activation whose features are the group's
    neurons each seen ``k`` times (``"interleave"``: ``[B, C, S] -> [B, C*S]``, ``"tile"``:
    ``[B, T, D] -> [B, T*D]``); ``k`` is decided by the layer that reads it.

    ``ndim`` (the tensor's rank, ``None`` if unknown) and ``axis`` (which axis holds the
    neurons: counted from the front when ``>= 0``, from the end when ``< 0``; ``None``: the
    layout's usual place) are the tracer's axis bookkeeping (``graphs.tracing``). A group
    whose neurons lie along several axes (queries split into heads) holds ``lab`` instead
    (:mod:`graphs.labels`).
    """

    ids: Tensor | None
    layout: str = UNKNOWN
    repeat: str | None = None
    input_key: int | None = None  # which network input a pending group stands for
    ndim: int | None = None
    axis: int | None = None
    lab: Tensor | None = None  # a factored group's labels (graphs.labels); ids = lab.flatten()
    side: Group | None = None  # token-mixing neurons along another axis (graphs.tracing)

    @property
    def pending(self) -> bool:
        return self.ids is None

    @property
    def factored(self) -> bool:
        """Neurons along several axes (heads x head dimensions): see :mod:`graphs.labels`."""
        return self.lab is not None


@dataclass(frozen=True)
class ParamRef:
    """A bare ``nn.Parameter`` met in the traced graph (cls tokens, positional embeddings,
    per-channel gains). ``shape``: its shape after order-keeping reshapes in the trace
    (``view(1, -1, 1, 1)``, ``[:, None, None]``); ``None``: the tensor's own. ``index``: for
    a table read by indexing (a relative-position bias table), the flat id of the entry at
    each place of the seen tensor."""

    name: str
    tensor: Tensor
    shape: tuple[int, ...] | None = None
    index: Tensor | None = None  # entries gathered (a table read by index): flat entry ids

    @property
    def seen_shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape) if self.shape is None else self.shape


@dataclass
class _Chunk:
    """A run of consecutive edges; ``fill`` writes them into preallocated views."""

    n: int
    etype: int
    layer: int
    kind: str  # "dense" | "vector" | "explicit"
    src: Tensor  # dense: src ids [I]; vector: [1]; explicit: [n]
    dst: Tensor  # dense: dst ids [O]; vector: [n]; explicit: [n]
    ksize: int = 1
    groups: int = 1
    transposed: bool = False  # dense only: the weight's first axis indexes sources
    src_pos: Tensor | None = None  # dense only: a position per source entry
    flipped: bool = False  # dense only: edges run dst -> src (a weight [I, O/groups, K])

    def fill(self, src: Tensor, dst: Tensor, pos: Tensor) -> None:
        if self.flipped:  # laid out as [O, I/g, K] with the roles swapped, edges reversed
            src, dst = dst, src
        if self.kind == "vector":
            src.fill_(int(self.src[0]))
            dst.copy_(self.dst)
            pos.zero_()
        elif self.kind == "explicit":
            src.copy_(self.src)
            dst.copy_(self.dst)
            if self.src_pos is not None:
                pos.copy_(self.src_pos)
            else:
                pos.zero_()
        elif self.transposed:  # weight [I, O]: entry (i, o) = edge src[i] -> dst[o]
            n_in, n_out = self.src.numel(), self.dst.numel()
            src.view(n_in, n_out).copy_(self.src[:, None].expand(n_in, n_out))
            dst.view(n_in, n_out).copy_(self.dst[None, :].expand(n_in, n_out))
            pos.view(n_in, n_out).copy_(torch.arange(1, n_in + 1)[:, None].expand(n_in, n_out))
        else:  # weight [O, I / groups, K]: entry (o, i, k) = edge src[g(o) * I/g + i] -> dst[o]
            n_out, k = self.dst.numel(), self.ksize
            in_per_group = self.src.numel() // self.groups
            out_per_group = n_out // self.groups
            base = (torch.arange(n_out) // out_per_group * in_per_group)[:, None]
            index = base + torch.arange(in_per_group)[None, :]  # [O, I/g]
            shape = (n_out, in_per_group, k)
            src.view(shape).copy_(self.src[index][..., None].expand(shape))
            dst.view(n_out, in_per_group * k).copy_(
                self.dst[:, None].expand(n_out, in_per_group * k)
            )
            if self.src_pos is not None:
                pos.view(shape).copy_(self.src_pos[index][..., None].expand(shape))
            elif k > 1:
                pos.view(n_out * in_per_group, k).copy_(
                    torch.arange(1, k + 1)[None, :].expand(n_out * in_per_group, k)
                )
            else:
                pos.zero_()


@dataclass
class _ParamRecord:
    """One use of a parameter tensor by a layer; its chunks cover the tensor row-major.

    The first use of a tensor owns its ``P`` entry edges; every further use (tied weights,
    a module called twice) is a record with ``tied_to`` set, whose edges carry the same
    entries (see :meth:`GraphBuilder.finalize`).
    """

    name: str
    shape: torch.Size
    requires_grad: bool
    chunks: list[_Chunk] = field(default_factory=list)
    tensor: Tensor | None = field(default=None, repr=False)
    tied_to: _ParamRecord | None = None


class GraphBuilder:
    """Accumulates nodes, parameters and edge chunks while a module is traced."""

    def __init__(self) -> None:
        self._node_feats: list[Tensor] = []  # [n, 4] blocks: type, layer, pos, act
        self.num_nodes = 0
        self.layer = 0
        self.params: list[_ParamRecord] = []
        self._param_index: dict[str, _ParamRecord] = {}  # every name used -> first use
        self._by_tensor: dict[int, _ParamRecord] = {}  # id(tensor) -> first use
        self._tied: list[_ParamRecord] = []  # further uses of a tensor, in order
        self.buffers: dict[str, Tensor] = {}  # buffer name -> node id of each entry
        self._aux: list[_Chunk] = []
        self.node_groups: dict[str, Tensor] = {}
        self._act_updates: list[tuple[Tensor, int]] = []
        self._pins: list[tuple[Tensor, Tensor]] = []
        self._outputs: list[Tensor] = []
        self._inputs: dict[int | None, tuple[Tensor, str | None]] = {}

    # ----------------------------------------------------------------- nodes
    def next_layer(self) -> int:
        self.layer += 1
        return self.layer

    def new_nodes(self, n: int, ntype: NodeType, positional: bool = False) -> Tensor:
        """Create ``n`` nodes of one type at the current layer; returns their ids ``[n]``."""
        ids = torch.arange(self.num_nodes, self.num_nodes + n)
        feats = torch.zeros(n, 4, dtype=torch.int32)
        feats[:, 0] = int(ntype)
        feats[:, 1] = self.layer
        if positional:
            feats[:, 2] = torch.arange(1, n + 1, dtype=torch.int32)
        self._node_feats.append(feats)
        self.num_nodes += n
        return ids

    def node_type(self, ids: Tensor) -> Tensor:
        """The node type of each of ``ids`` (nodes created so far)."""
        return torch.cat(self._node_feats)[ids, 0]

    def neurons(self, n: int) -> Tensor:
        return self.new_nodes(n, NodeType.HIDDEN)

    def set_activation(self, group: Group, act: Activation) -> None:
        if group.ids is not None and act != Activation.NONE:
            self._act_updates.append((group.ids, int(act)))

    def pin(self, ids: Tensor, positions: Tensor) -> None:
        """Neurons a constant treats differently (a rotary table varying along head
        dimensions): each gets a position feature, so no automorphism can exchange two of
        them with different positions."""
        self._pins.append((ids, positions.to(torch.int32)))

    def mark_output(self, group: Group) -> None:
        """The network's output neurons: their order is fixed, so they get positions."""
        if group.ids is None:
            raise GraphConstructionError("the module's output does not depend on any parameter")
        if group.repeat is not None:
            raise GraphConstructionError(
                "the module's output is a flattened activation (flatten / view(B, -1) of a "
                "[B, C, *spatial] or [B, T, D] tensor): how many positions each neuron spans "
                "is decided by the layer that reads it, and no layer reads it; end the network "
                "with a layer after the flatten, or reduce the other axes away (x.mean((2, 3)))"
            )
        self._outputs.append(group.ids)

    def resolve(self, group: Group, n: int, what: str) -> tuple[Tensor, Tensor | None]:
        """Node ids for the ``n`` input features a layer reads from ``group``.

        Returns ``(ids [n], positions [n] or None)``; materializes the network's input nodes
        on first use and expands flattened groups (each neuron seen ``n / len(ids)`` times).
        """
        if group.ids is None:
            known = self._inputs.get(group.input_key)
            if known is None:
                ids = self.new_nodes(n, NodeType.INPUT, positional=True)
                # several network inputs: positions continue across them (in the order the
                # inputs are first read), so two inputs of one size are never interchangeable
                offset = sum(int(known_ids.numel()) for known_ids, _ in self._inputs.values())
                if offset:
                    self._node_feats[-1][:, 2] += offset
                self._inputs[group.input_key] = (ids, group.repeat)
                return ids, None
            ids, repeat = known
            if repeat == group.repeat:
                group = Group(ids, group.layout)
            elif repeat is None:  # read as channels before, flattened now
                group = Group(ids, group.layout, group.repeat)
            else:
                raise GraphConstructionError(
                    f"{what} reads the network input unflattened, but another layer "
                    f"already read it flattened into {ids.numel()} features"
                )
        size = group.ids.numel()
        if group.repeat is None or size == n:
            if size != n:
                raise GraphConstructionError(
                    f"{what} expects {n} input features but the tensor it reads has {size}"
                )
            return group.ids, None
        if n % size:
            raise GraphConstructionError(
                f"{what} expects {n} input features, which is not a multiple of the "
                f"{size} channels of the flattened tensor it reads"
            )
        k = n // size
        if group.repeat == "interleave":  # [B, C, S] -> [B, C*S]: feature c*S + s
            ids = group.ids.repeat_interleave(k)
            pos = torch.arange(1, k + 1).repeat(size)
        else:  # [B, T, D] -> [B, T*D]: feature t*D + d
            ids = group.ids.repeat(k)
            pos = torch.arange(1, k + 1).repeat_interleave(size)
        return ids, pos

    def materialize(self, group: Group, n: int, what: str) -> Group:
        ids, pos = self.resolve(group, n, what)
        if pos is not None:
            raise GraphConstructionError(f"{what} cannot read a flattened tensor")
        return Group(ids, group.layout)

    # ------------------------------------------------------------ parameters
    def add_param(self, name: str, param: Tensor) -> _ParamRecord:
        """The record a converter fills with edges for one use of ``param``.

        A tensor is one set of entries however often it is used: its first use (by identity,
        so tied weights under two names count as one tensor) creates its ``P`` entry edges;
        every further use returns a *tied* record whose edges become structural edges
        carrying the same entries (``ParameterGraph.tied_index``).
        """
        first = self._by_tensor.get(id(param))
        if first is None and name in self._param_index:  # same name, another object
            first = self._param_index[name]
        rec = _ParamRecord(name, param.shape, bool(param.requires_grad), tensor=param)
        if first is None:
            self.params.append(rec)
            self._by_tensor[id(param)] = rec
        else:
            if first.shape != param.shape:
                raise GraphConstructionError(
                    f"parameter '{name}' is used with shape {tuple(param.shape)} and "
                    f"{tuple(first.shape)}"
                )
            rec.tied_to = first
            self._tied.append(rec)
        self._param_index.setdefault(name, first or rec)
        return rec

    def add_buffer(self, name: str, ids: Tensor) -> None:
        """Buffer ``name``'s entry ``j`` (along its first axis) follows node ``ids[j]``.

        E.g. BatchNorm's ``running_mean`` / ``running_var`` follow their channels, so a node
        permutation moves them with the parameters (``graphs.permutation.permute_state_dict``).
        """
        self.buffers.setdefault(name, ids)

    def covered(self, name: str, tensor: Tensor | None = None) -> bool:
        """Whether a parameter was used under ``name`` (any of a tied tensor's names) or,
        given, the ``tensor`` itself (a module reached under another path)."""
        return name in self._param_index or (tensor is not None and id(tensor) in self._by_tensor)

    def dense(
        self,
        rec: _ParamRecord,
        src: Tensor,
        dst: Tensor,
        etype: EdgeType,
        ksize: int = 1,
        groups: int = 1,
        transposed: bool = False,
        src_pos: Tensor | None = None,
        flipped: bool = False,
    ) -> None:
        """Edges for a weight block ``[O, I/groups, K]`` (or ``[I, O]`` when transposed).

        ``flipped``: the block is ``[I, O/groups, K]`` (a transposed convolution): entry
        ``(i, o, k)`` is the edge ``src[i] -> dst[g(i) * O/g + o]`` at kernel position ``k``.
        """
        if flipped:
            n = src.numel() * (dst.numel() // groups) * ksize
            rec.chunks.append(
                _Chunk(n, int(etype), self.layer, "dense", dst, src, ksize, groups, flipped=True)
            )
            return
        n = dst.numel() * (src.numel() // groups) * ksize
        rec.chunks.append(
            _Chunk(n, int(etype), self.layer, "dense", src, dst, ksize, groups, transposed, src_pos)
        )

    def vector(self, rec: _ParamRecord, src_node: Tensor, dst: Tensor, etype: EdgeType) -> None:
        """Edges ``src_node -> dst[j]`` for a vector parameter (bias, norm scale/shift)."""
        rec.chunks.append(_Chunk(dst.numel(), int(etype), self.layer, "vector", src_node, dst))

    def fixed_edges(self, src: Tensor, dst: Tensor, etype: EdgeType,
                    pos: Tensor | None = None) -> None:
        """Structural edges that carry no parameter (value 0 in every channel)."""
        self._aux.append(_Chunk(src.numel(), int(etype), self.layer, "explicit", src, dst,
                                src_pos=pos))

    def merge(self, a: Group, b: Group, etype: EdgeType = EdgeType.RESIDUAL) -> Group:
        """Two neuron groups combined elementwise (``a + b``, ``a * b``).

        The group created later keeps its nodes; fixed edges from the earlier one tie each
        of its neurons to its partner, so the two can only be permuted together.
        """
        if a.ids is None and b.ids is None:
            raise GraphConstructionError("cannot combine two inputs of unknown size")
        if a.ids is None:
            a = self.materialize(a, b.ids.numel(), "an elementwise combination")
        if b.ids is None:
            b = self.materialize(b, a.ids.numel(), "an elementwise combination")
        if a.repeat or b.repeat:
            raise GraphConstructionError("elementwise combination of a flattened activation")
        if a.ids.numel() != b.ids.numel():
            raise GraphConstructionError(
                f"elementwise combination of neuron groups of sizes {a.ids.numel()} and "
                f"{b.ids.numel()}"
            )
        if torch.equal(a.ids, b.ids):
            return a
        old, new = (a, b) if int(a.ids.max()) < int(b.ids.max()) else (b, a)
        self.fixed_edges(old.ids, new.ids, etype)
        layout = a.layout if a.layout != UNKNOWN else b.layout
        return Group(new.ids, layout)

    # -------------------------------------------------------------- finalize
    def finalize(self) -> dict:
        """Allocate and fill the graph tensors (see the module docstring for edge order)."""
        chunks = [c for rec in self.params for c in rec.chunks]
        for rec in self.params + self._tied:
            got = sum(c.n for c in rec.chunks)
            want = math.prod(rec.shape)
            if got != want:  # a converter bug, never a user error
                raise AssertionError(f"{rec.name}: {got} edges for {want} entries")
        # further uses of a tensor: edges right after the P entry edges, each carrying the
        # entry ``tied_index[t]`` (the use's chunks cover the tensor row-major, as the first)
        offsets, start = {}, 0
        for rec in self.params:
            offsets[id(rec)] = start
            start += math.prod(rec.shape)
        tied = [
            offsets[id(rec.tied_to)] + torch.arange(math.prod(rec.shape)) for rec in self._tied
        ]
        tied_index = torch.cat(tied) if tied else torch.zeros(0, dtype=torch.long)
        chunks += [c for rec in self._tied for c in rec.chunks]
        chunks += self._aux
        num_edges = sum(c.n for c in chunks)
        edge_index = torch.empty(2, num_edges, dtype=torch.long)
        edge_feat = torch.empty(num_edges, 3, dtype=torch.int32)
        start = 0
        for c in chunks:
            sl = slice(start, start + c.n)
            c.fill(edge_index[0, sl], edge_index[1, sl], edge_feat[sl, 2])
            edge_feat[sl, 0] = c.etype
            edge_feat[sl, 1] = c.layer
            start += c.n
        empty = torch.zeros(0, 4, dtype=torch.int32)
        node_feat = torch.cat(self._node_feats) if self._node_feats else empty
        # pooling first: a pool reading activated neurons does not hide their activation
        pools = (int(Activation.MAX_POOL), int(Activation.AVG_POOL))
        for ids, act in sorted(self._act_updates, key=lambda u: u[1] not in pools):
            node_feat[ids, 3] = act
        for ids, positions in self._pins:
            node_feat[ids, 2] = positions
        for ids in self._outputs:
            node_feat[ids, 0] = int(NodeType.OUTPUT)
            node_feat[ids, 2] = torch.arange(1, ids.numel() + 1, dtype=torch.int32)
        return dict(
            edge_index=edge_index, edge_feat=edge_feat, node_feat=node_feat, tied_index=tied_index
        )
