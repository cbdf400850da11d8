r"""A Graph Metanetwork whose cost follows the neurons: every entry is read once, written once.

A parameter graph has one edge per parameter entry and orders of magnitude fewer neurons
(a MobileNetV2: 3.5M entries, 18K neurons). :class:`GMN` carries a ``hidden``-wide state on
every edge through every block, so its cost and memory are ``O(entries x hidden x layers)``.
:class:`NeuronGMN` keeps per-entry work to a small constant and does the thinking on neurons:

1. **Read**: each node averages the ``C`` input channels of the entries on its incoming and
   on its outgoing edges (two scatter-sums over the entries, ``2 C`` numbers per entry).
2. **Think**: node states start from those averages, the node's structure (type, activation,
   layer, position, log fan-in / fan-out) and an optional per-graph context vector, then
   ``layers`` residual blocks of message passing *between neurons*: each node reads the mean
   state of its in-neighbours, of its out-neighbours and of the whole graph. The neuron graph
   is kept as *blocks*: a tensor whose entries connect every one of a set of source neurons to
   every one of a set of destination neurons (a dense or convolution weight, a bias, a norm
   scale) is one block, so a round costs ``O(neurons x hidden)``, not ``O(entries)``; other
   tensors and the fixed edges (residuals, heads, ...) are kept as their distinct neuron pairs.
3. **Write**: entry ``e`` from neuron ``s`` to neuron ``t`` gets
   :math:`o_e = W x_e + b + y^{\mathrm{src}}_s + y^{\mathrm{dst}}_t` — a linear read of its own
   features plus a per-neuron term of each endpoint (``out_channels`` gathers per endpoint).
   An entry of a tensor used more than once averages the outputs of its edges.

Every step is a sum over neighbours, a gather by endpoint or a per-node / per-entry map, so
the net is exactly equivariant to the graph's automorphisms, as :class:`GMN` is. The output
layers start at zero: a fresh net outputs zeros. The neuron-graph blocks, degrees and
structure encodings are computed once per graph and device and cached on the graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from graphs.features import NUM_ACTIVATIONS, NUM_NODE_TYPES
from graphs.gmn import mlp, sinusoidal
from graphs.parameter_graph import ParameterGraph

__all__ = ["NeuronGMN", "NeuronGMNConfig"]


@dataclass
class NeuronGMNConfig:
    in_channels: int = 1
    out_channels: int = 1
    hidden: int = 32
    layers: int = 2
    context_channels: int = 0
    feature_dim: int = 8
    read_channels: tuple[int, ...] | None = None
    entry_hidden: int = 0

    def __post_init__(self) -> None:
        if self.read_channels is not None:
            self.read_channels = tuple(int(c) for c in self.read_channels)
            bad = [c for c in self.read_channels if not 0 <= c < self.in_channels]
            if bad or not self.read_channels:
                raise ValueError(f"read_channels {self.read_channels} must be a non-empty "
                                 f"subset of range({self.in_channels})")

    @property
    def reads(self) -> int:
        return self.in_channels if self.read_channels is None else len(self.read_channels)


@dataclass
class _Structure:
    """What :class:`NeuronGMN` reads of one graph on one device (built once, cached)."""

    num_nodes: int
    num_params: int
    src: Tensor  # [P + T] source node of each entry edge (T: further uses of tied tensors)
    dst: Tensor  # [P + T]
    tied_index: Tensor  # [T]
    entry_count: Tensor  # [P] edges carrying each entry (1 + further uses)
    deg_in: Tensor  # [N, 1] entry edges into each node (>= 1)
    deg_out: Tensor  # [N, 1]
    node_type: Tensor  # [N]
    node_act: Tensor  # [N]
    node_static: Tensor  # [N, 2 f + 2] sinusoidal(layer), sinusoidal(position), log degrees
    # the neuron graph: blocks (every source x every destination) and single pairs
    block_src: Tensor  # [S] source nodes of the blocks, concatenated
    block_src_id: Tensor  # [S] their block
    block_dst: Tensor  # [D]
    block_dst_id: Tensor  # [D]
    num_blocks: int
    pair_src: Tensor  # [Q] distinct (source, destination) pairs outside blocks
    pair_dst: Tensor  # [Q]
    nb_in: Tensor  # [N, 1] in-neighbours counted as the aggregation counts them (>= 1)
    nb_out: Tensor  # [N, 1]
    # runs of consecutive entry edges into one node (a dense or convolution weight's rows):
    # the fast read sums a run as one segment, not entry by entry into the same node
    dst_run_node: Tensor  # [R]
    dst_run_start: Tensor  # [R] first entry edge of each run
    entry_ids: Tensor  # [P + T] 0, 1, ...


def _unique_pairs(src: Tensor, dst: Tensor, n: int) -> tuple[Tensor, Tensor]:
    key = torch.unique(src * n + dst)
    return key // n, key % n


def _structure(pg: ParameterGraph, device: torch.device, feature_dim: int) -> _Structure:
    key = ("neuron_gmn", str(device), feature_dim)
    cached = pg._on_device.get(key)
    if cached is not None:
        return cached
    n, p, t = pg.num_nodes, pg.num_params, pg.num_tied
    edge_index = pg.edge_index.cpu()
    src, dst = edge_index[0, : p + t], edge_index[1, : p + t]
    blocks_s, blocks_d, pairs_s, pairs_d = [], [], [], []
    offset = 0
    for numel in pg.param_numels:  # once per graph: each tensor is a block or its pairs
        s, d = src[offset: offset + numel], dst[offset: offset + numel]
        offset += numel
        us, ud = torch.unique(s), torch.unique(d)
        ps, pd = _unique_pairs(s, d, n)
        if ps.numel() == us.numel() * ud.numel():
            blocks_s.append(us)
            blocks_d.append(ud)
        else:
            pairs_s.append(ps)
            pairs_d.append(pd)
    # further uses of tied tensors and the fixed edges (residuals, heads, ...): pairs
    rest = edge_index[:, p:]
    if rest.numel():
        ps, pd = _unique_pairs(rest[0], rest[1], n)
        pairs_s.append(ps)
        pairs_d.append(pd)
    empty = torch.zeros(0, dtype=torch.long)

    def cat_ids(parts: list[Tensor]) -> tuple[Tensor, Tensor]:
        if not parts:
            return empty, empty
        ids = torch.cat([torch.full((x.numel(),), i, dtype=torch.long)
                         for i, x in enumerate(parts)])
        return torch.cat(parts), ids

    block_src, block_src_id = cat_ids(blocks_s)
    block_dst, block_dst_id = cat_ids(blocks_d)
    pair_src = torch.cat(pairs_s) if pairs_s else empty
    pair_dst = torch.cat(pairs_d) if pairs_d else empty
    ones = torch.ones(n)
    deg_in = torch.bincount(dst, minlength=n).float()
    deg_out = torch.bincount(src, minlength=n).float()
    nb_sizes = torch.zeros(len(blocks_s)).index_add_(0, block_src_id, ones[block_src])
    nb_in = torch.zeros(n).index_add_(0, block_dst, nb_sizes[block_dst_id])
    nb_in.index_add_(0, pair_dst, ones[pair_src])
    nb_sizes = torch.zeros(len(blocks_d)).index_add_(0, block_dst_id, ones[block_dst])
    nb_out = torch.zeros(n).index_add_(0, block_src, nb_sizes[block_src_id])
    nb_out.index_add_(0, pair_src, ones[pair_dst])
    nf = pg.node_feat.cpu().long()
    static = torch.cat([sinusoidal(nf[:, 1], feature_dim), sinusoidal(nf[:, 2], feature_dim),
                        torch.log1p(deg_in)[:, None], torch.log1p(deg_out)[:, None]], -1)
    tied = pg.tied_index.cpu()
    dst_run_node, dst_run_len = torch.unique_consecutive(dst, return_counts=True)
    fields = dict(
        num_nodes=n, num_params=p, src=src, dst=dst, tied_index=tied,
        entry_count=torch.bincount(tied, minlength=p).float() + 1,
        deg_in=deg_in.clamp(min=1)[:, None], deg_out=deg_out.clamp(min=1)[:, None],
        node_type=nf[:, 0], node_act=nf[:, 3], node_static=static,
        block_src=block_src, block_src_id=block_src_id, block_dst=block_dst,
        block_dst_id=block_dst_id, num_blocks=len(blocks_s), pair_src=pair_src,
        pair_dst=pair_dst, nb_in=nb_in.clamp(min=1)[:, None], nb_out=nb_out.clamp(min=1)[:, None],
        dst_run_node=dst_run_node, dst_run_start=torch.cumsum(dst_run_len, 0) - dst_run_len,
        entry_ids=torch.arange(dst.numel()),
    )
    s = _Structure(**{k: v.to(device) if isinstance(v, Tensor) else v
                      for k, v in fields.items()})
    pg._on_device[key] = s
    return s


def _runs(channels: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(1, 5, 6) -> [(1, 2), (5, 7)]``: the channels as contiguous slices."""
    out: list[list[int]] = []
    for c in channels:
        if out and out[-1][1] == c:
            out[-1][1] = c + 1
        else:
            out.append([c, c + 1])
    return [(j, k) for j, k in out]


