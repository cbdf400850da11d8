"""Everything the project writes to or reads from disk: safetensors plus JSON, never pickle.

One home for the rules of ``../DESIGN.md`` ("Persistence and command lines"):

* **Atomic files.** :func:`write_bytes` / :func:`write_json` / :func:`save_tensors` write a
  temporary file in the destination folder, flush it to disk and ``os.replace`` it: a reader
  sees the old file or the new one, never half of one.
* **Checkpoints written whole.** :func:`write_checkpoint` writes several files as one
  transaction (a small redo log): the new files are written into ``.checkpoint.staging/``,
  the staging folder is renamed to ``.checkpoint.commit/`` (the commit point, one atomic
  rename), then each file is moved into place and the commit folder removed. Whatever moment
  the process dies, :func:`recover_checkpoint` (run before every write, and by ``--resume``)
  either rolls a committed checkpoint forward or drops an uncommitted one, so the folder
  holds the last complete checkpoint, every file at one step. :func:`checkpoint_file` reads
  through an unfinished commit, so readers never see a mix either.
* **Never overwrite.** :func:`prepare_output` refuses a folder that already holds files
  unless the caller asked to overwrite (then it removes only the files that command writes).
* **Validated reads.** :func:`read_json` and :func:`load_tensors` raise
  :class:`PersistenceError` naming the file (and the tensor or field) on anything malformed
  or non-finite, instead of a bare ``JSONDecodeError`` / ``KeyError``.
* **Shipped weights** (package data) are read by :func:`read_shipped`.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from torch import Tensor

from common.errors import UserError

__all__ = [
    "COMMIT_DIR",
    "STAGING_DIR",
    "FolderNotEmptyError",
    "PersistenceError",
    "checkpoint_file",
    "has_checkpoint",
    "figure_bytes",
    "foreign_files",
    "json_bytes",
    "load_tensors",
    "prepare_output",
    "read_checkpoint",
    "read_json",
    "recover_checkpoint",
    "refuse_foreign",
    "save_tensors",
    "parse_json",
    "parse_tensors",
    "read_shipped",
    "require",
    "shipped_names",
    "tensor_bytes",
    "write_bytes",
    "write_checkpoint",
    "write_figure",
    "write_json",
    "write_text",
]

STAGING_DIR = ".checkpoint.staging"
COMMIT_DIR = ".checkpoint.commit"
_MANIFEST = "MANIFEST.json"


class PersistenceError(UserError):
    """A file or folder is missing, malformed or would be overwritten; the message names it."""


class FolderNotEmptyError(PersistenceError):
    """A new run was pointed at a folder that already holds files."""


# ----------------------------------------------------------------------------- atomic files
def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported (e.g. Windows): rename atomicity still holds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(path.parent)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode())


def json_bytes(obj: Any) -> bytes:
    """``obj`` as indented JSON bytes with a final newline."""
    return (json.dumps(obj, indent=1) + "\n").encode()


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically."""
    return write_bytes(path, json_bytes(obj))


