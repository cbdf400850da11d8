"""Editors on digits the benchmark never had: ``python -m editing.heldout``.

The digits-INR benchmark fits one SIREN per upright, centred scikit-learn digit. Here the
test-split digits are first rotated (up to 15 degrees) and shifted (up to 2 pixels) with
SciPy (:func:`moved_digits`), fitted with :func:`editing.fit_inrs` (same protocol as the
benchmark: 1000 steps, lr 1e-3), and edited. Per edit the score is the *ratio* of the edited
INR's MSE to the unedited INR's MSE, both against ``EDITS[edit]`` of the moved image: 1 is
no better than not editing, 0 is the exact edit. The test suite checks the same digits
against targets re-derived without :mod:`editing.edits` (``tests/editing/test_shipped.py``).

Which editors: ``--models shipped`` (the six shipped editors, the default) and / or model
names of a training sweep (``--runs OUT --models gmn np_nfn --seeds 0 1 2`` loads
``OUT/<edit>/<model>/seed<s>``); per model the mean and standard deviation over seeds are
reported. Writes ``heldout.json`` into ``--out`` (a re-run replaces it; a folder holding
other files is refused unless ``--overwrite``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import cli
from common.cli import nonnegative, option, positive
from common.errors import ConfigError, UserError
from common.persistence import json_bytes, prepare_output, write_checkpoint
from editing.data import digits_images, move_image
from editing.demo import edit_and_score
from editing.edits import EDITS
from editing.inr import fit_inrs, psnr, render
from editing.shipped import available_editors, load_editor

__all__ = ["HeldoutConfig", "heldout", "main", "moved_digits"]


def moved_digits(n: int = 6, seed: int = 0, size: int = 28) -> np.ndarray:
    """The first ``n`` test-split digits, each rotated by U(-15, 15) degrees and shifted by
    an integer in [-2, 2] pixels per axis (bilinear, clipped to [0, 1]).

    Returns:
        ``[n, size, size]`` float64 images; the same for the same ``(n, seed)``.
    """
    images, splits = digits_images(size)
    test = splits["test"]
    if not 1 <= n <= len(test):
        raise ConfigError(f"n must be in [1, {len(test)}] (the test split), got {n}")
    rng = np.random.default_rng(seed)
    moved = []
    for image in images[test[:n]].numpy().astype(np.float64):
        moved.append(move_image(image, rng.uniform(-15, 15), rng.integers(-2, 3, size=2)))
    return np.stack(moved)


@dataclass
class HeldoutConfig:
    """Options of ``python -m editing.heldout``."""

    edits: list[str] = option(["all"], "edits to score, or 'all'",
                              choices=[*sorted(EDITS), "all"])
    models: list[str] = option(["shipped"], "'shipped' (the shipped editors) and / or model "
                               "names of the sweep in --runs (gmn, np_nfn, mlp, ...)")
    runs: str = option("", "a training sweep's --out (needed for models other than shipped)")
    seeds: list[int] = option([0], "seeds of the sweep's runs (mean and std over them)")
    n: int = option(64, "how many moved test digits", check=positive)
    seed: int = option(0, "seed of the rotations and shifts")
    fit_steps: int = option(1000, "SIREN fitting steps per moved digit", check=positive)
    out: str = option("runs/editing_heldout", "output folder (heldout.json)")
    threads: int = option(1, "CPU threads (0: torch default)", check=nonnegative)
    overwrite: bool = option(False, "write heldout.json into an --out that holds other files "
                             "(those stay)")

    def check(self) -> None:
        if "all" in self.edits and len(self.edits) > 1:
            raise ConfigError("--edits all cannot be combined with edit names")
        if any(m != "shipped" for m in self.models) and not self.runs:
            raise ConfigError("--models other than 'shipped' need --runs (a sweep's --out)")


def _editor_folders(cfg: HeldoutConfig, edits: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """``{model: [{edit: name or folder} per seed]}``, every folder checked to exist."""
    plan: dict[str, list[dict[str, Any]]] = {}
    missing = []
    for model in cfg.models:
        if model == "shipped":
            absent = [e for e in edits if e not in available_editors()]
            if absent:
                raise UserError(f"no shipped editor for {absent}; shipped: {available_editors()}")
            plan[model] = [{e: e for e in edits}]
            continue
        plan[model] = []
        for seed in cfg.seeds:
            folders = {e: Path(cfg.runs) / e / model / f"seed{seed}" for e in edits}
            missing += [str(f) for f in folders.values() if not (f / "editor.json").exists()]
            plan[model].append(folders)
    if missing:
        raise UserError(f"no finished editor run in {', '.join(missing[:4])}"
                        + (f" (+{len(missing) - 4} more)" if len(missing) > 4 else ""))
    return plan


def heldout(cfg: HeldoutConfig) -> dict[str, Any]:
    """Fit the moved digits, score every requested editor, print a table, write the JSON."""
    edits = sorted(EDITS) if cfg.edits == ["all"] else cfg.edits
    plan = _editor_folders(cfg, edits)
    t0 = time.perf_counter()
    images = torch.from_numpy(moved_digits(cfg.n, cfg.seed)).float()
    out = prepare_output(cfg.out, overwrite=cfg.overwrite, writes=("heldout.json",), rerun=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    params = fit_inrs(images, steps=cfg.fit_steps, progress=False)
    fit_psnr = psnr(render(params, tuple(images.shape[1:])), images)
    table: dict[str, dict[str, Any]] = {}
    for model, per_seed in plan.items():
        scores = [edit_and_score(params, images, edits,
                                 editors={e: load_editor(f) for e, f in folders.items()})
                  for folders in per_seed]
        table[model] = {}
        for e in edits:
            ratios = np.array([s[e]["editor_mse"] / s[e]["no_edit_mse"] for s in scores])
            table[model][e] = {
                "ratio_mean": float(ratios.mean()),
                "ratio_std": float(ratios.std(ddof=1)) if len(ratios) > 1 else 0.0,
                "ratios": ratios.tolist(),
                "editor_mse": [s[e]["editor_mse"] for s in scores],
                "no_edit_mse": scores[0][e]["no_edit_mse"],
            }
    print(f"{cfg.n} moved test digits (fit PSNR {float(fit_psnr.mean()):.1f} dB): "
          "edited / unedited MSE against EDITS[edit] (lower is better, 0 exact)")
    print(f"{'model':10s}" + "".join(f"{e:>10s}" for e in edits))
    for model, row in table.items():
        print(f"{model:10s}" + "".join(f"{row[e]['ratio_mean']:10.4f}" for e in edits))
    summary = {
        "n": cfg.n, "seed": cfg.seed, "fit_steps": cfg.fit_steps,
        "fit_psnr_mean": float(fit_psnr.mean()),
        "runs": cfg.runs, "seeds": cfg.seeds, "table": table,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_checkpoint(out, {"heldout.json": json_bytes(summary)})
    print(f"numbers -> {out / 'heldout.json'}")
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m editing.heldout``; returns the numbers written to ``heldout.json``."""
    return cli.run(HeldoutConfig, heldout, argv, prog="python -m editing.heldout", doc=__doc__)


if __name__ == "__main__":
    main()
