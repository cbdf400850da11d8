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