def _neighbour_mean(z: Tensor, s: _Structure, incoming: bool) -> Tensor:
    """Mean state of each node's in-neighbours (``incoming``) or out-neighbours: ``[B, N, H]``."""
    if incoming:
        from_nodes, from_ids, to_nodes, to_ids = (s.block_src, s.block_src_id, s.block_dst,
                                                  s.block_dst_id)
        pair_from, pair_to, count = s.pair_src, s.pair_dst, s.nb_in
    else:
        from_nodes, from_ids, to_nodes, to_ids = (s.block_dst, s.block_dst_id, s.block_src,
                                                  s.block_src_id)
        pair_from, pair_to, count = s.pair_dst, s.pair_src, s.nb_out
    b, n, h = z.shape
    out = z.new_zeros(b, n, h)
    if s.num_blocks:
        sums = _add_rows(z.new_zeros(b, s.num_blocks, h), from_ids,
                         z.index_select(1, from_nodes))
        out = _add_rows(out, to_nodes, sums.index_select(1, to_ids))
    if pair_from.numel():
        out = _add_rows(out, pair_to, z.index_select(1, pair_from))
    return out / count.to(z.dtype)


def _fast(x: Tensor) -> bool:
    """One graph, no autograd, no torch.func transform: the 1-D kernels apply (an optimizer
    step; ~2x faster than the batched scatter / gather on CPU)."""
    return x.shape[0] == 1 and not torch.is_grad_enabled() and \
        not torch._C._functorch.is_functorch_wrapped_tensor(x)


