"""Copy trained editors into the package: ``python -m editing.ship --runs OUT``.

Takes ``OUT/<edit>/<model>/seed<seed>/editor.*`` from a sweep of ``python -m editing.train``
and writes ``editing/weights/<edit>.safetensors`` + ``.json`` (see :mod:`editing.shipped`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from editing.edits import EDITS
from editing.shipped import ship_editor

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m editing.ship",
        description="Copy trained editors from a training sweep (OUT/<edit>/<model>/seed<s>/) "
        "into the package (editing/weights/<edit>.safetensors + .json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--runs", required=True, help="the --out folder of python -m editing.train")
    p.add_argument("--model", default="gmn", help="which model's editor to ship")
    p.add_argument("--seed", type=int, default=0, help="which seed's editor to ship")
    p.add_argument("--edit", nargs="+", default=sorted(EDITS), help="edits to ship")
    args = p.parse_args(argv)
    for edit in args.edit:
        run = Path(args.runs) / edit / args.model / f"seed{args.seed}"
        if not (run / "editor.safetensors").exists():
            print(f"skip {edit}: no editor at {run}")
            continue
        print(f"{edit}: {run} -> {ship_editor(run, edit)}")


if __name__ == "__main__":
    main()
