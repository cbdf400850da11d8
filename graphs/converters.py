"""Converters: one function per layer type, turning a module's parameters into edges.

A converter has the signature ``converter(builder, module, path, *inputs) -> output`` where
``inputs`` are the :class:`~graphs.builder.Group` s of the activations the module reads and
the output is the group its result lives on (or a tuple, for modules returning tuples).
Converters are looked up along the module class's MRO, so a subclass inherits its parent's
converter; :func:`register_converter` adds one for a new layer type (and makes the tracer
treat that class as a leaf).

The construction follows the GMN paper (Lim et al., 2024): a node per neuron / channel, an
edge per weight, a bias node per layer whose edges hold the biases, a gamma and a beta node
per normalization layer, ``k*k`` parallel edges with a kernel-position feature per
convolution weight, residual additions as fixed edges of their own type. These additions
make the graph's automorphisms exactly the network's permutation symmetries:

* attention heads get a head node tied to its query, key and value dimensions, and query
  dimension ``i`` is tied to key dimension ``i``; without them, dimensions could be swapped
  across heads or between queries and keys, which changes the function;
* GroupNorm groups get a group node tied to the group's channels, so channels cannot move
  between groups;
* a recurrent layer's weight entries carry their gate (and direction) as edge position, so a
  hidden unit's rows move together across gates and gates or directions never swap; an
  initial state fed from outside ties each unit to its entry.

Converters reach a module's parameters through :func:`module_param`, so a parametrized
tensor (``torch.nn.utils.parametrize``: ``weight_norm``, ``spectral_norm``) is held by its
originals in every converter.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from einops import repeat
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm, _WeightNorm

from graphs.builder import FLAT, SEQ, SPATIAL, UNKNOWN, GraphBuilder, Group, ParamRef, _ParamRecord
from graphs.errors import GraphConstructionError, UnsupportedModuleError
from graphs.features import Activation, EdgeType, NodeType, activation_kind

Converter = Callable[..., object]
_REGISTRY: dict[type | str, Converter] = {}


def register_converter(cls: type | str) -> Callable[[Converter], Converter]:
    """Decorator registering ``fn(builder, module, path, *inputs)`` for ``cls`` and subclasses.

    ``cls`` may also be a qualified class name, ``"package.module.ClassName"``: a layer of an
    optional library the core must not import, matched against each class's
    ``f"{__module__}.{__qualname__}"``.
    """
    if isinstance(cls, str) and "." not in cls:
        raise ValueError(f"register_converter({cls!r}): give the class as 'package.module.Class'")

    def wrap(fn: Converter) -> Converter:
        _REGISTRY[cls] = fn
        return fn

    return wrap


def find_converter(module: nn.Module) -> Converter | None:
    """The converter of the most specific class in ``type(module).__mro__`` that has one
    (registered as a class object, else by qualified name)."""
    for cls in type(module).__mro__:
        fn = _REGISTRY.get(cls) or _REGISTRY.get(f"{cls.__module__}.{cls.__qualname__}")
        if fn is not None:
            return fn
    return None


def has_converter(module: nn.Module) -> bool:
    return find_converter(module) is not None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _has(m: nn.Module, name: str) -> bool:
    """Whether ``m`` holds parameter ``name`` (a parametrized one is not computed)."""
    return parametrize.is_parametrized(m, name) or getattr(m, name, None) is not None


def module_param(
    b: GraphBuilder, m: nn.Module, path: str, name: str, axes: tuple[Tensor | None, ...]
) -> _ParamRecord:
    """The record that takes the edges of ``m``'s parameter ``name``.

    ``axes``: per axis of the parameter, the node of each index (``None`` where an index is
    not one neuron: kernel offsets, gate blocks, a flattened input). A parametrized tensor
    (``torch.nn.utils.parametrize``) is held by its originals, never by its computed value:
    ``spectral_norm``'s original takes the edges and its power-iteration vectors ``_u`` /
    ``_v`` follow the neurons of their axes; ``weight_norm``'s direction ``v`` (original1)
    takes the edges and its magnitude ``g`` (original0) is a gain per neuron along its
    ``dim`` (one shared gain with ``dim=None``). Other parametrizations are refused: their
    function of the original need not commute with neuron permutations (``orthogonal`` reads
    it through ``tril`` and a fixed ``base``).
    """
    full = _join(path, name)
    if not parametrize.is_parametrized(m, name):
        return b.add_param(full, getattr(m, name))
    chain = m.parametrizations[name]
    prefix = _join(path, f"parametrizations.{name}")
    originals = {_join(prefix, n): p for n, p in chain.named_parameters(recurse=False)}

    def refuse(reason: str) -> UnsupportedModuleError:
        return UnsupportedModuleError(path, list(originals), f"'{full}' {reason}", type(m).__name__)

    kinds = [type(p).__name__ for p in chain]
    if len(chain) != 1 or not isinstance(chain[0], _WeightNorm | _SpectralNorm):
        raise refuse(
            f"is parametrized by {kinds}: only a single weight_norm or spectral_norm is known "
            "to commute with neuron permutations"
        )
    p = chain[0]
    kind = "weight_norm" if isinstance(p, _WeightNorm) else "spectral_norm"
    shape = (chain.original1 if kind == "weight_norm" else chain.original).shape

    def nodes(axis: int, what: str) -> Tensor:
        if axes[axis] is None:
            raise refuse(
                f"({kind}): {what} follows axis {axis} of the {list(shape)} tensor, whose "
                "indices are not one neuron each here"
            )
        return axes[axis]

    if kind == "weight_norm":
        rec_g = b.add_param(_join(prefix, "original0"), chain.original0)
        rec = b.add_param(_join(prefix, "original1"), chain.original1)
        gamma = b.new_nodes(1, NodeType.NORM_GAMMA)
        if p.dim == -1:  # one magnitude for the whole tensor, tied to the neurons of an axis
            axis = next((i for i, a in enumerate(axes) if a is not None), 0)
            _shared(b, rec_g, gamma, nodes(axis, "the shared gain g"))
        else:
            b.vector(rec_g, gamma, nodes(p.dim % len(shape), "the gain g"), EdgeType.NORM_GAMMA)
        return rec
    rec = b.add_param(_join(prefix, "original"), chain.original)
    if len(shape) > 1:
        b.add_buffer(_join(prefix, "0._u"), nodes(p.dim, "the power-iteration vector _u"))
        rest = [i for i in range(len(shape)) if i != p.dim and shape[i] > 1]
        if len(rest) > 1:
            raise refuse(
                f"({kind}): the power-iteration vector _v runs over axes {rest} of the "
                f"{list(shape)} tensor at once (channels x kernel offsets), and a buffer entry "
                "can follow one neuron only"
            )
        if rest:
            b.add_buffer(_join(prefix, "0._v"), nodes(rest[0], "the power-iteration vector _v"))
    return rec


def _bias(b: GraphBuilder, m: nn.Module, path: str, dst: Tensor, name: str = "bias") -> None:
    if not _has(m, name):
        return
    node = b.new_nodes(1, NodeType.BIAS)
    b.vector(module_param(b, m, path, name, (dst,)), node, dst, EdgeType.BIAS)


def _affine(b: GraphBuilder, m: nn.Module, path: str, dst: Tensor) -> None:
    if _has(m, "weight"):
        node = b.new_nodes(1, NodeType.NORM_GAMMA)
        b.vector(module_param(b, m, path, "weight", (dst,)), node, dst, EdgeType.NORM_GAMMA)
    if _has(m, "bias"):
        node = b.new_nodes(1, NodeType.NORM_BETA)
        b.vector(module_param(b, m, path, "bias", (dst,)), node, dst, EdgeType.NORM_BETA)


def named_affine(b: GraphBuilder, weight: tuple[str, Tensor] | None,
                 bias: tuple[str, Tensor] | None, dst: Tensor) -> None:
    """A scale and a shift per neuron held by bare parameters (``F.layer_norm(x, s, w, b)``,
    a layer scale ``x * gamma``): encoded exactly as a normalization layer's affine."""
    b.next_layer()
    if weight is not None:
        node = b.new_nodes(1, NodeType.NORM_GAMMA)
        b.vector(b.add_param(*weight), node, dst, EdgeType.NORM_GAMMA)
    if bias is not None:
        node = b.new_nodes(1, NodeType.NORM_BETA)
        b.vector(b.add_param(*bias), node, dst, EdgeType.NORM_BETA)