def _read_fast(x: Tensor, s: _Structure, channels) -> tuple[Tensor, Tensor]:
    """:meth:`NeuronGMN.forward_flat`'s read for one graph, ``x [C, E]``: the sums into
    destinations run by run (consecutive entries into one node sum as one segment, not as a
    chain of dependent adds into one address), into sources by a 1-D ``index_add_``."""
    n = s.num_nodes
    sum_in = x.new_zeros(1, len(channels), n)
    sum_out = x.new_zeros(1, len(channels), n)
    for i, c in enumerate(channels):
        # the runs as bags of one-number rows: embedding_bag's sum kernel beats segment_reduce
        runs = torch.nn.functional.embedding_bag(s.entry_ids, x[c, :, None], s.dst_run_start,
                                                 mode="sum")[:, 0]
        sum_in[0, i].index_add_(0, s.dst_run_node, runs)
        sum_out[0, i].index_add_(0, s.src, x[c])
    return sum_in, sum_out


def _write_fast(out: Tensor, weight: Tensor, bias: Tensor, x: Tensor, y: Tensor,
                s: _Structure) -> None:
    """``out [O, E] = W x + b + y_src[src] + y_dst[dst]`` for one graph, with 1-D
    ``index_select`` into one reused buffer."""
    o = out.shape[0]
    torch.addmm(bias[:, None], weight, x, out=out)
    y = y.contiguous()
    tmp = x.new_empty(x.shape[1])
    for c in range(o):
        out[c].add_(torch.index_select(y[c], 0, s.src, out=tmp))
        out[c].add_(torch.index_select(y[o + c], 0, s.dst, out=tmp))


def _add_rows(base: Tensor, index: Tensor, rows: Tensor) -> Tensor:
    """``base.index_add(1, index, rows)`` for ``[B, R, H]`` (2-D for one graph: ~3x faster)."""
    if base.shape[0] == 1:
        return base[0].index_add(0, index, rows[0])[None]
    return base.index_add(1, index, rows)


