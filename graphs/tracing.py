"""Walk a ``torch.fx`` trace of a module and build its parameter graph.

Leaf modules with parameters go to their converter. Everything between leaves decides how
neuron groups connect: residual ``+`` and elementwise ``*`` tie two groups, ``flatten`` /
``view(B, -1)`` turn channels into repeated features, ``cat`` along the feature axis joins
groups, learned tokens and positional embeddings held as bare ``nn.Parameter`` s become
nodes of their own, a bare parameter multiplying a tensor whose neurons it lines up with
(layer scale, ``x * gamma.view(1, -1, 1, 1)``) is a per-channel gain, LayerNorm subclasses with
a ``forward`` of their own (``LayerNorm2d``) are traced through to their ``F.layer_norm``, and
activations / pooling are recorded as node features.
"""

from __future__ import annotations

import dataclasses
import inspect
import operator
import os
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from graphs.builder import (
    FLAT,
    SEQ,
    SPATIAL,
    UNKNOWN,
    GraphBuilder,
    Group,
    ParamRef,
    layout_of,
)
from graphs.converters import (
    find_converter,
    named_affine,
    parameter_tokens,
    shared_gain,
)
from graphs.errors import (
    GraphConstructionError,
    ShapeOperationError,
    UnsupportedModuleError,
    UntraceableModuleError,
)
from graphs.features import Activation, EdgeType, NodeType, activation_kind
from graphs.labels import NO_NEURON, LabelError, compact, group_of, labels
from graphs.recording import is_leaf, record


class _Meta:
    """A traced value that is not an activation (a shape, a size, a constant)."""


_META = _Meta()

# Calls that keep the feature axis where it is (shape operations, which move or split it,
# are in _SHAPE_OPS below).
_PASS_METHODS = {
    "contiguous", "clone", "detach", "to", "float", "double", "half", "type_as", "expand",
    "expand_as", "repeat", "neg", "abs", "pow", "sqrt", "exp", "clamp", "clip", "masked_fill",
    "softmax", "log_softmax", "relu", "tanh", "sigmoid", "sin", "cos",
}
_PASS_FUNCTIONS = {
    F.dropout, F.dropout1d, F.dropout2d, torch.clone, torch.neg, torch.abs, torch.exp,
    torch.cos, torch.clamp, F.normalize, torch.nn.functional.pad, torch.pow, torch.sqrt,
    torch.square,
}
_PASS_MODULES = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity, nn.AlphaDropout, nn.Hardtanh,
    nn.Hardswish, nn.Mish,
)


class _LeafTracer(fx.Tracer):
    """torch.fx's tracer, treating every module with a registered converter as a leaf."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_leaf(m)


def trace(module: nn.Module, stack_traces: bool = False) -> fx.GraphModule:
    """``stack_traces``: record each node's source line (slower; used to explain errors)."""
    tracer = _LeafTracer()
    tracer.record_stack_traces = stack_traces
    try:
        graph = tracer.trace(module)
    except Exception as err:  # fx raises TraceError, TypeError, ... for dynamic modules
        raise UntraceableModuleError(
            f"torch.fx could not trace {type(module).__name__} symbolically: "
            f"{type(err).__name__}: {err}. Pass example inputs "
            "(ParameterGraph.from_module(model, example_inputs=...)) to build the graph from "
            "one run of forward instead, or register a converter for the submodule that "
            "fails."
        ) from err
    return fx.GraphModule(module, graph)


def _type_name(root: nn.Module, path: str) -> str:
    """Class name of the submodule at ``path`` ("" for the root: the user knows which it is)."""
    return type(root.get_submodule(path)).__name__ if path else ""


def _feature_dim(group: Group, dim: int) -> bool:
    """Whether ``dim`` is the feature axis of a tensor laid out as ``group``."""
    if group.layout == SEQ:
        return dim in (-1, 2)
    if group.layout == SPATIAL:
        return dim == 1
    return dim in (1, -1)


# -- axis bookkeeping --------------------------------------------------------------------
# Each traced Group knows its rank (``ndim``, None if unknown) and which axis carries its
# neurons (``axis``: from the front when >= 0, from the end when < 0). A shape operation is
# a function of (rank, axis); when the rank is unknown it is evaluated for a few ranks and
# accepted only if every one gives the same answer (else: a refusal, never a guess).

_TRANSPOSES = {"transpose", "swapaxes", "swapdims"}
_MOVES = {"movedim", "moveaxis"}
_SPLITS = {"chunk", "split", "unbind", "tensor_split", "split_with_sizes"}
_REDUCTIONS = {"mean", "sum", "amax", "max", "amin", "min", "logsumexp", "prod", "std", "var",
               "norm"}
_SHAPE_OPS = (_TRANSPOSES | _MOVES | _SPLITS | _REDUCTIONS | {
    "permute", "flatten", "view", "reshape", "unflatten", "squeeze", "unsqueeze", "narrow",
    "__getitem__", "getitem"})
# Reshapes of a bare parameter that keep the order of its entries (a gain viewed as [C, 1, 1])
_PARAM_VIEWS = {"view", "reshape", "unsqueeze", "squeeze", "flatten", "getitem", "__getitem__",
                "permute", "transpose", "contiguous"}
_GAIN_PRODUCTS = {"mul", "imul", "__mul__", "rmul", "__rmul__", "__imul__"}
_LINEAR_ALGEBRA = {"matmul", "mm", "bmm", "einsum", "__matmul__", "baddbmm", "addmm", "linear",
                   "bilinear", "tensordot", "outer", "cross", "roll", "flip", "cumsum",
                   "cumprod", "sort", "gather", "scatter", "index_select", "take_along_dim",
                   "flatten_parameters", "channel_shuffle", "pixel_shuffle", "pixel_unshuffle",
                   "unfold", "fold"}
# Layers and the axis they read: the last one, or axis 1 (channels).
_READS_LAST = (nn.Linear, nn.LayerNorm, nn.MultiheadAttention, nn.TransformerEncoderLayer,
               nn.TransformerEncoder)
_READS_CHANNELS = (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm)
# With recorded shapes these move data without arithmetic: the tracer runs them on the labels
# (graphs.labels) and reads where the neurons went.
_DATA_MOVES = {
    "view", "reshape", "flatten", "unflatten", "transpose", "swapaxes", "swapdims", "t",
    "permute", "movedim", "moveaxis", "squeeze", "unsqueeze", "expand", "expand_as", "view_as",
    "reshape_as", "repeat", "__getitem__", "narrow", "chunk", "split", "unbind",
    "tensor_split", "split_with_sizes", "roll", "flip", "channel_shuffle", "pixel_shuffle",
    "pixel_unshuffle", "pad", "select", "index_select", "repeat_interleave", "tile",
}
_MATMULS = {"matmul", "__matmul__", "bmm"}
# Elementwise and identity-like calls a factored group may go through unchanged.
_FACTORED_PASS = {
    "contiguous", "clone", "to", "float", "double", "half", "bfloat16", "type_as", "type",
    "dropout", "softmax", "log_softmax", "neg", "__neg__", "masked_fill", "tanh", "sigmoid",
    "relu", "gelu", "silu", "exp", "clamp", "sqrt", "rsqrt",
}
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
_REFUSED_MODULES = (nn.ChannelShuffle, nn.PixelShuffle, nn.PixelUnshuffle, nn.Fold, nn.Unfold,
                    nn.Unflatten)


_SUMS = {"add", "iadd", "sub", "isub", "__add__", "__sub__", "radd", "rsub", "__iadd__",
         "__isub__", "__radd__", "__rsub__"}
_PRODUCTS = {"mul", "imul", "__mul__", "rmul", "truediv", "div", "__truediv__", "__imul__",
             "__rmul__", "__itruediv__", "__rtruediv__", "__div__"}
_UNHANDLED = object()


class _Refuse(Exception):
    """Raised by an axis rule; the walker turns it into a ShapeOperationError."""


class _Same:
    """The pieces of a split along a non-neuron axis: every piece is the same group."""

    def __init__(self, group: Group):
        self.group = group

    def __getitem__(self, index):
        return self.group


def _axes(g: Group) -> tuple[int | None, int]:
    """``(rank or None, neuron axis)``; the axis is >= 0 whenever the rank is known."""
    if g.axis is not None:
        return g.ndim, g.axis if g.ndim is None or g.axis >= 0 else g.axis + g.ndim
    if g.layout == SPATIAL:
        return g.ndim, 1
    n = g.ndim if g.ndim is not None else 3 if g.layout == SEQ else None
    return n, -1 if n is None else n - 1


