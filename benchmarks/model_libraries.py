"""Import the model libraries users bring (torchvision, timm, transformers).

Shared by the graph tests (tests/graphs/test_real_architectures.py) and the benchmark
(``python -m benchmarks.graph_core``); it lives here because the benchmark does not import
from ``tests/``.

Import this module before ``torchvision``, ``timm`` or ``transformers``: :func:`load`
prepares torchvision first.

Why: the package index's torchvision wheel (0.28, the release matching torch 2.13) is a CUDA
build. Beside the CPU torch that ``make test`` installs, its compiled operators
(``torchvision/_C.so``) do not load, and ``import torchvision`` then dies while registering
fake (meta) kernels for ``torchvision::nms`` and ``torchvision::qnms``: "operator
torchvision::nms does not exist". :func:`prepare_torchvision` first tries to load the compiled
operators itself; only if that fails does it define the two operator schemas with
``torch.library`` (no kernels), which is all the import needs. No model calls them (they are
detection ops), so every architecture imports and runs. timm imports torchvision too, and
transformers does when it is installed (its vision models). With a
torchvision whose operators load (a matching CPU build) nothing is defined.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY: torch.library.Library | None = None  # kept alive: dropping it removes the schemas


def _has_op(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


def prepare_torchvision() -> None:
    """Make ``import torchvision`` work beside a CPU torch (see the module docstring)."""
    global _LIBRARY
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None or all(_has_op(n) for n in _SCHEMAS):
        return
    for lib in sorted(Path(spec.origin).parent.glob("_C*.so")):
        try:  # the compiled operators, when they match this torch
            torch.ops.load_library(str(lib))
        except (OSError, RuntimeError):
            pass
    missing = [n for n in _SCHEMAS if not _has_op(n)]
    if missing:
        _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
        for name in missing:
            _LIBRARY.define(_SCHEMAS[name])


def load(name: str) -> ModuleType | None:
    """Import a model library, or ``None`` when it is not installed (its tests and benchmark
    rows are skipped)."""
    if importlib.util.find_spec(name) is None:
        return None
    if name in ("torchvision", "timm", "transformers"):  # the last two import torchvision
        prepare_torchvision()
    return importlib.import_module(name)