def shared_gain(b: GraphBuilder, name: str, param: Tensor, dst: Tensor) -> None:
    """A single scale multiplying every neuron of ``dst``: its gamma node feeds a shared node
    tied to all of them (as a single-slope PReLU), so it follows no one channel."""
    b.next_layer()
    _shared(b, b.add_param(name, param), b.new_nodes(1, NodeType.NORM_GAMMA), dst)


def _shared(b: GraphBuilder, rec: _ParamRecord, gamma: Tensor, dst: Tensor) -> None:
    """A single entry on the edge ``gamma -> shared node``, the shared node tied to ``dst``."""
    shared = b.new_nodes(1, NodeType.ACT_SHARED)
    b.vector(rec, gamma, shared, EdgeType.NORM_GAMMA)
    b.fixed_edges(shared.expand(dst.numel()), dst, EdgeType.ACT_MEMBER)


@register_converter(nn.Linear)
def linear(b: GraphBuilder, m: nn.Linear, path: str, x: Group, etype=EdgeType.LINEAR) -> Group:
    b.next_layer()
    src, pos = b.resolve(x, m.in_features, f"Linear '{path}'")
    out = b.neurons(m.out_features)
    rec = module_param(b, m, path, "weight", (out, src if pos is None else None))
    b.dense(rec, src, out, etype, src_pos=pos)
    _bias(b, m, path, out)
    b.node_groups[path] = out
    return Group(out, SEQ if x.layout == SEQ and x.repeat is None else FLAT)


