"""Demo of the shipped INR editors: ``python -m editing.demo``.

Loads every shipped editor (:func:`editing.load_editor`), edits the digits-INR test INRs in
weight space and prints, per edit, the test MSE against the image-space edit of the
ground-truth images of: no edit, the shipped GMN editor, invert's exact weight-space solution
(:func:`editing.invert_params`), and beside them the baselines' numbers from the training
sweep table (``--table``, default ``docs/results/editing/results.json``: MLP, MLP +
permutation augmentation and the NP-NFN neural functional trained in the same sweep, mean
over seeds; those editors are not shipped, so their columns are read, not recomputed).
Saves a figure (rows: original render, target, edited render per edit) and a JSON of the
numbers under ``--out`` (``edits.png`` and ``demo.json``, written together). A re-run
replaces its own two files; an ``--out`` that holds anything else is refused unless
``--overwrite``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from common import cli
from common.cli import nonnegative, option
from common.errors import ConfigError, UserError
from common.persistence import (
    figure_bytes,
    json_bytes,
    prepare_output,
    read_json,
    write_checkpoint,
    write_figure,
)
from editing.data import load_digits_inrs
from editing.edits import EDITS
from editing.exact_edits import invert_params
from editing.inr import Params, render
from editing.shipped import available_editors, load_editor
from graphs import params as P

__all__ = ["DEFAULT_TABLE", "DemoConfig", "demo", "edit_and_score", "edits_figure", "main",
           "plot_edits"]

DEFAULT_TABLE = Path(__file__).resolve().parents[1] / "docs/results/editing/results.json"
"""The committed training-sweep table (``python -m editing.train ... --out``, copied)."""


@torch.no_grad()
def edit_and_score(
    params: Params, images: Tensor, edits: Sequence[str], batch: int = 100,
    editors: Mapping[str, Callable[[Params], Params]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Apply the editor of every edit in ``edits`` to ``params`` (``[n, ...]``): the shipped
    one, or ``editors[edit]`` when given.

    Returns:
        per edit: ``no_edit_mse`` and ``editor_mse`` (means over the ``n`` INRs), and the
        tensors ``original`` / ``target`` / ``edited`` (``[n, H, W]`` renders and targets).
    """
    size = tuple(images.shape[1:])
    original = render(params, size)
    out: dict[str, dict[str, Any]] = {}
    for name in edits:
        editor = editors[name] if editors is not None else load_editor(name)
        target = EDITS[name](images)
        edited = torch.cat([
            render(editor(P.member(params, slice(s, s + batch))), size)
            for s in range(0, images.shape[0], batch)
        ])
        out[name] = {
            "no_edit_mse": float((original - target).pow(2).mean()),
            "editor_mse": float((edited - target).pow(2).mean()),
            "exact_mse": (
                float((render(invert_params(params), size) - target).pow(2).mean())
                if name == "invert"
                else None
            ),
            "original": original,
            "target": target,
            "edited": edited,
        }
    return out


def plot_edits(scores: Mapping[str, Mapping[str, Any]], path: Path | str, n: int = 6) -> Path:
    """:func:`edits_figure` saved as a PNG at ``path``; returns it."""
    return write_figure(edits_figure(scores, n), path)


def edits_figure(scores: Mapping[str, Mapping[str, Any]], n: int = 6):
    """Figure: per edit, rows original / target / edited for the first ``n`` INRs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edits = list(scores)
    n = min(n, next(iter(scores.values()))["original"].shape[0])
    fig, axes = plt.subplots(3 * len(edits), n, figsize=(1.2 * n, 3.6 * len(edits)), squeeze=False)
    for e, name in enumerate(edits):
        for r, key in enumerate(("original", "target", "edited")):
            for c in range(n):
                ax = axes[3 * e + r, c]
                ax.imshow(scores[name][key][c].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
            label = {"original": f"{name}\nINR", "target": "target", "edited": "edited"}[key]
            axes[3 * e + r, 0].set_ylabel(label, fontsize=8)
    return fig


def _sweep_table(path: Path) -> dict[str, dict[str, float]]:
    """``{edit: {model: mean test MSE}}`` from a sweep's results.json ({} if absent)."""
    if not path.exists():
        return {}
    table = read_json(path, what="sweep table")["table"]
    return {e: {m: c["mean"] for m, c in models.items()} for e, models in table.items()}


@dataclass
class DemoConfig:
    """Options of ``python -m editing.demo``."""

    edits: list[str] = option(["all"], "edits to run, or 'all' (every shipped editor)",
                              choices=[*sorted(EDITS), "all"])
    limit: int = option(0, "first N test INRs (0: all 197)", check=nonnegative)
    out: str = option("runs/editing_demo", "output folder (edits.png, demo.json)")
    table: str = option(str(DEFAULT_TABLE), "results.json of a training sweep for the "
                        "baseline columns")
    threads: int = option(1, "CPU threads (0: torch default)", check=nonnegative)
    overwrite: bool = option(False, "write edits.png / demo.json into an --out that holds "
                             "other files (those stay)")

    def check(self) -> None:
        if "all" in self.edits and len(self.edits) > 1:
            raise ConfigError("--edits all cannot be combined with edit names")


_DEMO_FILES = ("edits.png", "demo.json")


def demo(cfg: DemoConfig) -> dict[str, Any]:
    """Score the shipped editors on the test INRs, print the table, write figure + JSON.

    Raises:
        UserError: an edit has no shipped editor, the sweep table is malformed, or ``--out``
            holds other files and ``--overwrite`` was not given (checked before any work).
    """
    edits = available_editors() if cfg.edits == ["all"] else cfg.edits
    missing = [e for e in edits if e not in available_editors()]
    if not edits or missing:
        raise UserError(f"no shipped editor for {missing or 'any edit'}; shipped: "
                        f"{available_editors()} (python -m editing.ship --runs OUT)")
    sweep = _sweep_table(Path(cfg.table))
    out = prepare_output(cfg.out, overwrite=cfg.overwrite, writes=_DEMO_FILES, rerun=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    params, images = load_digits_inrs("test", cfg.limit or None, progress=False)
    scores = edit_and_score(params, images, edits)
    print(f"digits-INR test split, {images.shape[0]} INRs: pixel MSE against EDITS[edit](image)")
    print("(MLP and NP-NFN columns: mean over seeds from the sweep table, all 197 test INRs)")
    head = ["no edit", "GMN", "exact", "MLP", "MLP+aug", "NP-NFN"]
    print(f"{'edit':10s}" + "".join(f"{h:>10s}" for h in head))
    for name, s in scores.items():
        row = [s["no_edit_mse"], s["editor_mse"], s["exact_mse"],
               *(sweep.get(name, {}).get(m) for m in ("mlp", "mlp_aug", "np_nfn"))]
        cells = (f"{v:10.5f}" if v is not None else f"{'-':>10s}" for v in row)
        print(f"{name:10s}" + "".join(cells))
    summary = {
        "n_test": int(images.shape[0]),
        "mse": {
            k: {m: v[m] for m in ("no_edit_mse", "editor_mse", "exact_mse")}
            for k, v in scores.items()
        },
        "sweep_table": {"path": str(cfg.table), "mean_test_mse": sweep},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_checkpoint(out, {"edits.png": figure_bytes(edits_figure(scores)),
                           "demo.json": json_bytes(summary)})
    print(f"figure -> {out / 'edits.png'}, numbers -> {out / 'demo.json'}")
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m editing.demo``; returns the numbers written to ``demo.json``."""
    return cli.run(DemoConfig, demo, argv, prog="python -m editing.demo", doc=__doc__)


if __name__ == "__main__":
    main()
