"""Demo of the shipped INR editors: ``python -m editing.demo``.

Loads every shipped editor (:func:`editing.load_editor`), edits the digits-INR test INRs in
weight space and prints, per edit, the test MSE against the image-space edit of the
ground-truth images of: no edit, the shipped GMN editor, invert's exact weight-space solution
(:func:`editing.invert_params`), and beside them the baselines' numbers from the training
sweep table (``--table``, default ``docs/results/editing/results.json``: MLP and MLP +
permutation augmentation, mean over seeds; the MLP editors are not shipped, so those columns
are read, not recomputed) and the NFN-NP reference of the issue. Saves a figure (rows:
original render, target, edited render per edit) and a JSON of the numbers under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from editing.data import load_digits_inrs
from editing.edits import EDITS
from editing.exact_edits import invert_params
from editing.inr import Params, render
from editing.results import REFERENCE, save_figure
from editing.shipped import available_editors, load_editor

__all__ = ["DEFAULT_TABLE", "edit_and_score", "main", "plot_edits"]

DEFAULT_TABLE = Path(__file__).resolve().parents[1] / "docs/results/editing/results.json"
"""The committed training-sweep table (``python -m editing.train ... --out``, copied)."""


@torch.no_grad()
def edit_and_score(
    params: Params, images: Tensor, edits: Sequence[str], batch: int = 100
) -> dict[str, dict[str, Any]]:
    """Apply the shipped editor of every edit in ``edits`` to ``params`` (``[n, ...]``).

    Returns:
        per edit: ``no_edit_mse`` and ``editor_mse`` (means over the ``n`` INRs), and the
        tensors ``original`` / ``target`` / ``edited`` (``[n, H, W]`` renders and targets).
    """
    size = tuple(images.shape[1:])
    original = render(params, size)
    out: dict[str, dict[str, Any]] = {}
    for name in edits:
        editor = load_editor(name)
        target = EDITS[name](images)
        edited = torch.cat([
            render(editor({k: v[s : s + batch] for k, v in params.items()}), size)
            for s in range(0, images.shape[0], batch)
        ])  # fmt: skip
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
    return save_figure(fig, path)


def _sweep_table(path: Path) -> dict[str, dict[str, float]]:
    """``{edit: {model: mean test MSE}}`` from a sweep's results.json ({} if absent)."""
    if not path.exists():
        return {}
    table = json.loads(path.read_text())["table"]
    return {e: {m: c["mean"] for m, c in models.items()} for e, models in table.items()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        prog="python -m editing.demo",
        description="Edit digits-INR test INRs with the shipped editors; print no-edit vs "
        "editor test MSE and save a figure + JSON under --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--edits", nargs="+", default=None, help="edits (default: all shipped)")
    p.add_argument("--limit", type=int, default=None, help="first N test INRs (default: all)")
    p.add_argument("--out", default="runs/editing_demo", help="output folder")
    p.add_argument("--table", default=str(DEFAULT_TABLE),
                   help="results.json of a training sweep for the baseline columns")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    edits = args.edits or available_editors()
    if not edits:
        raise SystemExit("no shipped editors found (python -m editing.ship --runs OUT)")
    params, images = load_digits_inrs("test", args.limit, progress=False)
    scores = edit_and_score(params, images, edits)
    sweep = _sweep_table(Path(args.table))
    print(f"digits-INR test split, {images.shape[0]} INRs: pixel MSE against EDITS[edit](image)")
    print("(MLP columns: mean over seeds from the sweep table, all 197 test INRs; NFN-NP: issue)")
    head = ["no edit", "GMN", "exact", "MLP", "MLP+aug", "NFN-NP"]
    print(f"{'edit':10s}" + "".join(f"{h:>10s}" for h in head))
    for name, s in scores.items():
        row = [s["no_edit_mse"], s["editor_mse"], s["exact_mse"],
               sweep.get(name, {}).get("mlp"), sweep.get(name, {}).get("mlp_aug"),
               REFERENCE["NFN-NP"].get(name)]  # fmt: skip
        cells = (f"{v:10.5f}" if v is not None else f"{'-':>10s}" for v in row)
        print(f"{name:10s}" + "".join(cells))
    out = Path(args.out)
    fig = plot_edits(scores, out / "edits.png")
    summary = {
        "n_test": int(images.shape[0]),
        "mse": {
            k: {m: v[m] for m in ("no_edit_mse", "editor_mse", "exact_mse")}
            for k, v in scores.items()
        },
        "sweep_table": {"path": str(args.table), "mean_test_mse": sweep},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"figure -> {fig}, numbers -> {out / 'demo.json'}")
    return summary


if __name__ == "__main__":
    main()