@register_converter(nn.modules.conv._ConvNd)
def conv(
    b: GraphBuilder, m: nn.modules.conv._ConvNd, path: str, x: Group, output_size=None
) -> Group:
    """Convolutions, transposed ones included (``output_size`` does not touch the graph)."""
    b.next_layer()
    x = b.materialize(x, m.in_channels, f"{type(m).__name__} '{path}'")
    out = b.neurons(m.out_channels)
    ksize = math.prod(m.kernel_size)
    one_to_one = m.groups == 1  # then an index of the weight's second axis is one channel
    kernel = (None,) * len(m.kernel_size)
    if m.transposed:
        axes = (x.ids, out if one_to_one else None, *kernel)
    else:
        axes = (out, x.ids if one_to_one else None, *kernel)
    rec = module_param(b, m, path, "weight", axes)
    if m.transposed:  # weight [in, out / groups, *k]: rows index the sources
        b.dense(rec, x.ids, out, EdgeType.CONV_TRANSPOSE, ksize=ksize, groups=m.groups,
                flipped=True)
    else:  # weight [out, in / groups, *k]
        b.dense(rec, x.ids, out, EdgeType.CONV, ksize=ksize, groups=m.groups)
    _bias(b, m, path, out)
    b.node_groups[path] = out
    return Group(out, SPATIAL)


@register_converter(nn.modules.batchnorm._NormBase)
def batch_norm(b: GraphBuilder, m: nn.modules.batchnorm._NormBase, path: str, x: Group) -> Group:
    if not m.affine:
        if x.ids is not None and x.repeat is None and x.ids.numel() == m.num_features:
            _running_stats(b, m, path, x.ids)
        return x
    b.next_layer()
    x = b.materialize(x, m.num_features, f"{type(m).__name__} '{path}'")
    _affine(b, m, path, x.ids)
    _running_stats(b, m, path, x.ids)
    return x


