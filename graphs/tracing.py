"""Walk a ``torch.fx`` trace of a module and build its parameter graph.

Leaf modules with parameters go to their converter. Everything between leaves decides how
neuron groups connect: residual ``+`` and elementwise ``*`` tie two groups, ``flatten`` /
``view(B, -1)`` turn channels into repeated features, ``cat`` along the feature axis joins
groups, learned tokens and positional embeddings held as bare ``nn.Parameter`` s become
nodes of their own, and activations / pooling are recorded as node features.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from graphs.builder import FLAT, SEQ, SPATIAL, UNKNOWN, GraphBuilder, Group, ParamRef
from graphs.converters import find_converter, has_converter, parameter_tokens
from graphs.errors import GraphConstructionError, UnsupportedModuleError, UntraceableModuleError
from graphs.features import Activation, EdgeType, activation_kind


class _Meta:
    """A traced value that is not an activation (a shape, a size, a constant)."""


_META = _Meta()

# Calls that keep the feature axis where it is.
_PASS_METHODS = {
    "contiguous", "clone", "detach", "to", "float", "double", "half", "type_as", "unsqueeze",
    "squeeze", "expand", "expand_as", "repeat", "transpose", "permute", "neg", "abs", "pow",
    "sqrt", "exp", "clamp", "clip", "masked_fill", "softmax", "log_softmax", "relu", "tanh",
    "sigmoid", "sin", "cos", "__getitem__", "narrow", "chunk", "split",
}
_PASS_FUNCTIONS = {
    F.dropout, F.dropout1d, F.dropout2d, torch.clone, torch.neg, torch.abs, torch.exp,
    torch.cos, torch.clamp, torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute,
    F.normalize, torch.nn.functional.pad, torch.pow, torch.sqrt, torch.square,
}
_PASS_MODULES = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity, nn.AlphaDropout, nn.Hardtanh,
    nn.Hardswish, nn.Mish,
)


class _LeafTracer(fx.Tracer):
    """torch.fx's tracer, treating every module with a registered converter as a leaf."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return has_converter(m) or super().is_leaf_module(m, qualname)