def _norm(d: Any, n: int, what: str = "dimension") -> int:
    if not isinstance(d, int) or isinstance(d, bool):
        raise _Refuse(f"the {what} {d!r} is not a constant integer")
    if not -n <= d < n:
        raise _Refuse(f"{what} {d} is out of range for a tensor of rank {n}")
    return d % n


def _dims(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, tuple | list) else [value]


def _need(dims, a: int) -> int:
    """The smallest rank for which ``dims`` and the axis ``a`` make sense."""
    need = a + 1 if a >= 0 else -a
    for d in dims:
        if isinstance(d, int):
            need = max(need, d + 1 if d >= 0 else -d)
    return max(need, 2)


def _split_sizes(name: str, total: int, arg: Any) -> list[int]:
    if name == "chunk":
        if not isinstance(arg, int) or arg < 1:
            raise _Refuse(f"chunk count {arg!r} is not a constant")
        size = -(-total // arg)
        arg = size
    if isinstance(arg, int):
        return [arg] * (total // arg) + ([total % arg] if total % arg else [])
    if isinstance(arg, tuple | list) and all(isinstance(s, int) for s in arg):
        if sum(arg) != total:
            raise _Refuse(f"split sizes {list(arg)} do not add up to the {total} neurons")
        return list(arg)
    raise _Refuse(f"split sizes {arg!r} are not constants")


def _index_entries(index: Any, n: int) -> list:
    """``x[index]`` as one entry per old dimension (None entries insert an axis)."""
    entries = list(index) if isinstance(index, tuple) else [index]
    if any(isinstance(e, Group | ParamRef) for e in entries):
        raise _Refuse("indexing by an activation (data-dependent selection)")
    used = sum(e is not None and e is not Ellipsis for e in entries)
    if sum(e is Ellipsis for e in entries) > 1 or used > n:
        raise _Refuse(f"index {index!r} does not fit a tensor of rank {n}")
    if Ellipsis in entries:
        i = entries.index(Ellipsis)
        return entries[:i] + [slice(None)] * (n - used) + entries[i + 1:]
    return entries + [slice(None)] * (n - used)


def _op_name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _where(node: fx.Node) -> tuple[str, str]:
    """The module path a node was traced in, and its source line (when recorded)."""
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack)) if stack else ""
    lines = [ln.strip() for ln in (node.stack_trace or "").strip().splitlines()]
    frames = [(ln, nxt) for ln, nxt in zip(lines, lines[1:] + [""]) if ln.startswith("File ")]
    user = [f for f in frames if f"{os.sep}torch{os.sep}" not in f[0]]  # innermost user frame
    line = ": ".join(p for p in user[-1] if p) if user else ""
    return path, line