def _running_stats(b: GraphBuilder, m: nn.Module, path: str, ids: Tensor) -> None:
    """Running mean / variance follow their channels (``num_batches_tracked`` follows none)."""
    for name in ("running_mean", "running_var"):
        if getattr(m, name, None) is not None:
            b.add_buffer(_join(path, name), ids)


@register_converter(nn.PReLU)
def prelu(b: GraphBuilder, m: nn.PReLU, path: str, x: Group) -> Group:
    """Slopes as edges: one per channel moves with its channel (like a BatchNorm gamma);
    a single slope sits on a node of its own tied to every channel, so it follows none."""
    what = f"PReLU '{path}'"
    n = m.num_parameters
    axis, ndim = getattr(x, "axis", None), getattr(x, "ndim", None)
    if axis is not None and axis < 0 and ndim is not None:
        axis += ndim
    seq = x.layout == SEQ if axis is None or axis < 0 else axis != 1
    if n > 1 and seq:  # PReLU scales dim 1: in [batch, tokens, features], the tokens
        raise UnsupportedModuleError(
            path, [_join(path, "weight")],
            f"{n} slopes along dim 1 of a [batch, tokens, features] tensor", "PReLU",
        )
    if x.ids is None and n == 1:
        raise GraphConstructionError(
            f"{what} with one slope reads the network input directly: its size is unknown"
        )
    b.next_layer()
    if n > 1:
        x = b.materialize(x, n, what)
    slope = b.new_nodes(1, NodeType.ACT_SLOPE)
    rec = module_param(b, m, path, "weight", (x.ids if n > 1 else None,))
    if n > 1:
        b.vector(rec, slope, x.ids, EdgeType.ACT_SLOPE)
    else:
        shared = b.new_nodes(1, NodeType.ACT_SHARED)
        b.vector(rec, slope, shared, EdgeType.ACT_SLOPE)
        b.fixed_edges(shared.expand(x.ids.numel()), x.ids, EdgeType.ACT_MEMBER)
    b.set_activation(x, activation_kind(m))
    return x


@register_converter(nn.LayerNorm)
def layer_norm(b: GraphBuilder, m: nn.LayerNorm, path: str, x: Group) -> Group:
    if not (_has(m, "weight") or _has(m, "bias")):
        return x
    if len(m.normalized_shape) != 1:
        raise UnsupportedModuleError(
            path,
            [n for n, _ in m.named_parameters(prefix=path)],
            f"LayerNorm over {tuple(m.normalized_shape)}: only the last dimension is supported",
        )
    b.next_layer()
    x = b.materialize(x, m.normalized_shape[0], f"LayerNorm '{path}'")
    _affine(b, m, path, x.ids)
    return x


@register_converter(nn.GroupNorm)
def group_norm(b: GraphBuilder, m: nn.GroupNorm, path: str, x: Group) -> Group:
    b.next_layer()
    x = b.materialize(x, m.num_channels, f"GroupNorm '{path}'")
    groups = b.new_nodes(m.num_groups, NodeType.GROUP)
    per_group = m.num_channels // m.num_groups
    b.fixed_edges(repeat(groups, "g -> (g c)", c=per_group), x.ids, EdgeType.GROUP_MEMBER)
    b.node_groups[_join(path, "groups")] = groups
    if m.affine:
        _affine(b, m, path, x.ids)
    return x


@register_converter(nn.Embedding)
def embedding(b: GraphBuilder, m: nn.Embedding, path: str, tokens: object = None) -> Group:
    b.next_layer()
    vocab = b.new_nodes(m.num_embeddings, NodeType.TOKEN, positional=True)
    out = b.neurons(m.embedding_dim)
    rec = module_param(b, m, path, "weight", (vocab, out))
    b.dense(rec, vocab, out, EdgeType.EMBEDDING, transposed=True)
    b.node_groups[path] = out
    return Group(out, SEQ)