class _NeuronBlock(nn.Module):
    """``z <- z + MLP([LN z, in-neighbour mean, out-neighbour mean, graph mean])``."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.mlp = mlp(4 * hidden, hidden, hidden)

    def forward(self, z: Tensor, s: _Structure) -> Tensor:
        zn = self.norm(z)
        pooled = zn.mean(1, keepdim=True).expand_as(zn)
        msg = torch.cat([zn, _neighbour_mean(zn, s, True), _neighbour_mean(zn, s, False),
                         pooled], -1)
        return z + self.mlp(msg)


class NeuronGMN(nn.Module):
    """A GMN with per-entry cost a small constant (see the module docstring).

    Args:
        in_channels: parameter-shaped inputs per call.
        out_channels: outputs per parameter entry (a trailing dim when > 1).
        hidden: width of the neuron states (default 32).
        layers: message-passing blocks between neurons (default 2).
        context_channels: size of an optional per-graph context vector (``context=`` of
            :meth:`forward`; e.g. a learned optimizer's step features), 0 for none.
        feature_dim: width of the sinusoidal encodings of layer and position (default 8).
        read_channels: the input channels the neurons average (default all): the read costs
            two scatter-sums per channel read, the only per-entry work besides the write.
        entry_hidden: width of a per-entry ReLU layer on the entry's own features added to
            its output (0, the default: the write is linear in them).

    Called like :class:`GMN`: ``net(pg, *feature_dicts)`` returns a dict shaped like the
    parameters (stacked ``[B, *shape]`` inputs give ``[B, *shape]`` outputs);
    :meth:`forward_flat` runs on the entries as one ``[B, C, P]`` tensor (``pg``'s edge order),
    the form a learned optimizer keeps them in.
    """

    reads_entries = True  # lopt.update passes flat entries and a context

    def __init__(self, in_channels: int = 1, out_channels: int = 1, hidden: int = 32,
                 layers: int = 2, context_channels: int = 0, feature_dim: int = 8,
                 read_channels: tuple[int, ...] | None = None, entry_hidden: int = 0):
        super().__init__()
        self.config = NeuronGMNConfig(in_channels, out_channels, hidden, layers,
                                      context_channels, feature_dim, read_channels, entry_hidden)
        c, h, f = in_channels, hidden, feature_dim
        self.node_type = nn.Embedding(NUM_NODE_TYPES, h)
        self.node_act = nn.Embedding(NUM_ACTIVATIONS, h)
        self.node_in = nn.Linear(2 * f + 2 + 2 * self.config.reads, h)
        self.context_in = nn.Linear(context_channels, h, bias=False) if context_channels \
            else None
        self.blocks = nn.ModuleList(_NeuronBlock(h) for _ in range(layers))
        self.norm_out = nn.LayerNorm(h)
        self.node_out = nn.Linear(h, 2 * out_channels)  # endpoint terms: as source, as dest
        self.entry_out = nn.Linear(c, out_channels)  # the entry's own features
        heads = [self.node_out, self.entry_out]
        if entry_hidden:  # (its first layer and the linear read are one matmul)
            self.entry_in = nn.Linear(c, entry_hidden)
            self.entry_mix = nn.Linear(entry_hidden, out_channels, bias=False)
            heads.append(self.entry_mix)
        for layer in heads:
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def forward_flat(self, pg: ParameterGraph, x: Tensor, context: Tensor | None = None,
                     out: Tensor | None = None) -> Tensor:
        """``x [B, C, P]`` (entries in ``pg``'s edge order) -> ``[B, out_channels, P]``.

        ``context`` is ``[B, context_channels]`` (or ``[context_channels]``, shared). ``out``,
        a ``[B, out_channels, P]`` tensor, receives the result (no autograd through it): a
        caller that steps every iteration saves allocating it each time.
        """
        cfg = self.config
        if x.dim() != 3 or x.shape[1] != cfg.in_channels or x.shape[2] != pg.num_params:
            raise ValueError(f"NeuronGMN expects entries [B, {cfg.in_channels}, "
                             f"{pg.num_params}], got {tuple(x.shape)}")
        if out is not None and out.shape != (x.shape[0], cfg.out_channels, x.shape[2]):
            raise ValueError(f"out must be [B, {cfg.out_channels}, P] = "
                             f"{[x.shape[0], cfg.out_channels, x.shape[2]]}, "
                             f"got {list(out.shape)}")
        s = _structure(pg, x.device, cfg.feature_dim)
        b, c_in, p = x.shape
        n, dtype = s.num_nodes, x.dtype
        if s.tied_index.numel():  # further uses of a tied tensor carry its entries again
            x = torch.cat([x, x[..., s.tied_index]], -1)
        # 1. read: mean features of each node's incoming and outgoing entries
        e = x.shape[-1]
        fast = _fast(x)
        if fast:
            sum_in, sum_out = _read_fast(x[0], s, cfg.read_channels or tuple(range(c_in)))
        else:
            runs = _runs(cfg.read_channels or tuple(range(c_in)))  # contiguous: views
            sum_in = torch.cat([x.new_zeros(b, k - j, n).scatter_add(
                2, s.dst.expand(b, k - j, e), x[:, j:k]) for j, k in runs], 1)
            sum_out = torch.cat([x.new_zeros(b, k - j, n).scatter_add(
                2, s.src.expand(b, k - j, e), x[:, j:k]) for j, k in runs], 1)
        read = torch.cat([sum_in.transpose(1, 2) / s.deg_in.to(dtype),
                          sum_out.transpose(1, 2) / s.deg_out.to(dtype)], -1)
        # 2. think on neurons
        z = self.node_type(s.node_type) + self.node_act(s.node_act)
        z = z + self.node_in(torch.cat([s.node_static.to(dtype).expand(b, n, -1), read], -1))
        if self.context_in is not None:
            if context is None:
                raise ValueError("this NeuronGMN reads a context vector: pass context=")
            z = z + self.context_in(context.to(dtype)).reshape(-1, 1, cfg.hidden)
        for block in self.blocks:
            z = block(z, s)
        y = self.node_out(self.norm_out(z)).transpose(1, 2)  # [B, 2 O, N]
        o = cfg.out_channels
        # 3. write: own features + the two endpoints' terms
        if fast and not cfg.entry_hidden:
            res = out if out is not None and not s.tied_index.numel() else x.new_empty(1, o, e)
            _write_fast(res[0], self.entry_out.weight, self.entry_out.bias, x[0], y[0], s)
        else:
            if cfg.entry_hidden:
                weight = torch.cat([self.entry_out.weight, self.entry_in.weight])
                bias = torch.cat([self.entry_out.bias, self.entry_in.bias])
                both = torch.baddbmm(bias[:, None].expand(b, -1, e), weight.expand(b, -1, c_in),
                                     x)
                res, hidden = both[:, :o], both[:, o:].relu()
                res = res.baddbmm(self.entry_mix.weight.expand(b, o, -1), hidden)
            else:
                res = torch.baddbmm(self.entry_out.bias[:, None].expand(b, o, e),
                                    self.entry_out.weight.expand(b, o, c_in), x)
            res = res.add_(y[:, :o].gather(2, s.src.expand(b, o, e)))  # (in place: P-sized)
            res = res.add_(y[:, o:].gather(2, s.dst.expand(b, o, e)))
        if s.tied_index.numel():
            res = res[..., :p].index_add(2, s.tied_index, res[..., p:]) / s.entry_count.to(dtype)
        if out is not None and res is not out:
            return out.copy_(res)
        return res

    def forward(self, pg: ParameterGraph, *feature_dicts: Mapping[str, Tensor] | Tensor,
                context: Tensor | None = None, out: Tensor | None = None
                ) -> dict[str, Tensor] | Tensor:
        """Per-parameter outputs, shaped like the parameters (trailing dim if ``out > 1``).

        One ``[B, C, P]`` tensor instead of the dicts runs :meth:`forward_flat` (the form
        ``torch.func.functional_call`` can reach; ``out`` is its buffer, for it only).
        """
        if len(feature_dicts) == 1 and isinstance(feature_dicts[0], Tensor):
            return self.forward_flat(pg, feature_dicts[0], context, out)
        if out is not None:
            raise ValueError("out= is for flat [B, C, P] entries, not feature dicts")
        if len(feature_dicts) != self.config.in_channels:
            raise ValueError(f"NeuronGMN built for in_channels={self.config.in_channels} got "
                             f"{len(feature_dicts)} feature dicts")
        batch = pg.batch_size_of(feature_dicts[0])
        lead = 1 if batch is None else batch
        x = torch.stack([torch.cat([f[name].reshape(lead, -1) for name in pg.param_names], 1)
                         for f in feature_dicts], 1)
        out = self.forward_flat(pg, x, context).transpose(1, 2)  # [B, P, O]
        if self.config.out_channels == 1:
            out = out[..., 0]
        trailing = tuple(out.shape[2:])
        pieces = torch.split(out, pg.param_numels, dim=1)
        shapes = [(*((batch,) if batch is not None else ()), *shape, *trailing)
                  for shape in pg.param_shapes]
        return {name: piece.reshape(shape)
                for name, piece, shape in zip(pg.param_names, pieces, shapes)}

    def hparams(self) -> dict:
        return asdict(self.config)
