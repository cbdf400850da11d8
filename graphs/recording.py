"""Record a module's forward, run on example inputs, as a ``torch.fx`` graph.

``torch.fx`` traces symbolically and cannot follow many real forwards: Hugging Face models
(decorated ``forward(**kwargs)``, item assignment into proxies, branches on sizes), data-
dependent control flow, Python code that inspects tensors. This front end runs the module
once on concrete inputs and writes down what happened instead, in the same IR the walker of
:mod:`graphs.tracing` reads:

* every call of a leaf module (a module with a converter, or a built-in ``torch.nn`` one) is
  one ``call_module`` node; what happens inside it is not recorded;
* every torch function or tensor method that reads a recorded activation or a parameter is
  a ``call_function`` / ``call_method`` node (seen through a ``TorchFunctionMode``);
  parameters read outside a leaf module are ``get_attr`` nodes;
* everything else is a constant: sizes are plain integers, masks and rotary tables built
  from them are concrete tensors, integer and boolean tensors (token ids, masks) carry no
  neurons;
* each node's ``meta["shape"]`` holds the shape it had, so the walker knows every rank and
  size (it never has to guess whether a reshape splits the neuron axis).

The graph is the path the example inputs took: a branch on input values is recorded as
taken. ``ParameterGraph.from_module(model, example_inputs=...)`` uses it.
"""

from __future__ import annotations

import operator
import os
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from graphs.converters import find_converter, has_converter

# Functions whose result is a fresh constant whatever tensor they are called on.
_FRESH = {
    "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "zeros_like", "ones_like",
    "full_like", "empty_like", "rand_like", "randn_like", "randint_like",
}
_GRAPHS = str(Path(__file__).resolve().parent) + os.sep
_TORCH = str(Path(torch.__file__).resolve().parent) + os.sep


def own_layer_norm(m: nn.Module) -> bool:
    """A LayerNorm subclass with a forward of its own (``LayerNorm2d``: permute, layer_norm,
    permute back) and no converter of its own: traced through, its forward decides which
    axis it normalizes."""
    return (isinstance(m, nn.LayerNorm) and type(m).forward is not nn.LayerNorm.forward
            and find_converter(m) is find_converter(nn.LayerNorm(1)))


def is_leaf(m: nn.Module) -> bool:
    """The modules both front ends keep whole: those with a converter, and the built-in
    ``torch.nn`` ones (as ``torch.fx`` does), except containers and :func:`own_layer_norm`."""
    if own_layer_norm(m):
        return False
    return has_converter(m) or (
        m.__module__.startswith(("torch.nn", "torch.ao.nn")) and not isinstance(m, nn.Sequential)
    )


def _user_stack() -> str:
    """The stack as ``torch.fx`` records it, without this package's and torch's frames."""
    frames = [f for f in traceback.extract_stack()
              if not f.filename.startswith((_GRAPHS, _TORCH))]
    return "".join(traceback.format_list(frames))