def parameter_tokens(b: GraphBuilder, name: str, param: Tensor, x: Group, kind: str) -> Group:
    """A bare parameter ``[..., n, D]`` read alongside the D neurons of ``x``.

    ``kind="position"``: a learned positional embedding added to a sequence; ``"token"``: learned
    tokens (cls) concatenated to it; a ``[D]`` parameter added is a bias.
    """
    b.next_layer()
    dim = param.shape[-1]
    x = b.materialize(x, dim, f"parameter '{name}'")
    rec = b.add_param(name, param)
    if param.dim() == 1 and kind == "position":
        b.vector(rec, b.new_nodes(1, NodeType.BIAS), x.ids, EdgeType.BIAS)
        return x
    n = param.numel() // dim
    if kind == "position":
        nodes = b.new_nodes(n, NodeType.POSITION, positional=True)
        etype = EdgeType.POS_EMBEDDING
    else:
        nodes = b.new_nodes(n, NodeType.PARAM_TOKEN, positional=True)
        etype = EdgeType.PARAM_TOKEN
    b.dense(rec, nodes, x.ids, etype, transposed=True)
    return x


@register_converter(nn.MultiheadAttention)
def multihead_attention(
    b: GraphBuilder,
    m: nn.MultiheadAttention,
    path: str,
    query: Group,
    key=None,
    value=None,
    key_padding_mask=None,
    need_weights=True,
    attn_mask=None,
    average_attn_weights=True,
    is_causal=False,
) -> tuple[Group, None]:
    """Queries, keys and values as neuron groups, tied by head nodes and query-key pairs.

    Takes every argument ``nn.MultiheadAttention.forward`` does; masks and the returned
    weights do not change the parameter graph. ``batch_first`` either way: features are last.
    """
    names = [n for n, _ in m.named_parameters(prefix=path)]
    if m.bias_k is not None or m.add_zero_attn:
        raise UnsupportedModuleError(path, names, "add_bias_kv / add_zero_attn")
    key = query if not isinstance(key, Group) else key
    value = key if not isinstance(value, Group) else value
    b.next_layer()
    dim, heads = m.embed_dim, m.num_heads
    xq = b.materialize(query, dim, f"MultiheadAttention '{path}' (query)")
    xk = b.materialize(key, m.kdim, f"MultiheadAttention '{path}' (key)")
    xv = b.materialize(value, m.vdim, f"MultiheadAttention '{path}' (value)")
    q, k, v = b.neurons(dim), b.neurons(dim), b.neurons(dim)
    etypes = (EdgeType.ATTN_Q, EdgeType.ATTN_K, EdgeType.ATTN_V)
    if m._qkv_same_embed_dim:
        rec = module_param(b, m, path, "in_proj_weight", (torch.cat([q, k, v]), None))
        for src, dst, et in zip((xq, xk, xv), (q, k, v), etypes):
            b.dense(rec, src.ids, dst, et)  # consecutive row blocks of in_proj_weight
    else:
        for nm, src, dst, et in zip("qkv", (xq, xk, xv), (q, k, v), etypes):
            rec = module_param(b, m, path, f"{nm}_proj_weight", (dst, src.ids))
            b.dense(rec, src.ids, dst, et)
    _bias(b, m, path, torch.cat([q, k, v]), name="in_proj_bias")
    head_nodes = b.new_nodes(heads, NodeType.HEAD)
    member = repeat(head_nodes, "h -> (qkv h d)", qkv=3, d=m.head_dim)  # head of each q, k, v
    b.fixed_edges(member, torch.cat([q, k, v]), EdgeType.HEAD_MEMBER)
    b.fixed_edges(q, k, EdgeType.QK_PAIR)
    out = linear(b, m.out_proj, _join(path, "out_proj"), Group(v, FLAT), EdgeType.ATTN_OUT)
    for nm, ids in (("q", q), ("k", k), ("v", v), ("heads", head_nodes)):
        b.node_groups[_join(path, nm)] = ids
    layout = query.layout if query.layout != UNKNOWN else SEQ
    return Group(out.ids, layout), None