class _Walker:
    def __init__(self, graph: fx.Graph, root: nn.Module, recorded: bool = False):
        self.graph = graph
        self.root = root
        self.recorded = recorded  # real shapes in every node's meta["shape"]
        self.b = GraphBuilder()
        self.env: dict[fx.Node, Any] = {}
        self.movers: dict[int, tuple[fx.Node, str]] = {}  # id(group) -> op that moved its axis
        self.env_keep: list[Group] = []

    # -- helpers ---------------------------------------------------------
    def value(self, arg: Any) -> Any:
        return fx.node.map_arg(arg, lambda n: self.env[n])

    @staticmethod
    def groups(values) -> list[Group]:
        return [v for v in values if isinstance(v, Group)]

    def unsupported_param(self, ref: ParamRef, what: str) -> UnsupportedModuleError:
        path, _, _ = ref.name.rpartition(".")
        return UnsupportedModuleError(path, [ref.name], f"the parameter is used by {what}",
                                      _type_name(self.root, path))

    # -- axis bookkeeping ------------------------------------------------
    def refuse(self, node: fx.Node, op: str, reason: str) -> ShapeOperationError:
        path, line = _where(node)
        return ShapeOperationError(op, path, f"{reason} [fx node '{node.name}']", line)

    def relayout(self, x: Group, n: int | None, a: int, node: fx.Node | None = None,
                 **changes) -> Group:
        """``x`` with rank ``n`` and neuron axis ``a``; ``node`` marks an op that moved it."""
        layout = x.layout
        if n is not None:
            a = a + n if a < 0 else a
            layout = layout_of(n, a) or layout
        elif a == -1 and layout == SPATIAL:
            layout = FLAT
        out = dataclasses.replace(x, layout=layout, ndim=n, axis=a, **changes)
        mover = (node, _op_name(node)) if node is not None else self.movers.get(id(x))
        if mover is not None:
            self.movers[id(out)] = mover
            self.env_keep.append(out)  # ids of live objects only
        return out

    def apply(self, node: fx.Node, op: str, x: Group, fn, dims=()) -> tuple:
        """Run the axis rule ``fn(rank, axis) -> (rank, axis, extra)`` on ``x``.

        With an unknown rank the rule runs for three ranks; the answer must not depend on it.
        """
        n, a = _axes(x)
        try:
            if n is not None:
                return fn(n, a)
            outs, errs = [], []
            base = _need(dims, a)
            for nh in range(base, base + 3):
                try:
                    n2, a2, extra = fn(nh, a if a >= 0 else a + nh)
                except _Refuse as err:
                    errs.append(err)
                    continue
                outs.append((n2, a2, a2 - n2, extra))
            if errs and not outs:
                raise errs[0]
            if not errs and all(o[3] == outs[0][3] for o in outs):
                if all(o[:2] == outs[0][:2] for o in outs):
                    return outs[0][0], outs[0][1], outs[0][3]
                for k in (1, 2):  # the axis, from the front or from the end
                    if all(o[k] == outs[0][k] for o in outs):
                        return None, outs[0][k], outs[0][3]
            side = "from the end" if a < 0 else "from the front"
            raise _Refuse(
                f"the rank of this tensor is unknown (its neurons are axis {a}, counted {side}), "
                "so whether this moves, splits or merges the neuron axis depends on it (the "
                "rank of the network input is not known to the tracer); start the network "
                "with a layer of known rank (a convolution) or use negative dims"
            )
        except _Refuse as err:
            raise self.refuse(node, op, str(err)) from None

    def check_read(self, node: fx.Node, m: nn.Module, args) -> None:
        """A layer must read the axis its input's neurons are on."""
        for g in self.groups(args):
            if g.ids is None:
                continue
            n, a = _axes(g)
            if isinstance(m, _READS_LAST):
                want, ok = "its last axis", a == n - 1 if n is not None else a == -1 or a >= 0
            elif isinstance(m, _READS_CHANNELS):
                want, ok = "axis 1 (channels)", a == 1 if n is not None else a in (1, -1)
            else:
                want, ok = "axis 1 or the last axis", n is None or a in (1, n - 1)
            if ok:
                continue
            layer = f"{type(m).__name__} '{node.target}' reads {want}"
            where = f"axis {a} of a rank-{n} tensor" if n is not None else f"axis {a}"
            reason = (
                f"{layer}, but the neurons of the tensor it reads are on {where}: that layer "
                "would mix positions, not neurons (token mixing, as in MLP-Mixer, is not "
                "supported), and two axes must never be confused"
            )
            mover = self.movers.get(id(g))
            if mover is not None:
                raise self.refuse(mover[0], mover[1], f"moves the neuron axis; {reason}")
            raise self.refuse(node, type(m).__name__, reason)

    def fix_output(self, m: nn.Module, args, out: Any) -> Any:
        """Give a converter's output group its rank and neuron axis."""
        first = out[0] if isinstance(out, tuple) and out else out
        inputs = self.groups(args)
        if not isinstance(first, Group) or first.ids is None or not inputs:
            return out
        n, a = _axes(inputs[0])
        if isinstance(m, _READS_LAST):
            fixed = self.relayout(first, n, -1 if n is None else n - 1)
        elif isinstance(m, nn.modules.conv._ConvNd):
            fixed = self.relayout(first, 2 + len(m.kernel_size), 1)
        elif isinstance(m, _READS_CHANNELS) and inputs[0].ids is not None:
            fixed = self.relayout(first, n, a)
        else:
            return out
        return (fixed, *out[1:]) if isinstance(out, tuple) else fixed

    def aligned(self, node: fx.Node, name: str, a: Group, b: Group) -> None:
        """Broadcasting pairs axes from the end: both neuron axes must coincide."""
        if a.ids is None or b.ids is None:
            return
        ends = []
        for g in (a, b):
            n, ax = _axes(g)
            ends.append(ax - n if n is not None else ax if ax < 0 else None)
        if None not in ends and ends[0] != ends[1]:
            raise self.refuse(
                node, name, f"combines two tensors whose neurons are on different axes "
                f"({ends[0]} and {ends[1]}, from the end): broadcasting would pair neurons "
                "of one with positions of the other"
            )

    def flatten(self, node: fx.Node | None, g: Group, start: Any, end: Any = -1) -> Group:
        if start == 0:
            raise GraphConstructionError("flattening the batch dimension is not supported")
        if g.ids is None:  # the network input, flattened: its features are input nodes
            return Group(None, FLAT, "interleave", g.input_key) if end == -1 else g

        def fn(n, a):
            s, e = _norm(start, n), _norm(end, n)
            if s == 0:
                raise _Refuse("flattening the batch dimension is not supported")
            if s > e:
                raise _Refuse(f"start_dim {start} is after end_dim {end}")
            merged = n - (e - s)
            if a < s:
                return merged, a, None
            if a > e:
                return merged, a - (e - s), None
            if s == e:
                return merged, a, None
            if a == s:
                return merged, s, "interleave"
            if a == e:
                return merged, s, "tile"
            raise _Refuse("the neuron axis would sit in the middle of the flattened axes")

        if node is None:  # nn.Flatten inside call_module passes its node below
            raise AssertionError("flatten needs its fx node")
        n, a, rep = self.apply(node, "flatten", g, fn, (start, end))
        if rep is not None and g.repeat is not None and g.repeat != rep:
            raise self.refuse(node, "flatten", "flattens an already flattened tensor another way")
        return self.relayout(g, n, a, repeat=rep or g.repeat)

    def shape_op(self, node: fx.Node, name: str, x: Group, args, kwargs) -> Any:
        """Transform the axis labels of ``x`` through one shape operation."""

        def arg(i, key, default=None):
            return kwargs.get(key, args[i] if len(args) > i else default)

        if name in _TRANSPOSES:
            if x.ids is None:
                return x
            d0, d1 = arg(1, "dim0"), arg(2, "dim1")

            def fn(n, a):
                i, j = _norm(d0, n), _norm(d1, n)
                return n, j if a == i else i if a == j else a, None

            n, a, _ = self.apply(node, name, x, fn, (d0, d1))
            return self.relayout(x, n, a, node)
        if name in ("permute", *_MOVES):
            if x.ids is None:
                return x
            if name == "permute":
                dims = list(args[1:]) if len(args) > 1 else _dims(kwargs.get("dims"))
                if len(dims) == 1 and isinstance(dims[0], tuple | list):
                    dims = list(dims[0])
                src, dst = list(range(len(dims))), dims  # output axis i is input axis dims[i]
            else:
                src, dst = _dims(arg(1, "source")), _dims(arg(2, "destination"))

            def fn(n, a):
                if name == "permute":
                    if len(dims) != n:
                        raise _Refuse(f"permute of {len(dims)} axes on a rank-{n} tensor")
                    return n, [_norm(d, n) for d in dims].index(a), None
                s, d = [_norm(v, n) for v in src], [_norm(v, n) for v in dst]
                order = [None] * n
                for si, di in zip(s, d):
                    order[di] = si
                rest = iter(i for i in range(n) if i not in s)
                return n, [o if o is not None else next(rest) for o in order].index(a), None

            n, a, _ = self.apply(node, name, x, fn, src + dst if name != "permute" else dims)
            return self.relayout(x, n, a, node)
        if name == "flatten":
            return self.flatten(node, x, arg(1, "start_dim", 0), arg(2, "end_dim", -1))
        if name in ("view", "reshape"):
            shape = list(args[1:]) if len(args) > 1 else _dims(kwargs.get("shape"))
            if len(shape) == 1 and isinstance(shape[0], tuple | list):
                shape = list(shape[0])
            if len(shape) == 2 and isinstance(shape[1], int) and shape[1] == -1:
                return self.flatten(node, x, 1, -1)
            if x.ids is None:
                return x  # the network input reshaped: the layer reading it makes its nodes
            n, a = _axes(x)
            last = a == n - 1 if n is not None else a == -1
            ones = 0  # trailing size-1 axes ([B, C] -> [B, C, 1, 1]) do not move the neurons
            while ones < len(shape) - 1 and isinstance(shape[-1 - ones], int) \
                    and shape[-1 - ones] == 1 and x.ids.numel() != 1:
                ones += 1
            size = shape[-1 - ones] if shape else None
            if last and x.repeat is None and isinstance(size, int) and size == x.ids.numel():
                return self.relayout(x, len(shape), len(shape) - 1 - ones)
            raise self.refuse(
                node, name, "the tracer follows a reshape only when the neurons are on the "
                "last axis and stay there whole (x.view(B, -1) flattens); splitting neurons "
                "into heads or groups needs a converter for the module that does it"
            )
        if x.ids is None:  # the network input: only splits can confuse its features
            if name in _SPLITS and arg(2 if name != "unbind" else 1, "dim", 0) != 0:
                raise self.refuse(node, name, "splits the network input before any layer "
                                  "reads it (its neurons are not known yet)")
            if name in ("max", "min") and arg(1, "dim") is not None:
                return x, _META
            return _Same(x) if name in _SPLITS else x
        if name == "unflatten":
            dim, sizes = arg(1, "dim"), _dims(arg(2, "sizes"))

            def fn(n, a):
                d = _norm(dim, n)
                if d == a:
                    raise _Refuse("it splits the neuron axis (e.g. into heads); register a "
                                  "converter for the module that does this")
                return n + len(sizes) - 1, a + len(sizes) - 1 if d < a else a, None

            n, a, _ = self.apply(node, name, x, fn, (dim,))
            return self.relayout(x, n, a)
        if name == "squeeze":
            dim = arg(1, "dim")
            if dim is None:
                n, a = _axes(x)
                if a == -1 or (n is not None and a == n - 1):
                    return self.relayout(x, None, -1)
                raise self.refuse(node, name, "squeeze() without a dim may remove any size-1 "
                                  "axis; use flatten(1) or squeeze(dim)")

            def fn(n, a):
                ds = sorted({_norm(d, n) for d in _dims(dim)})
                if a in ds:
                    raise _Refuse("it removes the neuron axis")
                return n - len(ds), a - sum(d < a for d in ds), None

            n, a, _ = self.apply(node, name, x, fn, _dims(dim))
            return self.relayout(x, n, a)
        if name == "unsqueeze":
            dim = arg(1, "dim")

            def fn(n, a):
                d = _norm(dim, n + 1)
                return n + 1, a + 1 if d <= a else a, None

            n, a, _ = self.apply(node, name, x, fn, (dim,))
            return self.relayout(x, n, a)
        if name == "narrow" or name in _SPLITS:
            key = 1 if name == "unbind" else 2
            dim = arg(key if name != "narrow" else 1, "dim", 0)

            def fn(n, a):
                d = _norm(dim, n)
                if name == "unbind":
                    if d == a:
                        raise _Refuse("unbind along the neuron axis gives one tensor per neuron")
                    return n - 1, a - (d < a), None
                return n, a, d == a

            n, a, hit = self.apply(node, name, x, fn, (dim,))
            if name == "unbind":
                return _Same(self.relayout(x, n, a))
            if not hit:
                return _Same(x) if name in _SPLITS else x
            if x.repeat is not None:
                raise self.refuse(node, name, "splits the neuron axis of a flattened tensor")
            total = x.ids.numel()
            try:
                if name == "narrow":
                    start, length = arg(2, "start"), arg(3, "length")
                    if not isinstance(start, int) or not isinstance(length, int):
                        raise _Refuse("narrow bounds are not constants")
                    start = start % total if start < 0 else start
                    return self.relayout(x, n, a, ids=x.ids[start:start + length])
                if name == "tensor_split":
                    raise _Refuse("tensor_split along the neuron axis is not supported")
                keys = ("chunks", "split_size", "split_size_or_sections", "split_sizes")
                spec = args[1] if len(args) > 1 else next(kwargs[k] for k in keys if k in kwargs)
                sizes = _split_sizes(name, total, spec)
            except _Refuse as err:
                raise self.refuse(node, name, str(err)) from None
            offsets = [sum(sizes[:i]) for i in range(len(sizes))]
            return tuple(self.relayout(x, n, a, ids=x.ids[o:o + s])
                         for o, s in zip(offsets, sizes))
        if name in ("__getitem__", "getitem"):
            index = args[1]

            def fn(n, a):
                q, a2, hit, adv = 0, None, None, []
                for p, e in enumerate(_index_entries(index, n)):
                    if e is None:
                        q += 1
                        continue
                    if isinstance(e, int) and not isinstance(e, bool):
                        if p == a:
                            raise _Refuse("an integer index on the neuron axis selects a "
                                          "single neuron")
                        continue
                    if p == a:
                        if not isinstance(e, slice):
                            raise _Refuse("advanced indexing on the neuron axis")
                        a2 = q
                        hit = None if e == slice(None) else (e.start, e.stop, e.step)
                    elif not isinstance(e, slice):
                        adv.append("before" if p < a else "after")
                    q += 1
                if len(adv) > 1:
                    raise _Refuse("several advanced indices (they may move axes)")
                return q, a2, (hit, tuple(adv))

            n, a, (hit, adv) = self.apply(node, "__getitem__", x, fn)
            if adv:  # an index tensor of unknown rank: only one side of the axis is sure
                a, n = (a - n if adv[0] == "before" and n is not None else a), None
            if hit is None:
                return self.relayout(x, n, a)
            if x.repeat is not None or not all(v is None or isinstance(v, int) for v in hit):
                raise self.refuse(node, "__getitem__", "slices the neuron axis of a flattened "
                                  "tensor, or with bounds that are not constants")
            if hit[2] is not None and hit[2] < 1:
                raise self.refuse(node, "__getitem__", "a negative slice step")
            return self.relayout(x, n, a, ids=x.ids[slice(*hit)])
        if name in _REDUCTIONS:
            dim = kwargs.get("dim", args[2] if len(args) > 2 else None) if name == "norm" \
                else arg(1, "dim")
            keepdim = kwargs.get("keepdim", False)
            if dim is None:
                return _META  # reduced over everything: a statistic, not neurons
            if name in ("max", "min") and isinstance(dim, Group):  # torch.max(a, b)
                return self.combine((x, dim), EdgeType.PRODUCT, node, name)

            def fn(n, a):
                ds = sorted({_norm(d, n) for d in _dims(dim)})
                if a in ds:
                    return n, a, "stat"
                if keepdim:
                    return n, a, None
                return n - len(ds), a - sum(d < a for d in ds), None

            n, a, stat = self.apply(node, name, x, fn, _dims(dim))
            out = _META if stat else self.relayout(x, n, a)
            return (out, _META) if name in ("max", "min") else out
        raise AssertionError(name)

    def check_pool(self, node: fx.Node, name: str, x: Group) -> None:
        """Pooling and resizing act on the last k axes; the neurons must not be among them."""
        match = re.search(r"(\d)d$", name)
        if match is None or "pool" not in name.lower() or x.ids is None:
            return
        k = int(match.group(1))
        n, a = _axes(x)
        if (n is not None and a >= n - k) or (n is None and a < 0 and -a <= k):
            raise self.refuse(node, name, f"pools over the last {k} axes, and the neurons are "
                              "among them")

    # -- node kinds ------------------------------------------------------
    def call_module(self, node: fx.Node) -> Any:
        m = self.root.get_submodule(node.target)
        args = self.value(node.args)
        kwargs = self.value(node.kwargs)
        converter = find_converter(m)
        split = [g for g in self.groups(list(args) + list(kwargs.values())) if g.factored]
        if split and (converter is not None or not isinstance(m, _PASS_MODULES)
                      and activation_kind(m) == Activation.OTHER):
            raise self.refuse(node, type(m).__name__, f"'{node.target}' reads a tensor whose "
                              "neurons lie along several axes (split into heads); layers must "
                              "read one neuron axis")
        if converter is not None:
            try:
                inspect.signature(converter).bind(self.b, m, node.target, *args, **kwargs)
            except TypeError as err:
                raise GraphConstructionError(
                    f"submodule '{node.target}' ({type(m).__name__}) is called with arguments "
                    f"its parameter-graph converter does not take ({err}); positional "
                    f"{len(args)}, keywords {sorted(kwargs)}"
                ) from err
            mixed = self.token_mixing(node, m, converter, args)
            if mixed is not None:
                return mixed
            sided = [g for g in self.groups(list(args) + list(kwargs.values())) if g.side]
            if sided:
                raise self.refuse(node, type(m).__name__, f"'{node.target}' reads a tensor mixed "
                                  "along its positions (token mixing) other than as a Linear")
            self.check_read(node, m, list(args) + list(kwargs.values()))
            out = self.fix_output(m, args, converter(self.b, m, node.target, *args, **kwargs))
            if isinstance(m, _NORMS) and isinstance(out, Group):  # timm's BatchNormAct2d
                for child in m.children():
                    kind = activation_kind(child)
                    if kind not in (Activation.NONE, Activation.OTHER):
                        self.b.set_activation(out, kind)
            return out
        names = [f"{node.target}.{n}" for n, _ in m.named_parameters()]
        if names:
            raise UnsupportedModuleError(node.target, names, module_type=type(m).__name__)
        x = args[0] if args else None
        if not isinstance(x, Group):
            return _META
        if self.recorded and isinstance(m, (nn.Flatten, *_REFUSED_MODULES)) \
                and x.ids is not None and x.repeat is None:
            shape = self.shape(node.args[0])
            try:
                return group_of(m(labels(x, shape).expand(shape)), x)
            except LabelError as err:
                raise self.refuse(node, type(m).__name__, str(err)) from None
        if isinstance(m, nn.Flatten):
            return self.flatten(node, x, m.start_dim, m.end_dim)
        if isinstance(m, _REFUSED_MODULES) and x.ids is not None:
            raise self.refuse(node, type(m).__name__, "moves neurons across axes (channels into "
                              "space, shuffles or unflattens them); not supported")
        if x.side is not None and not isinstance(m, _PASS_MODULES) \
                and activation_kind(m) in (Activation.NONE, Activation.OTHER):
            raise self.refuse(node, type(m).__name__, "reads a tensor mixed along its positions "
                              "(token mixing)")
        self.check_pool(node, type(m).__name__, x)
        kind = activation_kind(m)
        if kind != Activation.OTHER:
            self.activate(x, kind)
            return x
        if isinstance(m, _PASS_MODULES):
            return x
        return x  # a parameter-free module we know nothing about keeps the feature axis

    def call_function(self, node: fx.Node, method: bool) -> Any:
        target = node.target
        args = self.value(node.args)
        kwargs = self.value(node.kwargs)
        name = target if method else getattr(target, "__name__", str(target))
        flat_args = list(args) + list(kwargs.values())
        refs = [a for a in flat_args if isinstance(a, ParamRef)]
        tensors = flat_args[0] if name in ("cat", "concat", "stack") else None

        if target in (operator.getitem,) and not isinstance(args[0], Group | ParamRef):
            container = args[0]
            if isinstance(container, _Same):
                return container.group
            return container[args[1]] if isinstance(container, tuple | list) else _META
        if name in ("size", "dim", "numel") or target in (getattr, len):
            return _META
        if self.recorded:
            handled = self.recorded_call(node, name, target, method, args, kwargs)
            if handled is not _UNHANDLED:
                return handled
        if name in ("cat", "concat", "stack"):
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            return self.concat(node, name, list(tensors), dim)
        if name in _SUMS:
            return self.combine(args, EdgeType.RESIDUAL, node, name)
        if name in _PRODUCTS:
            return self.combine(args, EdgeType.PRODUCT, node, name)
        if name == "layer_norm" and args and isinstance(args[0], Group):
            return self.layer_norm(node, args, kwargs)
        if name == "linear" and len(refs) == len(flat_args) - 1 and isinstance(args[0], Group):
            return self.functional_linear(node, args, kwargs)
        if refs:
            if name in ("expand", "expand_as", "repeat", "to", "type_as", "contiguous", "float",
                        "double", "half"):
                return args[0]
            if name in _PARAM_VIEWS and args and isinstance(args[0], ParamRef):
                return self.param_view(args[0], name, args[1:], kwargs)
            raise self.unsupported_param(refs[0], f"'{name}'")
        groups = self.groups(flat_args)
        if not groups:
            return _META
        x = args[0] if isinstance(args[0], Group) else groups[0]
        if (name in _SHAPE_OPS or target is operator.getitem) and args and x is args[0]:
            return self.shape_op(node, "__getitem__" if target is operator.getitem else name,
                                 x, args, kwargs)
        self.check_pool(node, name, x)
        if name in _LINEAR_ALGEBRA:
            raise self.refuse(node, name, "mixes or reorders neurons in a way the parameter "
                              "graph does not follow; register a converter for the module "
                              "that contains it")
        kind = activation_kind(name) if method else activation_kind(target)
        if kind not in (Activation.NONE, Activation.OTHER):
            self.b.set_activation(x, kind)
            return x
        if len({id(g) for g in groups}) > 1 and not all(
            torch.equal(g.ids, groups[0].ids) for g in groups if g.ids is not None
        ):
            raise GraphConstructionError(
                f"'{name}' combines several activations in a way the parameter graph does not "
                "understand; register a converter for the module that contains it"
            )
        return x

    # -- recorded runs: real shapes, labels ---------------------------------
    @staticmethod
    def shape(arg: Any) -> tuple[int, ...] | None:
        if isinstance(arg, fx.Node):
            return arg.meta.get("shape")
        return tuple(arg.shape) if isinstance(arg, torch.Tensor) else None

    def recorded_call(self, node: fx.Node, name: str, target, method: bool, args, kwargs) -> Any:
        """Calls a recorded run follows exactly (see :mod:`graphs.labels`); ``_UNHANDLED``
        leaves the call to the rules shared with symbolic traces."""
        flat = list(args) + list(kwargs.values())
        for v in list(flat):
            if isinstance(v, tuple | list):
                flat.extend(v)
        groups = [g for g in self.groups(flat) if g.ids is not None]
        factored = any(g.factored for g in groups)
        try:
            if any(g.side is not None for g in groups):
                return self.mixed_call(node, name, target, method, args, kwargs, groups)
            if name == "__setitem__" and groups:
                raise LabelError("it writes into an activation in place (x[...] = ...); "
                                 "write the result to a new tensor (torch.where, cat)")
            if name == "scaled_dot_product_attention":
                return self.attention(node, args, kwargs)
            if name in _MATMULS and groups:
                return self.matmul(args[0], args[1], self.shape(node.args[0]),
                                   self.shape(node.args[1]), node.meta.get("shape"))
            x = args[0] if args else None
            if isinstance(x, Group) and x.ids is not None and (x.repeat is None or factored):
                if name in _DATA_MOVES:
                    return self.moved(node, name, target, method, x, args, kwargs)
                if name in _REDUCTIONS and factored:
                    return self.reduced(node, name, x, args, kwargs)
            if name in _SUMS | _PRODUCTS:
                return self.elementwise(node, name, args)
            if name in ("cat", "concat") and not factored and self.joins_neurons(node, args,
                                                                                  kwargs):
                return self.moved(node, name, target, method, None, args, kwargs)
            if not factored:
                return _UNHANDLED
            if name in ("cat", "concat", "stack"):
                return self.moved(node, name, target, method, None, args, kwargs)
            if name in _FACTORED_PASS:
                kind = activation_kind(name) if method else activation_kind(target)
                if kind not in (Activation.NONE, Activation.OTHER):
                    self.b.set_activation(x, kind)
                return x
        except LabelError as err:
            raise self.refuse(node, name, str(err)) from None
        raise self.refuse(node, name, "reads a tensor whose neurons lie along several axes "
                          "(split into heads) in a way the tracer does not follow")

    def joins_neurons(self, node: fx.Node, args, kwargs) -> bool:
        """A concatenation of groups along their neuron axis (the same group several times
        becomes one group seen several times, each copy at its own position)."""
        tensors = args[0] if args else kwargs.get("tensors", ())
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if not tensors or not isinstance(dim, int):
            return False
        for t in tensors:
            if not isinstance(t, Group) or t.ids is None or t.repeat is not None:
                return False
            rank, a = _axes(t)
            if rank is None or dim % rank != a:
                return False
        return True

    def moved(self, node: fx.Node, name: str, target, method: bool, x: Group | None, args,
              kwargs) -> Any:
        """A data movement, run on the labels."""
        if name in ("cat", "concat", "stack"):
            # an empty constant (a key-value cache's first state) adds nothing
            pairs = [(t, n) for t, n in zip(args[0], node.args[0])
                     if not (isinstance(t, torch.Tensor) and t.numel() == 0)]
            if not all(isinstance(t, Group) and t.ids is not None for t, _ in pairs):
                raise LabelError("it concatenates a tensor split into heads with other values")
            full = [labels(t, self.shape(n)).expand(self.shape(n)) for t, n in pairs]
            out = compact(target(full, *args[1:], **kwargs))
            if not pairs[0][0].factored:
                out = self.copies(out)
            return group_of(out, pairs[0][0])
        rest = list(args[1:])
        if any(isinstance(v, Group | ParamRef | _Meta) for v in [*rest, *kwargs.values()]):
            if name not in ("expand_as", "view_as", "reshape_as"):
                raise LabelError("its arguments depend on activations")
        in_shape, out_shape = self.shape(node.args[0]), node.meta.get("shape")

        def run(g: Group) -> Any:
            full = labels(g, in_shape).expand(in_shape)
            if name in ("expand_as", "view_as", "reshape_as"):
                return full.reshape(out_shape) if name != "expand_as" else full.expand(out_shape)
            if name == "pad":
                pad = kwargs.get("pad", rest[0] if rest else None)
                mode = kwargs.get("mode", rest[1] if len(rest) > 1 else "constant")
                padded = F.pad(full.double(), pad, mode, float(NO_NEURON)) \
                    if mode == "constant" else F.pad(full.double()[None], pad, mode)[0]
                return padded.long()
            if method:
                return getattr(full, "reshape" if name == "view" else name)(*rest, **kwargs)
            return target(full, *rest, **kwargs)

        plain = dataclasses.replace(x, side=None)
        out = run(plain)
        if isinstance(out, tuple | list):
            if x.side is not None:
                raise LabelError("it splits a tensor mixed along its positions (token mixing)")
            return tuple(group_of(o, plain) for o in out)
        result = group_of(out, plain)
        if x.side is not None:  # token-mixing neurons: kept while they are the last axis
            side = group_of(run(x.side), x.side)
            n, a = _axes(side)
            if not side.factored and n is not None and a == n - 1:
                return dataclasses.replace(result, side=side)
            self.drop_side(x)
        return result

    def mixed_call(self, node: fx.Node, name: str, target, method: bool, args, kwargs,
                   groups) -> Any:
        """A call on a tensor carrying token-mixing neurons (see :meth:`token_mixing`)."""
        x = args[0] if args and isinstance(args[0], Group) else None
        if name in _DATA_MOVES and x is not None and x.side is not None:
            return self.moved(node, name, target, method, x, args, kwargs)
        if name in _SUMS | _PRODUCTS:  # combined with token-ordered values: back to positions
            for g in groups:
                if g.side is not None:
                    self.drop_side(g)
            plain = tuple(dataclasses.replace(a, side=None) if isinstance(a, Group) else a
                          for a in args)
            etype = EdgeType.RESIDUAL if name in _SUMS else EdgeType.PRODUCT
            return self.combine(plain, etype, node, name)
        kind = activation_kind(name) if method else activation_kind(target)
        if x is not None and kind not in (Activation.NONE, Activation.OTHER):
            self.activate(x, kind)
            return x
        if x is not None and name in _FACTORED_PASS:
            return x
        raise LabelError("it reads a tensor mixed along its positions (token mixing) in a way "
                         "the tracer does not follow")

    def drop_side(self, x: Group) -> None:
        """Token-mixing neurons turned back into positions: the last layer that mixed them
        wrote one output per token, in token order, so those neurons are pinned."""
        ids = x.side.ids
        self.b.pin(ids, torch.arange(1, ids.numel() + 1))

    def token_mixing(self, node: fx.Node, m: nn.Module, converter, args) -> Group | None:
        """A ``Linear`` reading the last axis while the neurons sit on another one and the
        last axis carries positions (MLP-Mixer's token mixing, recorded runs only): the
        positions become fixed nodes the layer reads, and its output neurons ride along the
        tensor as its ``side`` group until they turn back into positions."""
        x = args[0] if len(args) == 1 and isinstance(args[0], Group) else None
        if (not self.recorded or not isinstance(m, nn.Linear) or x is None or x.ids is None
                or x.factored or x.repeat is not None):
            return None
        n, a = _axes(x)
        if x.side is not None:
            src = x.side
        else:
            shape = self.shape(node.args[0])
            if n is None or a == n - 1 or shape is None or shape[-1] != m.in_features:
                return None
            src = Group(self.b.new_nodes(shape[-1], NodeType.POSITION, positional=True), SEQ)
        out = converter(self.b, m, node.target, dataclasses.replace(src, side=None))
        return dataclasses.replace(x, side=self.relayout(Group(out.ids, SEQ), n, n - 1))

    def activate(self, x: Group, kind: Activation) -> None:
        self.b.set_activation(x.side if x.side is not None else x, kind)

    def copies(self, lab: Tensor) -> Tensor:
        """A concatenation that repeats neurons (``cat([x0, x1, x2, x3], -1)`` of four slices of
        one group, as Swin's patch merging): each occurrence becomes a node of its own, tied
        to its neuron by a ``COPY`` edge whose position says which copy it is."""
        ids = lab.flatten()
        if torch.unique(ids).numel() == ids.numel():
            return lab
        order = torch.argsort(ids, stable=True)
        sorted_ids = ids[order]
        starts = torch.searchsorted(sorted_ids, sorted_ids)  # first occurrence of each id
        copy = torch.empty_like(ids)
        copy[order] = torch.arange(ids.numel()) - starts + 1
        self.b.next_layer()
        new = self.b.neurons(ids.numel())
        self.b.fixed_edges(ids, new, EdgeType.COPY, copy)
        return new.view(lab.shape)

    def reduced(self, node: fx.Node, name: str, x: Group, args, kwargs) -> Any:
        """A reduction of a factored group: over axes without neurons it keeps them."""
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        lab = labels(x, self.shape(node.args[0]))
        dims = [d % lab.dim() for d in _dims(dim)] if dim is not None else list(range(lab.dim()))
        if any(lab.shape[d] > 1 for d in dims):
            return (_META, _META) if name in ("max", "min") and dim is not None else _META
        out = lab.amax(dim=tuple(dims), keepdim=bool(keep)) if dims else lab
        out = group_of(out, x)
        return (out, _META) if name in ("max", "min") and dim is not None else out

    def elementwise(self, node: fx.Node, name: str, args) -> Any:
        """``a + b``, ``a * b`` with real shapes: constants varying along neurons pin them,
        factored groups combine position by position."""
        out_shape = node.meta.get("shape")
        if out_shape is None:
            return _UNHANDLED
        operands = [(v, n) for v, n in zip(args[:2], node.args[:2])]
        groups = [(v, n) for v, n in operands if isinstance(v, Group) and v.ids is not None]
        for g, n in groups:
            for c, _ in operands:
                if isinstance(c, torch.Tensor):
                    self.pin_along(labels(g, self.shape(n)), c, out_shape)
        if not any(g.factored for g, _ in groups):
            return _UNHANDLED
        if len(groups) == 1:
            if any(isinstance(v, ParamRef) for v, _ in operands):
                raise LabelError("a parameter combined with a tensor split into heads")
            return groups[0][0]
        (a, na), (b, nb) = groups
        la, lb = labels(a, self.shape(na)), labels(b, self.shape(nb))
        if la.dim() != len(out_shape) or la.shape != lb.shape:
            raise LabelError("it combines two tensors whose neurons lie along different axes")
        if torch.equal(la, lb):
            return a
        merged = self.b.merge(Group(la.flatten()), Group(lb.flatten()),
                              EdgeType.RESIDUAL if name in _SUMS else EdgeType.PRODUCT)
        return group_of(merged.ids.view(la.shape), a)

    def pin_along(self, lab: Tensor, const: Tensor, out_shape: tuple[int, ...]) -> None:
        """Neurons scaled or shifted differently by a constant lose their interchangeability:
        each gets its index along the axis the constant varies on as a position."""
        if const.numel() <= 1 or lab.dim() != len(out_shape):
            return
        c = torch.broadcast_to(const.detach(), out_shape)
        for k in range(lab.dim()):
            if lab.shape[k] > 1 and bool((c != c.narrow(k, 0, 1)).any()):
                pos = torch.arange(1, lab.shape[k] + 1).view(
                    [lab.shape[k] if i == k else 1 for i in range(lab.dim())])
                self.b.pin(lab.flatten(), pos.expand(lab.shape).flatten())

    def matmul(self, a: Any, b: Any, sa, sb, so) -> Any:
        """``a @ b`` with ``[..., n, k] @ [..., k, m]``: the attention products.

        Queries times keys (both carry neurons along ``k``): query dimension ``i`` is tied to
        key dimension ``i`` and each head (an index of the batch axes along which they vary)
        gets a head node tied to its dimensions; the result carries the head nodes. Scores
        times values (neither carries neurons along ``k``): each head node is tied to the
        value dimensions of its head; the result carries the values' neurons.
        """
        if sa is None or sb is None or so is None or len(sa) < 2 or len(sb) < 2:
            raise LabelError("a product of vectors or of tensors of unknown shape")
        batch = so[:-2]

        def full(v, s):
            if not isinstance(v, Group) or v.ids is None:
                return None
            lab = labels(v, s)
            lab = lab.reshape((1,) * (len(so) - lab.dim()) + tuple(lab.shape))
            return lab.expand(*batch, *s[-2:]).reshape(-1, *s[-2:])

        A, B = full(a, sa), full(b, sb)
        varies = lambda t, d: t is not None and t.shape[d] > 1 and bool(  # noqa: E731
            (t != t.narrow(d, 0, 1)).any())
        if varies(A, 1):
            raise LabelError("the rows of its left operand carry neurons")
        if varies(A, 2) or varies(B, 1):  # contracting neurons: queries times keys
            if varies(B, 2):
                raise LabelError("it contracts neurons and its right operand's columns carry "
                                 "neurons too")
            if A is None or B is None or not (varies(A, 2) and varies(B, 1)):
                raise LabelError("it contracts neurons with a constant or with positions")
            q, k = A[:, 0, :], B[:, :, 0]  # [batch, dims]
            pairs = torch.unique(torch.stack([q.flatten(), k.flatten()]), dim=1)
            self.b.fixed_edges(pairs[0], pairs[1], EdgeType.QK_PAIR)
            members = torch.cat([q, k], dim=1)
            keys, head_of = torch.unique(members, dim=0, return_inverse=True)
            if keys.shape[0] == 1:  # one head: no head axis to carry
                return _META
            heads = self.b.new_nodes(keys.shape[0], NodeType.HEAD)
            self.head_edges(heads, keys)
            out = heads[head_of].view(*batch, 1, 1)
            return group_of(out, a)
        # contraction over positions: scores (heads) times values
        if A is not None and B is not None:
            h, v = A[:, 0, 0], B[:, 0, :]  # one head node per batch index, its values
            if not bool((self.b.node_type(h) == NodeType.HEAD).all()):
                raise LabelError("it multiplies two activations that are not attention scores "
                                 "and values")
            keys, first = torch.unique(h, return_inverse=True)
            rows = torch.stack([v[(first == i).nonzero()[0, 0]] for i in range(keys.numel())])
            if torch.unique(rows, dim=0).shape[0] == keys.numel():
                self.head_edges(keys, rows)
                return group_of(labels(b, sb).reshape(
                    (1,) * (len(so) - len(sb)) + tuple(labels(b, sb).shape)), b)
            # grouped-query attention: heads that share values get output neurons of their
            # own, each a copy of the value dimension it reads, tied to its head
            out = self.b.neurons(rows.numel()).view(rows.shape)
            self.b.fixed_edges(rows.flatten(), out.flatten(), EdgeType.COPY)
            self.head_edges(keys, out)
            return group_of(out[first].view(*batch, 1, rows.shape[1]), b)
        g, s = (a, sa) if A is not None else (b, sb)
        lab = labels(g, s)
        return group_of(lab.reshape((1,) * (len(so) - lab.dim()) + tuple(lab.shape)), g)

    def head_edges(self, heads: Tensor, members: Tensor) -> None:
        """``HEAD_MEMBER`` edges from each head node to its (distinct) members."""
        src, dst = [], []
        for h, row in zip(heads.tolist(), members):
            row = torch.unique(row)
            src.append(torch.full_like(row, h))
            dst.append(row)
        self.b.fixed_edges(torch.cat(src), torch.cat(dst), EdgeType.HEAD_MEMBER)

    def attention(self, node: fx.Node, args, kwargs) -> Any:
        """``F.scaled_dot_product_attention``: queries times keys, then values."""
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale",
                 "enable_gqa")
        given = dict(zip(names, args)) | kwargs
        nodes = dict(zip(names, node.args)) | node.kwargs
        q, k, v = given["query"], given["key"], given["value"]
        sq, sk, sv = (self.shape(nodes[n]) for n in ("query", "key", "value"))
        if not all(isinstance(t, Group) and t.ids is not None for t in (q, k, v)):
            raise LabelError("attention over tensors that are not all activations")
        if given.get("enable_gqa") and sk[-3] != sq[-3]:  # key / value heads repeated
            r = sq[-3] // sk[-3]
            k, v = (group_of(labels(t, st).expand(st).repeat_interleave(r, dim=-3), t)
                    for t, st in ((k, sk), (v, sv)))
            sk, sv = ((*st[:-3], sq[-3], *st[-2:]) for st in (sk, sv))
        kt = group_of(labels(k, sk).transpose(-2, -1), k)
        st = (*sk[:-2], sk[-1], sk[-2])
        scores_shape = tuple(torch.broadcast_shapes(sq[:-2], sk[:-2])) + (sq[-2], sk[-2])
        scores = self.matmul(q, kt, sq, st, scores_shape)
        mask = given.get("attn_mask")
        if isinstance(mask, Group) and isinstance(scores, Group):
            self.aligned(node, "scaled_dot_product_attention", scores, mask)
            scores = self.relayout(self.b.merge(scores, mask), *_axes(scores))
        return self.matmul(scores, v, scores_shape, sv, node.meta.get("shape"))

    def combine(self, args, etype: EdgeType, node: fx.Node, name: str) -> Any:
        a, b = args[0], args[1] if len(args) > 1 else None
        if isinstance(a, Group) and isinstance(b, Group):
            self.aligned(node, name, a, b)
            like = a if _axes(a)[0] is not None or b.ids is None else b
            return self.relayout(self.b.merge(a, b, etype), *_axes(like))
        if isinstance(a, ParamRef) or isinstance(b, ParamRef):
            ref, other = (a, b) if isinstance(a, ParamRef) else (b, a)
            if ref.index is not None and etype == EdgeType.RESIDUAL and isinstance(other, Group):
                return self.bias_table(node, ref, other)
            if ref.index is not None:
                raise self.unsupported_param(ref, f"'{name}' of a gathered view")
            if name in _GAIN_PRODUCTS and isinstance(other, Group):
                return self.gain(node, name, ref, other)
            if ref.shape is not None and ref.shape != tuple(ref.tensor.shape):
                raise self.unsupported_param(ref, f"'{name}' after a reshape")
            if etype == EdgeType.RESIDUAL and isinstance(other, Group):
                out = parameter_tokens(self.b, ref.name, ref.tensor, other, "position")
                return self.relayout(out, *_axes(other)) if other.ids is not None else out
            raise self.unsupported_param(ref, "an elementwise product")
        return a if isinstance(a, Group) else b if isinstance(b, Group) else _META

    def param_view(self, ref: ParamRef, name: str, rest, kwargs) -> ParamRef:
        """``p.view(...)``, ``p[:, None, None]``: the same entries in the same order, seen with
        another shape (run on an index tensor: anything that selects or reorders is refused)."""
        if any(isinstance(v, Group | ParamRef | _Meta) for v in [*rest, *kwargs.values()]):
            raise self.unsupported_param(ref, f"'{name}' with a shape that is not constant")
        numel = ref.tensor.numel()
        index = ref.index if ref.index is not None else torch.arange(numel).reshape(ref.seen_shape)
        try:
            if name in ("getitem", "__getitem__"):
                out = index[rest[0]]
            else:
                out = getattr(index, name)(*rest, **kwargs)
        except Exception as err:  # noqa: BLE001 - an index the tensor does not take
            raise self.unsupported_param(ref, f"'{name}' ({err})") from None
        if out.numel() == numel and torch.equal(out.flatten(), torch.arange(numel)):
            return ParamRef(ref.name, ref.tensor, tuple(out.shape))
        if not self.recorded:
            raise self.unsupported_param(ref, f"'{name}', which selects or reorders its entries")
        return ParamRef(ref.name, ref.tensor, tuple(out.shape), out)  # read as a table

    def bias_table(self, node: fx.Node, ref: ParamRef, x: Group) -> Group:
        """``x + table[index]...``: a learned table ``[rows, C]`` read by a constant index, one
        column per neuron of ``x`` (a relative-position bias: rows are fixed positions, each
        head's column moves with its head). Encoded like a positional embedding."""
        what = f"adds parameter '{ref.name}' read by index"
        if ref.tensor.dim() != 2 or x.factored or x.repeat is not None:
            raise self.unsupported_param(ref, "an addition of a gathered view (only a "
                                         "[rows, neurons] table added along one neuron axis)")
        shape = self.shape(node)
        lab = labels(x, shape)
        axes = [k for k in range(lab.dim()) if lab.shape[k] > 1]
        cols = ref.index % ref.tensor.shape[1]
        cols = cols.reshape((1,) * (len(shape) - cols.dim()) + tuple(cols.shape))
        want = torch.arange(ref.tensor.shape[1])
        ok = len(axes) == 1 and ref.tensor.shape[1] == lab.shape[axes[0]]
        if ok:
            k = axes[0]
            ok = cols.shape[k] == want.numel() and bool(
                (cols == want.view([-1 if i == k else 1 for i in range(len(shape))])).all())
        if not ok:
            raise self.refuse(node, "add", f"{what}: its columns do not line up with the "
                              "neurons of the tensor it is added to")
        return self.relayout(parameter_tokens(self.b, ref.name, ref.tensor, x, "position"),
                             *_axes(x))

    def functional_linear(self, node: fx.Node, args, kwargs) -> Group:
        """``F.linear(x, weight, bias)`` with bare parameters: a linear layer."""
        x = args[0]
        weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
        bias = kwargs.get("bias", args[2] if len(args) > 2 else None)
        for ref in (weight, bias):
            if ref is not None and ref.shape not in (None, tuple(ref.tensor.shape)):
                raise self.unsupported_param(ref, "F.linear after a reshape")
        if x.factored:
            raise self.refuse(node, "linear", "reads a tensor split into heads")
        n, a = _axes(x)
        if x.ids is not None and not (a == n - 1 if n is not None else a == -1):
            raise self.refuse(node, "linear", "reads the last axis, and the neurons are not on it")
        self.b.next_layer()
        out_f, in_f = weight.tensor.shape
        src, pos = self.b.resolve(x, in_f, f"F.linear with '{weight.name}'")
        out = self.b.neurons(out_f)
        self.b.dense(self.b.add_param(weight.name, weight.tensor), src, out, EdgeType.LINEAR,
                     src_pos=pos)
        if bias is not None:
            self.b.vector(self.b.add_param(bias.name, bias.tensor),
                          self.b.new_nodes(1, NodeType.BIAS), out, EdgeType.BIAS)
        self.b.node_groups[weight.name] = out  # its output neurons, by the weight's name
        return self.relayout(Group(out, SEQ), n, -1 if n is None else n - 1)

    def gain(self, node: fx.Node, name: str, ref: ParamRef, x: Group) -> Group:
        """``x * p``: a per-neuron gain (``p`` with one axis of size C, lined up with the
        neurons of ``x`` under broadcasting), or one scale shared by every neuron."""
        shape = ref.seen_shape
        what = f"'{name}' by parameter '{ref.name}' of shape {list(shape)}"
        if x.ids is None:
            raise GraphConstructionError(
                f"{what} multiplies the network input before any layer reads it: its neuron "
                "axis is not known yet"
            )
        if x.repeat is not None:
            raise self.refuse(node, name, f"{what} scales a flattened activation")
        n, a = _axes(x)
        end = a - n if n is not None else a if a < 0 else None
        out_n = max(n, len(shape)) if n is not None else None
        if ref.tensor.numel() == 1:
            shared_gain(self.b, ref.name, ref.tensor, x.ids)
            return self.relayout(x, out_n, end + out_n if out_n is not None else a)
        axes = [i - len(shape) for i, s in enumerate(shape) if s != 1]
        if len(axes) != 1:
            raise self.refuse(node, name, f"{what}: only a per-channel gain (one axis of size "
                              "> 1) or a single scale is supported")
        if end is None or axes[0] != end:
            where = f"axis {end} from the end" if end is not None else "an axis counted from " \
                "the front of a tensor of unknown rank"
            raise self.refuse(node, name, f"{what}: its entries lie along axis {axes[0]} from "
                              f"the end and the neurons along {where}; broadcasting would "
                              "scale positions, not neurons")
        if shape[axes[0]] != x.ids.numel():
            raise self.refuse(node, name, f"{what}: {shape[axes[0]]} gains for "
                              f"{x.ids.numel()} neurons")
        named_affine(self.b, (ref.name, ref.tensor), None, x.ids)
        return self.relayout(x, out_n, end + out_n if out_n is not None else a)

    def layer_norm(self, node: fx.Node, args, kwargs) -> Group:
        """``F.layer_norm(x, shape, weight, bias)``: normalizes the last ``len(shape)`` axes;
        the neurons must be exactly those (one axis, the last)."""
        x = args[0]

        def arg(i, key):
            return kwargs.get(key, args[i] if len(args) > i else None)

        shape, weight, bias = _dims(arg(1, "normalized_shape")), arg(2, "weight"), arg(3, "bias")
        if len(shape) != 1 or not isinstance(shape[0], int):
            raise self.refuse(node, "layer_norm", f"normalizes over {shape}: only one axis, "
                              "the neurons', is supported")
        n, a = _axes(x)
        if x.ids is not None and not (a == n - 1 if n is not None else a == -1):
            where = f"axis {a} of a rank-{n} tensor" if n is not None else f"axis {a}"
            reason = (f"layer_norm normalizes the last axis, but the neurons are on {where}: "
                      "it would mix positions, not neurons")
            mover = self.movers.get(id(x))
            if mover is not None:
                raise self.refuse(mover[0], mover[1], f"moves the neuron axis; {reason}")
            raise self.refuse(node, "layer_norm", reason)
        params = [v for v in (weight, bias) if v is not None]
        if any(not isinstance(v, ParamRef) or v.shape not in (None, tuple(v.tensor.shape))
               for v in params):
            raise GraphConstructionError(
                f"layer_norm [fx node '{node.name}'] takes a weight or bias that is not a bare "
                "parameter; register a converter for the module that contains it"
            )
        if not params:
            return x
        g = self.b.materialize(x, shape[0], f"layer_norm [fx node '{node.name}']")
        named_affine(self.b, (weight.name, weight.tensor) if weight is not None else None,
                     (bias.name, bias.tensor) if bias is not None else None, g.ids)
        return self.relayout(x, *_axes(x), ids=g.ids) if x.ids is None else x

    def concat(self, node: fx.Node, name: str, values: list, dim: int) -> Any:
        groups = self.groups(values)
        refs = [v for v in values if isinstance(v, ParamRef)]
        if not groups:
            if refs:
                raise self.unsupported_param(refs[0], "a concatenation")
            return _META
        x = groups[0]
        if refs:  # learned tokens joining a sequence
            for ref in refs:
                if ref.shape is not None and ref.shape != tuple(ref.tensor.shape):
                    raise self.unsupported_param(ref, f"'{name}' after a reshape")
            axes = _axes(x)
            for ref in refs:
                x = parameter_tokens(self.b, ref.name, ref.tensor, x, "token")
            return self.relayout(x, *axes) if groups[0].ids is not None else x
        for g in groups[1:]:
            self.aligned(node, name, x, g)
        if x.ids is None:
            hit, n, a = _feature_dim(x, dim), None, -1
        else:
            def fn(n, a):
                d = _norm(dim, n + 1 if name == "stack" else n)
                if name == "stack":
                    return n + 1, a + 1 if d <= a else a, False
                return n, a, d == a

            n, a, hit = self.apply(node, name, x, fn, (dim,))
        if hit and name != "stack":
            if any(g.ids is None or g.repeat for g in groups):
                raise GraphConstructionError("cannot concatenate inputs of unknown size")
            return self.relayout(x, n, a, ids=torch.cat([g.ids for g in groups]))
        for g in groups[1:]:  # concatenation along batch / sequence / space: same neurons
            x = self.b.merge(x, g)
        return self.relayout(x, n, a) if groups[0].ids is not None else x

    def placeholder(self, node: fx.Node) -> Any:
        """Each tensor input of forward is a network input of its own (``input_key`` = its
        index); its input nodes appear when a layer first reads it. An argument whose default
        is a non-tensor constant (a flag, a scale) is not an activation."""
        default = node.args[0] if node.args else None
        if default is not None and not isinstance(default, torch.Tensor):
            return _META
        key = sum(1 for n in self.env if n.op == "placeholder")
        return Group(None, UNKNOWN, input_key=key)

    def ranked(self, node: fx.Node, value: Any) -> Any:
        """A recorded node's group with the rank it really had (``meta["shape"]``)."""
        shape = node.meta.get("shape")
        if shape is None or not isinstance(value, Group) or value.ids is None:
            return value
        n, a = _axes(value)
        if n is None:
            return self.relayout(value, len(shape), a if a >= 0 else a + len(shape))
        if n != len(shape):
            raise AssertionError(f"fx node '{node.name}': rank {n} tracked, {len(shape)} ran")
        return value

    def run(self) -> GraphBuilder:
        for node in self.graph.nodes:
            if node.op == "placeholder":
                self.env[node] = self.placeholder(node)
            elif node.op == "get_attr":
                obj = self.root
                for part in node.target.split("."):
                    obj = getattr(obj, part)
                is_param = isinstance(obj, nn.Parameter)
                self.env[node] = ParamRef(node.target, obj) if is_param else _META
            elif node.op == "call_module":
                self.env[node] = self.ranked(node, self.call_module(node))
            elif node.op in ("call_function", "call_method"):
                value = self.call_function(node, node.op == "call_method")
                self.env[node] = self.ranked(node, value)
            elif node.op == "output":
                out = self.value(node.args[0])
                while isinstance(out, tuple | list | dict) and out:
                    out = next(iter(out.values())) if isinstance(out, dict) else out[0]
                if not isinstance(out, Group):
                    raise GraphConstructionError("the module's output is not an activation")
                self.b.mark_output(out)
        return self.b


