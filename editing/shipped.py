"""Shipped trained editors (package data ``editing/weights/<edit>.safetensors`` + ``.json``).

``load_editor("dilate")`` loads the shipped GMN editor for an edit; ``load_editor(folder)``
loads a run folder of :mod:`editing.train` (or any ``<stem>.safetensors`` written by
:func:`editing.editor.save_editor`). ``python -m editing.ship --runs OUT`` copies the
best-validation GMN editors of a training sweep into the package.
"""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import torch

from common.errors import UserError
from common.persistence import PersistenceError, read_shipped, shipped_names
from editing.editor import Editor, editor_from, load_editor_file
from editing.edits import EDITS

__all__ = ["WEIGHTS_PACKAGE", "available_editors", "load_editor", "weights_dir"]

WEIGHTS_PACKAGE = "editing.weights"
"""The package whose data files are the shipped editors."""


def weights_dir() -> Path:
    """Folder of the shipped editors inside the installed package."""
    return Path(str(resources.files(WEIGHTS_PACKAGE)))


def available_editors() -> list[str]:
    """Names of the edits with a shipped editor (sorted)."""
    return [name for name in shipped_names(WEIGHTS_PACKAGE) if name in EDITS]


def load_editor(name: str | Path, device: torch.device | str | None = None) -> Editor:
    """A trained editor: ``editor(params)`` maps batched SIREN params to edited ones.

    Which editor a name means, in this order:

    * a ``str`` that is an edit name (``"dilate"``, see :data:`editing.EDITS`): the
      **shipped** editor of that edit, always, whatever the current folder holds;
    * anything else is a path: a run folder of ``python -m editing.train`` (holding
      ``editor.safetensors``), or an editor file ``<stem>.safetensors`` / ``<stem>``.

    So a run folder that happens to be called like an edit is loaded by giving it as a path:
    ``load_editor(Path("dilate"))`` or ``load_editor("./dilate")``, never by the bare name
    (which warns when such a folder or file exists in the current folder).

    Args:
        name: an edit name with a shipped editor (see :func:`available_editors`), or a path.
        device: where to put it (default CPU).

    Raises:
        UserError: ``name`` is neither an edit name nor an existing run folder or editor file.
        PersistenceError: the edit has no shipped editor, or the files are malformed (the
            message names the file and the field or tensor).
    """
    if isinstance(name, str) and name in EDITS:
        local = Path(name)
        if local.is_dir() or local.with_suffix(".safetensors").is_file():
            warnings.warn(
                f"load_editor({name!r}) loads the shipped {name!r} editor, not ./{local} in "
                f"the current folder; pass it as a path to load that one: "
                f"load_editor('./{local}')", UserWarning, stacklevel=2)
        if name not in available_editors():
            raise PersistenceError(
                f"no shipped editor for {name!r}; shipped: {available_editors()} "
                "(train one with `python -m editing.train --edit NAME`)"
            )
        info, tensors = read_shipped(WEIGHTS_PACKAGE, name)
        where = f"{WEIGHTS_PACKAGE}/{name}"
        editor = editor_from(info, tensors, f"{where}.json", f"{where}.safetensors")
    else:
        path = Path(name)
        if path.is_dir():
            path = path / "editor"
        elif not (path.with_suffix(".safetensors").is_file() or path.is_file()):
            hint = (f"; the bare name {path.name!r} loads the shipped editor"
                    if path.name in EDITS else "")
            raise UserError(
                f"unknown editor {str(name)!r}: not an edit name {sorted(EDITS)} "
                f"and not an existing run folder or .safetensors file{hint}"
            )
        editor = load_editor_file(path)
    editor.eval()
    return editor.to(device) if device is not None else editor
