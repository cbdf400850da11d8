"""Copy trained editors into the package: ``python -m editing.ship --runs OUT [OUT2 ...]``.

Takes ``OUT/<edit>/<model>/seed<seed>/editor.*`` from a sweep of ``python -m editing.train``
(``--seed best``: the run of lowest validation MSE over all given sweeps) and writes
``editing/weights/<edit>.safetensors`` + ``.json`` (see :mod:`editing.shipped`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from editing.edits import EDITS
from editing.shipped import ship_editor

__all__ = ["main"]


def _pick_run(folder: Path | Sequence[Path], seed: str) -> Path | None:
    """``folder/seed<seed>``, or for ``seed == "best"`` the finished run of lowest validation
    MSE among ``folder/seed*`` (over several folders when a sequence is given)."""
    folders = [Path(folder)] if isinstance(folder, (str, Path)) else [Path(f) for f in folder]
    if seed != "best":
        return folders[0] / f"seed{int(seed)}"
    logs = sorted(log for f in folders for log in f.glob("seed*/log.json"))
    if not logs:
        return None
    return min(logs, key=lambda p: json.loads(p.read_text())["best_val_mse"]).parent


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m editing.ship",
        description="Copy trained editors from training sweeps (OUT/<edit>/<model>/seed<s>/) "
        "into the package (editing/weights/<edit>.safetensors + .json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--runs", required=True, nargs="+",
                   help="the --out folder(s) of python -m editing.train")  # fmt: skip
    p.add_argument("--model", default="gmn", help="which model's editor to ship")
    p.add_argument("--seed", default="0",
                   help="which seed's editor to ship (from the first --runs folder), or 'best' "
                        "for the run with the lowest validation MSE over all --runs folders "
                        "(never the test MSE)")  # fmt: skip
    p.add_argument("--edit", nargs="+", default=sorted(EDITS), help="edits to ship")
    args = p.parse_args(argv)
    for edit in args.edit:
        folders = [Path(r) / edit / args.model for r in args.runs]
        run = _pick_run(folders, args.seed)
        if run is None or not (run / "editor.safetensors").exists():
            print(f"skip {edit}: no editor under {[str(f) for f in folders]}")
            continue
        print(f"{edit}: {run} -> {ship_editor(run, edit)}")


if __name__ == "__main__":
    main()