def trace(module: nn.Module) -> fx.GraphModule:
    try:
        graph = _LeafTracer().trace(module)
    except Exception as err:  # fx raises TraceError, TypeError, ... for dynamic modules
        raise UntraceableModuleError(
            f"torch.fx could not trace {type(module).__name__}: {err}. The parameter graph "
            "is derived from a symbolic trace, so forward must not branch on tensor values "
            "(data-dependent control flow); move such logic out of forward or register a "
            "converter for the submodule that contains it."
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


class _Walker:
    def __init__(self, gm: fx.GraphModule, root: nn.Module):
        self.gm = gm
        self.root = root  # the traced module (gm holds bare copies of non-leaf submodules)
        self.b = GraphBuilder()
        self.params = dict(gm.named_parameters())
        self.env: dict[fx.Node, Any] = {}

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

    def flatten(self, g: Group, start_dim: int) -> Group:
        if start_dim == 0:
            raise GraphConstructionError("flattening the batch dimension is not supported")
        if g.layout == SPATIAL:
            if start_dim == 1:
                return Group(g.ids, FLAT, "interleave")
            return g  # flatten(2): spatial dims merge, channels stay at dim 1
        if g.layout == SEQ and start_dim == 1:
            return Group(g.ids, FLAT, "tile")
        if g.ids is None:  # the network input, flattened: its features are input nodes
            return Group(None, FLAT, "interleave", g.input_key)
        return g

    # -- node kinds ------------------------------------------------------
    def call_module(self, node: fx.Node) -> Any:
        m = self.gm.get_submodule(node.target)
        args = self.value(node.args)
        kwargs = self.value(node.kwargs)
        converter = find_converter(m)
        if converter is not None:
            return converter(self.b, m, node.target, *args, **kwargs)
        names = [f"{node.target}.{n}" for n, _ in m.named_parameters()]
        if names:
            raise UnsupportedModuleError(node.target, names, module_type=type(m).__name__)
        x = args[0] if args else None
        if not isinstance(x, Group):
            return _META
        if isinstance(m, nn.Flatten):
            return self.flatten(x, m.start_dim)
        kind = activation_kind(m)
        if kind != Activation.OTHER:
            self.b.set_activation(x, kind)
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

        if name in ("cat", "concat", "stack"):
            return self.concat(list(tensors), kwargs.get("dim", args[1] if len(args) > 1 else 0))
        if target in (operator.getitem,) and not isinstance(args[0], Group | ParamRef):
            container = args[0]
            return container[args[1]] if isinstance(container, tuple | list) else _META
        if name in ("size", "dim", "numel") or target in (getattr, len):
            return _META
        if name in ("add", "iadd", "sub", "isub", "__add__", "__sub__", "radd", "rsub"):
            return self.combine(args, EdgeType.RESIDUAL)
        if name in ("mul", "imul", "__mul__", "rmul", "truediv", "div", "__truediv__"):
            return self.combine(args, EdgeType.PRODUCT)
        if refs:
            if name in ("expand", "expand_as", "repeat", "to", "type_as", "contiguous"):
                return args[0]
            raise self.unsupported_param(refs[0], f"'{name}'")
        groups = self.groups(flat_args)
        if not groups:
            return _META
        x = args[0] if isinstance(args[0], Group) else groups[0]
        if name == "flatten":
            start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
            return self.flatten(x, start)
        if name in ("view", "reshape"):
            shape = args[1:] if len(args) > 1 else kwargs.get("shape", ())
            if len(shape) == 1 and isinstance(shape[0], tuple | list):
                shape = shape[0]
            if len(shape) == 2 and shape[1] == -1:
                return self.flatten(x, 1)
            return x
        if name in ("mean", "sum", "amax", "max", "amin", "logsumexp"):
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            dims = tuple(dim) if isinstance(dim, tuple | list) else (dim,)
            if x.layout == SPATIAL and all(isinstance(d, int) and d not in (0, 1) for d in dims):
                return Group(x.ids, FLAT)
            if x.layout == SEQ and dims in ((1,), (-2,)):
                return Group(x.ids, FLAT)
            return x
        if name == "__getitem__" or target is operator.getitem:
            index = args[1]
            if x.layout == SEQ and isinstance(index, tuple) and len(index) == 2:
                if isinstance(index[1], int):  # x[:, 0]: one token, features last
                    return Group(x.ids, FLAT)
            return x
        if name in ("transpose", "permute") and x.layout == SPATIAL:
            return Group(x.ids, SEQ)  # [B, C, N] -> [B, N, C] (patch embeddings)
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

    def combine(self, args, etype: EdgeType) -> Any:
        a, b = args[0], args[1] if len(args) > 1 else None
        if isinstance(a, Group) and isinstance(b, Group):
            return self.b.merge(a, b, etype)
        if isinstance(a, ParamRef) or isinstance(b, ParamRef):
            ref, other = (a, b) if isinstance(a, ParamRef) else (b, a)
            if etype == EdgeType.RESIDUAL and isinstance(other, Group):
                return parameter_tokens(self.b, ref.name, ref.tensor, other, "position")
            raise self.unsupported_param(ref, "an elementwise product")
        return a if isinstance(a, Group) else b if isinstance(b, Group) else _META

    def concat(self, values: list, dim: int) -> Any:
        groups = self.groups(values)
        refs = [v for v in values if isinstance(v, ParamRef)]
        if not groups:
            if refs:
                raise self.unsupported_param(refs[0], "a concatenation")
            return _META
        x = groups[0]
        if refs:  # learned tokens joining a sequence
            for ref in refs:
                x = parameter_tokens(self.b, ref.name, ref.tensor, x, "token")
            return x
        if _feature_dim(x, dim):
            if any(g.ids is None or g.repeat for g in groups):
                raise GraphConstructionError("cannot concatenate inputs of unknown size")
            return Group(torch.cat([g.ids for g in groups]), x.layout)
        for g in groups[1:]:  # concatenation along batch / sequence / space: same neurons
            x = self.b.merge(x, g)
        return x

    def run(self) -> GraphBuilder:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.env[node] = Group(None, UNKNOWN, input_key=0) if not self.env else _META
            elif node.op == "get_attr":
                obj = self.gm
                for part in node.target.split("."):
                    obj = getattr(obj, part)
                is_param = isinstance(obj, nn.Parameter)
                self.env[node] = ParamRef(node.target, obj) if is_param else _META
            elif node.op == "call_module":
                self.env[node] = self.call_module(node)
            elif node.op in ("call_function", "call_method"):
                self.env[node] = self.call_function(node, node.op == "call_method")
            elif node.op == "output":
                out = self.value(node.args[0])
                while isinstance(out, tuple | list | dict) and out:
                    out = next(iter(out.values())) if isinstance(out, dict) else out[0]
                if not isinstance(out, Group):
                    raise GraphConstructionError("the module's output is not an activation")
                self.b.mark_output(out)
        return self.b


def build(module: nn.Module) -> GraphBuilder:
    """Trace ``module`` and return the filled builder (see :class:`ParameterGraph`)."""
    converter = find_converter(module)
    if converter is not None:  # a single registered layer: no trace needed
        b = GraphBuilder()
        out = converter(b, module, "", Group(None, UNKNOWN, input_key=0))
        b.mark_output(out[0] if isinstance(out, tuple) else out)
    else:
        b = _Walker(trace(module), module).run()
    missing = [n for n, _ in module.named_parameters() if not b.covered(n)]
    if missing:
        path = missing[0].rpartition(".")[0]
        raise UnsupportedModuleError(
            path, missing, "these parameters are never used by forward as the tracer saw it",
            _type_name(module, path),
        )
    return b
