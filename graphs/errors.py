"""Errors raised while turning a module into a parameter graph."""

from __future__ import annotations


class GraphConstructionError(ValueError):
    """A module could not be turned into a parameter graph."""


class UnsupportedModuleError(GraphConstructionError):
    """A module (or a bare parameter) holds parameters that no converter understands.

    Attributes:
        path: dotted path of the submodule inside the traced module ("" for the root).
        param_names: full names of the parameters that would be left uncovered.
        module_type: the submodule's class name, when known ("" otherwise).
    """

    def __init__(self, path: str, param_names: list[str], reason: str = "",
                 module_type: str = ""):
        self.path = path
        self.param_names = list(param_names)
        self.module_type = module_type
        where = f"submodule '{path}'" if path else "the root module"
        where += f" ({module_type})" if module_type else ""
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"{where} holds parameters {self.param_names} that no parameter-graph converter "
            f"covers{detail}. Register one with graphs.register_converter(ModuleClass)."
        )


class UntraceableModuleError(GraphConstructionError):
    """torch.fx could not trace the module (usually data-dependent control flow)."""


class ShapeOperationError(GraphConstructionError):
    """A shape operation (transpose, chunk, view, ...) the tracer cannot follow.

    Attributes:
        op: the operation's name; path: the module path it was traced in ("" for the root);
        line: the source line, when torch.fx recorded it ("" otherwise).
    """

    def __init__(self, op: str, path: str, reason: str, line: str = ""):
        self.op, self.path, self.line = op, path, line
        where = f"in submodule '{path}'" if path else "in the root module"
        at = f" ({line})" if line else ""
        super().__init__(f"'{op}' {where}{at}: {reason}")