def tensor_bytes(tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None,
                 ) -> bytes:
    """``tensors`` (any device, detached and made contiguous here) in safetensors format."""
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return _st_save(cpu, metadata=dict(metadata) if metadata else None)


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, Tensor],
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` as a safetensors file atomically."""
    return write_bytes(path, tensor_bytes(tensors, metadata))


def figure_bytes(fig, dpi: int = 110) -> bytes:
    """A matplotlib figure laid out (``tight_layout``) and rendered as PNG bytes; closes it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure as a PNG atomically (:func:`figure_bytes`)."""
    return write_bytes(path, figure_bytes(fig, dpi))


# ----------------------------------------------------------------------------- validated reads
def read_json(path: str | os.PathLike, *, what: str = "JSON file") -> Any:
    """Parse ``path``; a missing or malformed file raises :class:`PersistenceError` naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PersistenceError(f"{what} {path} does not exist") from None
    except OSError as err:
        raise PersistenceError(f"cannot read {what} {path}: {err}") from err
    return parse_json(text, str(path), what)


def parse_json(text: str, where: str, what: str = "JSON file") -> Any:
    """``json.loads`` whose error names ``where``. Fields a loader relies on are checked with
    :func:`require` (present, typed, finite)."""
    try:
        return json.loads(text)
    except ValueError as err:
        raise PersistenceError(f"{what} {where} is not valid JSON: {err}") from err


def _check_tensors(tensors: dict[str, Tensor], where: str, finite: bool) -> dict[str, Tensor]:
    if finite:
        for name, t in tensors.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise PersistenceError(f"{where}: tensor {name!r} holds non-finite values")
    return tensors


def load_tensors(path: str | os.PathLike, *, finite: bool = True,
                 device: torch.device | str | None = None) -> dict[str, Tensor]:
    """Read a safetensors file; with ``finite`` every floating tensor must be finite.

    Raises:
        PersistenceError: the file is missing, not a safetensors file, or holds NaN / inf.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PersistenceError(f"tensor file {path} does not exist") from None
    return parse_tensors(data, str(path), finite=finite, device=device)


def parse_tensors(data: bytes, where: str, *, finite: bool = True,
                  device: torch.device | str | None = None) -> dict[str, Tensor]:
    """Tensors from safetensors bytes; errors name ``where``."""
    try:
        tensors = _st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise PersistenceError(f"{where} is not a readable safetensors file: {err}") from err
    tensors = _check_tensors(dict(sorted(tensors.items())), where, finite)
    if device is not None:
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors


def require(config: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
            check=None, why: str = "") -> Any:
    """``config[key]``, checked: present, of type ``kind``, finite if a number, ``check(v)``.

    Raises:
        PersistenceError: naming ``where`` and the field.
    """
    if not isinstance(config, Mapping) or key not in config:
        raise PersistenceError(f"{where}: field {key!r} is missing")
    value = config[key]
    bad = not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind))
    if not bad and isinstance(value, float) and not math.isfinite(value):
        bad = True
    if not bad and check is not None and not check(value):
        bad = True
    if bad:
        need = why or " or ".join(k.__name__ for k in _tuple(kind))
        raise PersistenceError(f"{where}: field {key!r} = {value!r} is not {need}")
    return value


def _tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


# ----------------------------------------------------------------------------- shipped weights
def read_shipped(package: str, stem: str, *, finite: bool = True,
                 device: torch.device | str | None = None) -> tuple[Any, dict[str, Tensor]]:
    """``(config, tensors)`` of ``<stem>.json`` + ``<stem>.safetensors`` shipped in ``package``.

    Read as package data (``importlib.resources``), so it works from an installed wheel.

    Raises:
        PersistenceError: the package ships no such pair, or it is malformed.
    """
    root = resources.files(package)
    weights, config = root.joinpath(f"{stem}.safetensors"), root.joinpath(f"{stem}.json")
    if not (weights.is_file() and config.is_file()):
        raise PersistenceError(
            f"{package} ships no {stem!r} weights (available: {shipped_names(package)})"
        )
    where = f"{package}/{stem}"
    return (parse_json(config.read_text(), f"{where}.json"),
            parse_tensors(weights.read_bytes(), f"{where}.safetensors", finite=finite,
                          device=device))


def shipped_names(package: str) -> list[str]:
    """Stems of the ``.safetensors`` files shipped in ``package``."""
    return sorted(p.name[: -len(".safetensors")] for p in resources.files(package).iterdir()
                  if p.name.endswith(".safetensors"))


# ----------------------------------------------------------------------------- output folders
def prepare_output(folder: str | os.PathLike, *, overwrite: bool = False,
                   writes: Iterable[str] = (), flag: str = "--overwrite",
                   option: str = "--out", rerun: bool = False) -> Path:
    """Make ``folder`` ready for a new run that writes the files (or globs) in ``writes``.

    A folder that does not exist or is empty is created / used. A folder that holds anything
    is refused unless ``overwrite``; then the entries matching ``writes`` (and an unfinished
    checkpoint) are removed first, so nothing of the previous run mixes with the new one, and
    every other file is left alone. With ``rerun`` (commands whose re-run simply replaces
    their own results, such as demos) a folder holding nothing but such files is reused.

    Raises:
        FolderNotEmptyError: the folder holds files and ``overwrite`` is false; nothing was
            written.
        PersistenceError: ``folder`` is a file.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PersistenceError(f"{option} {folder} is a file, not a folder")
    writes = list(writes)
    held = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    if rerun and not foreign_files(folder, lambda p: any(fnmatch(str(p), w) for w in writes)):
        overwrite = True
    if held and not overwrite:
        shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
        raise FolderNotEmptyError(
            f"{option} {folder} already holds files ({shown}); choose another {option}, or "
            f"pass {flag} to replace what this command writes there"
        )
    folder.mkdir(parents=True, exist_ok=True)
    if held:
        for pattern in [*writes, STAGING_DIR, COMMIT_DIR]:
            for path in folder.glob(pattern):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    return folder


def foreign_files(folder: str | os.PathLike, ours: Callable[[Path], bool]) -> list[Path]:
    """Files under ``folder`` (recursively, relative to it) that ``ours`` does not claim."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(path.relative_to(folder) for path in folder.rglob("*")
                  if not path.is_dir() and not ours(path.relative_to(folder)))


def refuse_foreign(folder: str | os.PathLike, ours: Callable[[Path], bool], *,
                   overwrite: bool, option: str = "--out", flag: str = "--overwrite") -> Path:
    """For a command that *adds to* a folder (a sweep resumed run by run, a cache): check
    that ``folder`` is missing or holds only files ``ours(relative path)`` claims. Writes
    nothing; with ``overwrite`` other files are accepted (and left alone).

    Raises:
        FolderNotEmptyError: ``folder`` holds other files and ``overwrite`` is false.
        PersistenceError: ``folder`` is a file.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PersistenceError(f"{option} {folder} is a file, not a folder")
    held = foreign_files(folder, ours)
    if held and not overwrite:
        shown = ", ".join(map(str, held[:5])) + (", ..." if len(held) > 5 else "")
        raise FolderNotEmptyError(
            f"{option} {folder} holds files this command did not write ({shown}); choose "
            f"another {option}, or pass {flag} to write there anyway (those files stay)"
        )
    return folder


# ----------------------------------------------------------------------------- checkpoints
def recover_checkpoint(folder: str | os.PathLike) -> None:
    """Finish or drop an interrupted :func:`write_checkpoint` in ``folder``.

    A committed checkpoint (``.checkpoint.commit/`` exists) is rolled forward: its remaining
    files are moved into place. An uncommitted one (``.checkpoint.staging/``) is removed: the
    files in ``folder`` are still the previous complete checkpoint.
    """
    folder = Path(folder)
    commit = folder / COMMIT_DIR
    if commit.is_dir():
        for path in sorted(commit.iterdir()):
            if path.name != _MANIFEST:
                os.replace(path, folder / path.name)
        _fsync_dir(folder)
        shutil.rmtree(commit)
    staging = folder / STAGING_DIR
    if staging.exists():
        shutil.rmtree(staging)


def write_checkpoint(folder: str | os.PathLike, files: Mapping[str, bytes],
                     step: int | None = None) -> Path:
    """Write ``files`` (name -> content) into ``folder`` as one all-or-nothing checkpoint.

    ``step`` (e.g. the outer step) is recorded in the commit manifest for error messages.
    See the module docstring for the protocol; names must be plain file names.
    """
    folder = Path(folder)
    for name in files:
        if Path(name).name != name or name in (STAGING_DIR, COMMIT_DIR, _MANIFEST):
            raise ValueError(f"checkpoint file names must be plain names, got {name!r}")
    folder.mkdir(parents=True, exist_ok=True)
    recover_checkpoint(folder)
    staging = folder / STAGING_DIR
    staging.mkdir()
    for name, data in {**files, _MANIFEST: json_bytes({"files": sorted(files), "step": step})
                       }.items():
        with open(staging / name, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    _fsync_dir(staging)
    os.rename(staging, folder / COMMIT_DIR)  # the commit point
    _fsync_dir(folder)
    recover_checkpoint(folder)  # move the files into place
    return folder


def checkpoint_file(folder: str | os.PathLike, name: str) -> Path:
    """Where to read ``name`` of the checkpoint in ``folder`` (through an unfinished commit)."""
    folder = Path(folder)
    pending = folder / COMMIT_DIR / name
    return pending if pending.exists() else folder / name


def read_checkpoint(folder: str | os.PathLike, names: Iterable[str]) -> dict[str, bytes]:
    """The contents of ``names`` as one consistent checkpoint (``{}`` for a missing file)."""
    out = {}
    for name in names:
        path = checkpoint_file(folder, name)
        try:
            out[name] = path.read_bytes()
        except FileNotFoundError:
            continue
    return out


def has_checkpoint(folder: str | os.PathLike, names: Iterable[str]) -> bool:
    """Whether every file of ``names`` is in ``folder`` (or in its unfinished commit)."""
    return all(checkpoint_file(folder, n).is_file() for n in names)
