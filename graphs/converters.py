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
convolution weight, residual additions as fixed edges of their own type. Two additions make
the graph's automorphisms exactly the network's permutation symmetries:

* attention heads get a head node tied to its query, key and value dimensions, and query
  dimension ``i`` is tied to key dimension ``i``; without them, dimensions could be swapped
  across heads or between queries and keys, which changes the function;
* GroupNorm groups get a group node tied to the group's channels, so channels cannot move
  between groups.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from einops import repeat
from torch import Tensor, nn

from graphs.builder import FLAT, SEQ, SPATIAL, UNKNOWN, GraphBuilder, Group
from graphs.errors import GraphConstructionError, UnsupportedModuleError
from graphs.features import EdgeType, NodeType, activation_kind

Converter = Callable[..., object]
_REGISTRY: dict[type, Converter] = {}


def register_converter(cls: type) -> Callable[[Converter], Converter]:
    """Decorator registering ``fn(builder, module, path, *inputs)`` for ``cls`` and subclasses."""

    def wrap(fn: Converter) -> Converter:
        _REGISTRY[cls] = fn
        return fn

    return wrap


def find_converter(module: nn.Module) -> Converter | None:
    for cls in type(module).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def has_converter(module: nn.Module) -> bool:
    return find_converter(module) is not None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _bias(b: GraphBuilder, path: str, bias: Tensor | None, dst: Tensor, name: str = "bias"):
    if bias is None:
        return
    node = b.new_nodes(1, NodeType.BIAS)
    b.vector(b.add_param(_join(path, name), bias), node, dst, EdgeType.BIAS)


def _affine(b: GraphBuilder, path: str, weight, bias, dst: Tensor) -> None:
    if weight is not None:
        node = b.new_nodes(1, NodeType.NORM_GAMMA)
        b.vector(b.add_param(_join(path, "weight"), weight), node, dst, EdgeType.NORM_GAMMA)
    if bias is not None:
        node = b.new_nodes(1, NodeType.NORM_BETA)
        b.vector(b.add_param(_join(path, "bias"), bias), node, dst, EdgeType.NORM_BETA)


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
    gamma = b.new_nodes(1, NodeType.NORM_GAMMA)
    shared = b.new_nodes(1, NodeType.ACT_SHARED)
    b.vector(b.add_param(name, param), gamma, shared, EdgeType.NORM_GAMMA)
    b.fixed_edges(shared.expand(dst.numel()), dst, EdgeType.ACT_MEMBER)


@register_converter(nn.Linear)
def linear(b: GraphBuilder, m: nn.Linear, path: str, x: Group, etype=EdgeType.LINEAR) -> Group:
    b.next_layer()
    src, pos = b.resolve(x, m.in_features, f"Linear '{path}'")
    out = b.neurons(m.out_features)
    b.dense(b.add_param(_join(path, "weight"), m.weight), src, out, etype, src_pos=pos)
    _bias(b, path, m.bias, out)
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
    rec = b.add_param(_join(path, "weight"), m.weight)
    if m.transposed:  # weight [in, out / groups, *k]: rows index the sources
        b.dense(rec, x.ids, out, EdgeType.CONV_TRANSPOSE, ksize=ksize, groups=m.groups,
                flipped=True)
    else:  # weight [out, in / groups, *k]
        b.dense(rec, x.ids, out, EdgeType.CONV, ksize=ksize, groups=m.groups)
    _bias(b, path, m.bias, out)
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
    _affine(b, path, m.weight, m.bias, x.ids)
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
    rec = b.add_param(_join(path, "weight"), m.weight)
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
    if m.weight is None and m.bias is None:
        return x
    if len(m.normalized_shape) != 1:
        raise UnsupportedModuleError(
            path,
            [n for n, _ in m.named_parameters(prefix=path)],
            f"LayerNorm over {tuple(m.normalized_shape)}: only the last dimension is supported",
        )
    b.next_layer()
    x = b.materialize(x, m.normalized_shape[0], f"LayerNorm '{path}'")
    _affine(b, path, m.weight, m.bias, x.ids)
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
        _affine(b, path, m.weight, m.bias, x.ids)
    return x


@register_converter(nn.Embedding)
def embedding(b: GraphBuilder, m: nn.Embedding, path: str, tokens: object = None) -> Group:
    b.next_layer()
    vocab = b.new_nodes(m.num_embeddings, NodeType.TOKEN, positional=True)
    out = b.neurons(m.embedding_dim)
    rec = b.add_param(_join(path, "weight"), m.weight)
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
        rec = b.add_param(_join(path, "in_proj_weight"), m.in_proj_weight)
        for src, dst, et in zip((xq, xk, xv), (q, k, v), etypes):
            b.dense(rec, src.ids, dst, et)  # consecutive row blocks of in_proj_weight
    else:
        for nm, src, dst, et in zip("qkv", (xq, xk, xv), (q, k, v), etypes):
            rec = b.add_param(_join(path, f"{nm}_proj_weight"), getattr(m, f"{nm}_proj_weight"))
            b.dense(rec, src.ids, dst, et)
    _bias(b, path, m.in_proj_bias, torch.cat([q, k, v]), name="in_proj_bias")
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
        h = linear(b, m.linear1, _join(path, "linear1"), h)
        b.set_activation(h, activation_kind(m.activation))
        return linear(b, m.linear2, _join(path, "linear2"), h)

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
