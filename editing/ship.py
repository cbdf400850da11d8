"""Copy trained editors into the package: ``python -m editing.ship --runs OUT [OUT2 ...]``.

Takes ``OUT/<edit>/<model>/seed<seed>/editor.*`` from a sweep of ``python -m editing.train``
(``--seed best``: the run of lowest validation MSE over all given sweeps), checks that each
loads (:func:`editing.editor.load_editor_file`), and writes ``<edit>.safetensors`` + ``.json``
into ``--target`` (default: the package's shipped editors, ``editing/weights``; see
:mod:`editing.shipped`), all files as one checkpoint. A ``--target`` that already holds files
(the package folder always does) is refused unless ``--overwrite``, which replaces only the
editors being shipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import cli
from common.cli import option
from common.errors import UserError
from common.persistence import (
    json_bytes,
    prepare_output,
    read_checkpoint,
    read_json,
    require,
    write_checkpoint,
)
from editing.editor import MODELS, load_editor_file
from editing.edits import EDITS
from editing.shipped import weights_dir

__all__ = ["ShipConfig", "main", "ship_editors"]


def _pick_run(folder: Path | Sequence[Path], seed: str) -> Path | None:
    """``folder/seed<seed>``, or for ``seed == "best"`` the finished run of lowest validation
    MSE among ``folder/seed*`` (over several folders when a sequence is given)."""
    folders = [Path(folder)] if isinstance(folder, (str, Path)) else [Path(f) for f in folder]
    if seed != "best":
        return folders[0] / f"seed{int(seed)}"
    logs = sorted(log for f in folders for log in f.glob("seed*/log.json"))
    if not logs:
        return None

    def val_mse(log: Path) -> float:
        return require(read_json(log, what="run log"), "best_val_mse", (int, float), str(log))

    return min(logs, key=val_mse).parent


def _seed_or_best(value: str) -> str | None:
    return None if value == "best" or value.isdigit() else "must be a seed (0, 1, ...) or 'best'"


@dataclass
class ShipConfig:
    """Options of ``python -m editing.ship``."""

    runs: list[str] = option([], "the --out folder(s) of python -m editing.train (required)")
    model: str = option("gmn", "which model's editor to ship", choices=MODELS)
    seed: str = option("0", "which seed's editor to ship (from the first --runs folder), or "
                       "'best' for the run with the lowest validation MSE over all --runs "
                       "folders (never the test MSE)", check=_seed_or_best)
    edit: list[str] = option(sorted(EDITS), "edits to ship", choices=sorted(EDITS))
    target: str = option(str(weights_dir()), "folder to write <edit>.safetensors + .json "
                         "into; the default is the package's shipped editors")
    overwrite: bool = option(False, "replace the editors of these edits already in --target")


def ship_editors(cfg: ShipConfig) -> dict[str, Path]:
    """Ship the editors ``cfg`` selects; returns ``{edit: run folder}`` of those shipped.

    Raises:
        UserError: no selected run holds an editor, an editor does not load, or ``--target``
            holds files and ``--overwrite`` was not given (then nothing is written).
    """
    files: dict[str, bytes] = {}
    shipped: dict[str, Path] = {}
    for edit in cfg.edit:
        folders = [Path(r) / edit / cfg.model for r in cfg.runs]
        run = _pick_run(folders, cfg.seed)
        if run is None or not (run / "editor.safetensors").exists():
            print(f"skip {edit}: no editor under {[str(f) for f in folders]}")
            continue
        editor = load_editor_file(run / "editor")  # validates: finite, known config, shapes
        weights = read_checkpoint(run, ["editor.safetensors"])["editor.safetensors"]
        files[f"{edit}.safetensors"] = weights
        files[f"{edit}.json"] = json_bytes({**editor.info, "source_run": str(run)})
        shipped[edit] = run
    if not shipped:
        looked = f"<edit>/{cfg.model}/seed{cfg.seed}/editor.safetensors"
        raise UserError(f"no editor to ship under --runs {' '.join(cfg.runs)} "
                        f"(looked for {looked})")
    target = prepare_output(cfg.target, overwrite=cfg.overwrite, writes=list(files),
                            option="--target")
    write_checkpoint(target, files)
    for edit, run in shipped.items():
        print(f"{edit}: {run} -> {target / f'{edit}.safetensors'}")
    return shipped


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    """``python -m editing.ship``; returns ``{edit: run folder}`` of the editors shipped."""
    return cli.run(ShipConfig, ship_editors, argv, prog="python -m editing.ship", doc=__doc__)


if __name__ == "__main__":
    main()