def _recorded(module: nn.Module, example_inputs: Any, stack_traces: bool) -> fx.Graph:
    try:
        return record(module, example_inputs, stack_traces)
    except Exception as err:  # the user's forward, on the user's inputs
        raise GraphConstructionError(
            f"running {type(module).__name__} on the example inputs failed: "
            f"{type(err).__name__}: {err}"
        ) from err


def build(module: nn.Module, example_inputs: Any = None) -> GraphBuilder:
    """Trace ``module`` (symbolically, or by running it on ``example_inputs``: see
    :mod:`graphs.recording`) and return the filled builder (see :class:`ParameterGraph`)."""
    converter = find_converter(module)
    if converter is not None:  # a single registered layer: no trace needed
        b = GraphBuilder()
        out = converter(b, module, "", Group(None, UNKNOWN, input_key=0))
        b.mark_output(out[0] if isinstance(out, tuple) else out)
    elif example_inputs is not None:
        try:
            b = _Walker(_recorded(module, example_inputs, False), module, True).run()
        except ShapeOperationError:  # record again, with source lines for the message
            b = _Walker(_recorded(module, example_inputs, True), module, True).run()
    else:
        try:
            b = _Walker(trace(module).graph, module).run()
        except ShapeOperationError:  # trace again, recording source lines for the message
            b = _Walker(trace(module, stack_traces=True).graph, module).run()
    missing = [n for n, p in module.named_parameters() if not b.covered(n, p)]
    if missing:
        path = missing[0].rpartition(".")[0]
        raise UnsupportedModuleError(
            path, missing, "these parameters are never used by forward as the tracer saw it",
            _type_name(module, path),
        )
    return b