@register_converter(nn.TransformerEncoderLayer)
def transformer_encoder_layer(
    b: GraphBuilder,
    m: nn.TransformerEncoderLayer,
    path: str,
    x: Group,
    src_mask=None,
    src_key_padding_mask=None,
    is_causal=False,
) -> Group:
    def attention(h: Group) -> Group:
        return multihead_attention(b, m.self_attn, _join(path, "self_attn"), h, h, h)[0]

    def feed_forward(h: Group) -> Group:
        return _feed_forward(b, m, path, h)

    def norm(name: str, h: Group) -> Group:
        return layer_norm(b, getattr(m, name), _join(path, name), h)

    if x.ids is None:
        x = b.materialize(x, m.self_attn.embed_dim, f"TransformerEncoderLayer '{path}'")
    if m.norm_first:
        x = b.merge(x, attention(norm("norm1", x)))
        x = b.merge(x, feed_forward(norm("norm2", x)))
    else:
        x = norm("norm1", b.merge(x, attention(x)))
        x = norm("norm2", b.merge(x, feed_forward(x)))
    return x


def _feed_forward(b: GraphBuilder, m: nn.Module, path: str, h: Group) -> Group:
    """A transformer layer's ``linear2(activation(linear1(h)))``."""
    h = linear(b, m.linear1, _join(path, "linear1"), h)
    b.set_activation(h, activation_kind(m.activation))
    return linear(b, m.linear2, _join(path, "linear2"), h)


@register_converter(nn.TransformerEncoder)
def transformer_encoder(
    b: GraphBuilder,
    m: nn.TransformerEncoder,
    path: str,
    x: Group,
    mask=None,
    src_key_padding_mask=None,
    is_causal=None,
) -> Group:
    for i, layer in enumerate(m.layers):
        x = transformer_encoder_layer(b, layer, _join(path, f"layers.{i}"), x)
    if m.norm is not None:
        x = layer_norm(b, m.norm, _join(path, "norm"), x)
    return x


@register_converter(nn.TransformerDecoderLayer)
def transformer_decoder_layer(
    b: GraphBuilder,
    m: nn.TransformerDecoderLayer,
    path: str,
    tgt: Group,
    memory: Group,
    tgt_mask=None,
    memory_mask=None,
    tgt_key_padding_mask=None,
    memory_key_padding_mask=None,
    tgt_is_causal=False,
    memory_is_causal=False,
) -> Group:
    """Self-attention on ``tgt``, cross-attention from it to ``memory`` (its keys and values
    read the memory's neurons), a feed-forward block; ``norm_first`` either way. Masks and
    causal flags do not change the graph."""

    def self_attention(h: Group) -> Group:
        return multihead_attention(b, m.self_attn, _join(path, "self_attn"), h, h, h)[0]

    def cross_attention(h: Group) -> Group:
        attn = m.multihead_attn
        return multihead_attention(b, attn, _join(path, "multihead_attn"), h, memory, memory)[0]

    def feed_forward(h: Group) -> Group:
        return _feed_forward(b, m, path, h)

    def norm(name: str, h: Group) -> Group:
        return layer_norm(b, getattr(m, name), _join(path, name), h)

    x = tgt
    if x.ids is None:
        x = b.materialize(x, m.self_attn.embed_dim, f"TransformerDecoderLayer '{path}' (tgt)")
    memory = b.materialize(
        memory, m.multihead_attn.kdim, f"TransformerDecoderLayer '{path}' (memory)"
    )
    if m.norm_first:
        x = b.merge(x, self_attention(norm("norm1", x)))
        x = b.merge(x, cross_attention(norm("norm2", x)))
        x = b.merge(x, feed_forward(norm("norm3", x)))
    else:
        x = norm("norm1", b.merge(x, self_attention(x)))
        x = norm("norm2", b.merge(x, cross_attention(x)))
        x = norm("norm3", b.merge(x, feed_forward(x)))
    return x


