"""Shipped trained editors (package data ``editing/weights/<edit>.safetensors`` + ``.json``).

``load_editor("dilate")`` loads the shipped GMN editor for an edit; ``load_editor(folder)``
loads a run folder of :mod:`editing.train` (or any ``<stem>.safetensors`` written by
:func:`editing.editor.save_editor`). ``python -m editing.ship --runs OUT`` copies the
best-validation GMN editors of a training sweep into the package.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import torch

from editing.editor import Editor, load_editor_file
from editing.edits import EDITS

__all__ = ["available_editors", "load_editor", "ship_editor", "weights_dir"]


def weights_dir() -> Path:
    """Folder of the shipped editors inside the installed package."""
    return Path(str(resources.files("editing") / "weights"))


def available_editors() -> list[str]:
    """Names of the edits with a shipped editor (sorted)."""
    folder = weights_dir()
    return sorted(p.stem for p in folder.glob("*.safetensors") if p.stem in EDITS)


def load_editor(name: str | Path, device: torch.device | str | None = None) -> Editor:
    """A trained editor: ``editor(params)`` maps batched SIREN params to edited ones.

    Args:
        name: an edit name with a shipped editor (see :func:`available_editors`), a run folder
            of ``python -m editing.train`` (holding ``editor.safetensors``), or the path of an
            editor ``.safetensors`` file.
        device: where to put it (default CPU).

    Raises:
        ValueError: ``name`` is neither a known edit nor an existing path.
        FileNotFoundError: the edit is known but no editor for it is shipped.
    """
    path = Path(name)
    if str(name) in EDITS:
        stem = weights_dir() / str(name)
        if not stem.with_suffix(".safetensors").exists():
            raise FileNotFoundError(
                f"no shipped editor for {name!r}; shipped: {available_editors()} "
                "(train one with `python -m editing.train --edit NAME`)"
            )
    elif path.is_dir():
        stem = path / "editor"
    elif path.with_suffix(".safetensors").exists():
        stem = path.with_suffix("")
    else:
        raise ValueError(
            f"unknown editor {str(name)!r}: not an edit name {sorted(EDITS)} "
            "and not an existing run folder or .safetensors file"
        )
    editor = load_editor_file(stem, device)
    editor.eval()
    return editor


def ship_editor(run: Path | str, name: str) -> Path:
    """Copy ``run/editor.safetensors`` + ``editor.json`` to ``editing/weights/<name>.*``."""
    if name not in EDITS:
        raise ValueError(f"unknown edit {name!r}; choose from {sorted(EDITS)}")
    run = Path(run)
    dst = weights_dir()
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "editor.safetensors", dst / f"{name}.safetensors")
    info = json.loads((run / "editor.json").read_text())
    info["source_run"] = str(run)
    (dst / f"{name}.json").write_text(json.dumps(info, indent=2) + "\n")
    return dst / f"{name}.safetensors"