class Recorder(TorchFunctionMode):
    """Runs ``module`` and builds ``graph``; see the module docstring."""

    def __init__(self, module: nn.Module, stack_traces: bool = False):
        super().__init__()
        self.module = module
        self.graph = fx.Graph()
        self.stack_traces = stack_traces
        self.nodes: dict[int, fx.Node] = {}  # id(tensor) -> the node that produced it
        self.alive: list[torch.Tensor] = []  # recorded tensors stay alive: ids stay unique
        self.param_names = {id(p): n for n, p in module.named_parameters(remove_duplicate=False)}
        self.attrs: dict[str, fx.Node] = {}
        self.path: list[str] = [""]  # module path of the code running now
        self.inside_leaf = 0

    # -- bookkeeping -----------------------------------------------------
    def track(self, value: Any, node: fx.Node) -> None:
        """Map the floating-point tensors of a result to ``node`` (getitem nodes for tuples)."""
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() or value.is_complex():
                node.meta["shape"] = tuple(value.shape)
                self.nodes[id(value)] = node
                self.alive.append(value)
            return
        if isinstance(value, tuple | list):
            for i, v in enumerate(value):
                if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex()):
                    item = self.graph.call_function(operator.getitem, (node, i))
                    self.annotate(item)
                    self.track(v, item)

    def annotate(self, node: fx.Node) -> None:
        node.meta["nn_module_stack"] = {self.path[-1]: None} if self.path[-1] else {}
        if self.stack_traces:
            node.stack_trace = _user_stack()

    def arg(self, value: Any) -> Any:
        """A call's argument as the graph sees it: a node, or the constant itself."""
        if isinstance(value, torch.Tensor):
            node = self.nodes.get(id(value))
            if node is not None:
                return node
            name = self.param_names.get(id(value))
            if name is not None:
                if name not in self.attrs:
                    self.attrs[name] = self.graph.get_attr(name)
                return self.attrs[name]
            return value
        if isinstance(value, tuple | list):
            return type(value)(self.arg(v) for v in value) if not hasattr(value, "_fields") \
                else tuple(self.arg(v) for v in value)
        if isinstance(value, dict):
            return {k: self.arg(v) for k, v in value.items()}
        return value

    def reads_recorded(self, values: Any) -> bool:
        return any(isinstance(v, torch.Tensor)
                   and (id(v) in self.nodes or id(v) in self.param_names)
                   for v in pytree.tree_leaves(values))

    # -- interception ----------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.inside_leaf or not self.reads_recorded((args, kwargs)):
            return out
        name = getattr(func, "__name__", "")
        if name in _FRESH or not any(isinstance(v, torch.Tensor) for v in pytree.tree_leaves(out)):
            if name == "__setitem__" and self.reads_recorded(args[0]):
                self.record(func, name, args, kwargs, args[0])  # writes into an activation
            return out
        self.record(func, name, args, kwargs, out)
        return out

    def record(self, func, name: str, args, kwargs, out) -> None:
        method = getattr(torch.Tensor, name, None) is func or name == "__setitem__"
        if method and name.endswith("_") and not name.endswith("__"):
            name = name[:-1]  # in place: the same rule, the result replaces the input
        node = self.graph.create_node(
            "call_method" if method else "call_function", name if method else func,
            self.arg(tuple(args)), self.arg(dict(kwargs)),
        )
        self.annotate(node)
        self.track(out, node)

    def call_leaf(self, m: nn.Module, path: str, forward, args, kwargs):
        self.inside_leaf += 1
        try:
            out = forward(*args, **kwargs)
        finally:
            self.inside_leaf -= 1
        has_params = any(True for _ in m.parameters())
        if has_params or self.reads_recorded((args, kwargs)):
            node = self.graph.call_module(path, self.arg(tuple(args)), self.arg(dict(kwargs)))
            self.annotate(node)
            self.track(out, node)
        return out

    def call_inner(self, path: str, forward, args, kwargs):
        self.path.append(path)
        try:
            return forward(*args, **kwargs)
        finally:
            self.path.pop()

    # -- the run ---------------------------------------------------------
    def run(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> fx.Graph:
        patched = []
        for path, m in self.module.named_modules():
            if not path:
                continue
            forward = m.forward  # bound (or an instance attribute of the user's)
            leaf = is_leaf(m)

            def wrapper(*a, _m=m, _p=path, _f=forward, _leaf=leaf, **k):
                if self.inside_leaf:
                    return _f(*a, **k)
                if _leaf:
                    return self.call_leaf(_m, _p, _f, a, k)
                return self.call_inner(_p, _f, a, k)

            patched.append((m, "forward" in m.__dict__, forward))
            m.forward = wrapper
        for i, leaf in enumerate(pytree.tree_leaves((args, kwargs))):
            if isinstance(leaf, torch.Tensor):
                node = self.graph.placeholder(f"input_{i}")
                node.meta["shape"] = tuple(leaf.shape)
                self.nodes[id(leaf)] = node
                self.alive.append(leaf)
        try:
            with torch.no_grad(), self:
                out = self.module(*args, **kwargs)
        finally:
            for m, own, forward in patched:
                if own:
                    m.forward = forward
                else:
                    del m.forward
        first = next((v for v in pytree.tree_leaves(_plain(out)) if isinstance(v, torch.Tensor)
                      and id(v) in self.nodes), None)
        self.graph.output(self.nodes[id(first)] if first is not None else None)
        return self.graph


def _plain(out: Any) -> Any:
    """Model outputs (Hugging Face ``ModelOutput`` is an ordered dict) as plain containers."""
    if isinstance(out, Mapping):
        return [_plain(v) for v in out.values()]
    if isinstance(out, tuple | list):
        return [_plain(v) for v in out]
    return out


def record(module: nn.Module, example_inputs: Any, stack_traces: bool = False) -> fx.Graph:
    """``example_inputs``: a tensor, a tuple of positional arguments, or a dict of keyword
    arguments (or ``(args_tuple, kwargs_dict)``) that ``module(...)`` accepts."""
    if isinstance(example_inputs, torch.Tensor):
        args, kwargs = (example_inputs,), {}
    elif isinstance(example_inputs, Mapping):
        args, kwargs = (), dict(example_inputs)
    elif (isinstance(example_inputs, tuple) and len(example_inputs) == 2
          and isinstance(example_inputs[0], tuple) and isinstance(example_inputs[1], Mapping)):
        args, kwargs = example_inputs[0], dict(example_inputs[1])
    else:
        args, kwargs = tuple(example_inputs), {}
    return Recorder(module, stack_traces).run(args, kwargs)