@register_converter(nn.TransformerDecoder)
def transformer_decoder(
    b: GraphBuilder,
    m: nn.TransformerDecoder,
    path: str,
    tgt: Group,
    memory: Group,
    tgt_mask=None,
    memory_mask=None,
    tgt_key_padding_mask=None,
    memory_key_padding_mask=None,
    tgt_is_causal=None,
    memory_is_causal=False,
) -> Group:
    for i, layer in enumerate(m.layers):
        tgt = transformer_decoder_layer(b, layer, _join(path, f"layers.{i}"), tgt, memory)
    if m.norm is not None:
        tgt = layer_norm(b, m.norm, _join(path, "norm"), tgt)
    return tgt


_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


@register_converter(nn.RNNBase)
def recurrent(b: GraphBuilder, m: nn.RNNBase, path: str, x: Group, hx=None) -> tuple:
    """``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``: a node per hidden unit of each layer and direction.

    A weight entry is the edge into the unit its row feeds, at the position of its gate
    (``1 ... G`` forward, ``G + 1 ... 2G`` reverse; times the offsets of a flattened input),
    so a permutation moves a unit's rows of every gate and its recurrent column together and
    can never exchange gates or directions: ``weight_ih`` (RNN_INPUT), ``weight_hh`` from the
    units' outputs (RNN_HIDDEN, self-loops included), ``bias_ih`` (BIAS) and ``bias_hh``
    (RNN_HIDDEN_BIAS) from a bias node each, LSTM's ``weight_hr`` (RNN_PROJ) from the cells
    to the projected units, which are then the outputs. An initial state ``hx`` that is an
    activation or a network input ties each unit to its entry.

    Returns ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``); a final state of several
    layers or directions is a tuple of one group per slice, so ``h_n[-1]`` is followed.
    """
    what = f"{type(m).__name__} '{path}'"
    gates, dirs = _GATES[m.mode], 2 if m.bidirectional else 1
    lstm, n_out = m.mode == "LSTM", m.proj_size or m.hidden_size
    h0, c0 = hx if lstm and isinstance(hx, tuple) else (hx, None)
    for state in (h0, c0):
        if isinstance(state, ParamRef):
            owner = state.name.rpartition(".")[0]
            raise UnsupportedModuleError(
                owner, [state.name], f"a parameter used as the initial state of {what}"
            )
    b.next_layer()
    src, pos = b.resolve(x, m.input_size, what)
    slices = m.num_layers * dirs

    def initial(state, n: int) -> list[Tensor | None]:
        if isinstance(state, Group):
            state = (state,) * slices
        if not isinstance(state, tuple) or len(state) != slices:
            return [None] * slices  # zeros, or a constant: no neuron to tie to
        return [
            b.materialize(s, n, f"{what} (initial state)").ids if isinstance(s, Group) else None
            for s in state
        ]

    h0, c0 = initial(h0, n_out), initial(c0, m.hidden_size)
    act = Activation.RELU if m.mode == "RNN_RELU" else Activation.TANH
    states: list[tuple[Tensor, Tensor]] = []  # (cells, outputs) per layer and direction
    ties: list[tuple[Tensor, Tensor]] = []
    for k in range(m.num_layers):
        if k:
            b.next_layer()
            src, pos = torch.cat([out for _, out in states[-dirs:]]), None
        reps = 1 if pos is None else int(pos.max())
        offsets = torch.ones_like(src) if pos is None else pos
        for d in range(dirs):
            sfx = f"_l{k}_reverse" if d else f"_l{k}"
            cells = b.neurons(m.hidden_size)
            out = b.neurons(m.proj_size) if m.proj_size else cells
            b.set_activation(Group(cells), act)
            w_ih = module_param(b, m, path, f"weight_ih{sfx}", (None, src if pos is None else None))
            w_hh = module_param(b, m, path, f"weight_hh{sfx}", (None, out))
            kinds = (("ih", EdgeType.BIAS), ("hh", EdgeType.RNN_HIDDEN_BIAS)) if m.bias else ()
            biases = []  # (record, its bias node, edge type)
            for kind, et in kinds:
                rec = module_param(b, m, path, f"bias_{kind}{sfx}", (None,))
                biases.append((rec, b.new_nodes(1, NodeType.BIAS), et))
            for g in range(d * gates, (d + 1) * gates):  # row blocks, in order
                b.dense(w_ih, src, cells, EdgeType.RNN_INPUT, src_pos=g * reps + offsets)
                b.dense(w_hh, out, cells, EdgeType.RNN_HIDDEN, src_pos=torch.full_like(out, g + 1))
                for rec, node, et in biases:
                    b.dense(rec, node, cells, et, src_pos=torch.tensor([g + 1]))
            if m.proj_size:
                w_hr = module_param(b, m, path, f"weight_hr{sfx}", (out, cells))
                b.dense(w_hr, cells, out, EdgeType.RNN_PROJ)
                b.node_groups[_join(path, f"proj{sfx}")] = out
            b.node_groups[_join(path, sfx[1:])] = cells
            s = len(states)
            ties += [(h0[s], out), (c0[s], cells)]
            states.append((cells, out))
    _tie_states(b, [(a, u) for a, u in ties if a is not None])
    output = torch.cat([out for _, out in states[-dirs:]])
    b.node_groups[path] = output

    def final(ids: list[Tensor]) -> Group | tuple[Group, ...]:
        if len(ids) == 1:  # [1, batch, units]
            return Group(ids[0], SEQ, ndim=x.ndim)
        return tuple(Group(i, FLAT, ndim=(x.ndim or 3) - 1) for i in ids)  # [batch, units]

    h_n = final([out for _, out in states])
    result = Group(output, SEQ, ndim=x.ndim)
    return (result, (h_n, final([cells for cells, _ in states]))) if lstm else (result, h_n)


def _tie_states(b: GraphBuilder, pairs: list[tuple[Tensor, Tensor]]) -> None:
    """Tie unit ``j`` of both node sets of each pair (an initial state, the units it sets).

    Pairs sharing a node set join into one chain of ties, oldest to newest, so every node
    keeps one partner each way.
    """
    chains: list[list[Tensor]] = []
    for pair in pairs:
        joined = [c for c in chains if any(torch.equal(t, u) for t in c for u in pair)]
        chains = [c for c in chains if all(c is not j for j in joined)]
        chains.append([t for c in joined for t in c] + list(pair))
    for chain in chains:
        nodes: list[Tensor] = []
        for t in sorted(chain, key=lambda t: int(t.max())):
            if not any(torch.equal(t, u) for u in nodes):
                nodes.append(t)
        for old, new in zip(nodes, nodes[1:]):
            b.merge(Group(old), Group(new))


@register_converter("transformers.pytorch_utils.Conv1D")
def transposed_linear(b: GraphBuilder, m: nn.Module, path: str, x: Group) -> Group:
    """Hugging Face's ``Conv1D`` (GPT-2): ``y = x W + b`` with ``W [in, out]``, a linear layer
    whose weight is stored transposed: the edges of ``nn.Linear`` holding ``W.T``."""
    b.next_layer()
    x = b.materialize(x, m.nx, f"Conv1D '{path}'")
    out = b.neurons(m.nf)
    rec = module_param(b, m, path, "weight", (x.ids, out))
    b.dense(rec, x.ids, out, EdgeType.LINEAR, flipped=True)  # entry (i, o): in[i] -> out[o]
    _bias(b, m, path, out)
    b.node_groups[path] = out
    return Group(out, SEQ if x.layout == SEQ else FLAT)
