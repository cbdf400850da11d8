r"""Calibrate a learned optimizer's step size and weight decay on validation data.

Truncated backpropagation sees a truncation of ``T`` inner steps at a time, so it is biased
towards greedy steps: a weight decay pays off only over hundreds of steps (it keeps weights,
and so the test loss' over-confident mistakes, small) and costs progress inside every
truncation, so meta-training drives it towards zero (the short-horizon bias of Wu et al.,
2018). This second stage searches the two scalars that matter most over the whole horizon
instead — the step-size multiplier :math:`\eta` and a decoupled weight decay :math:`\lambda`
— and folds the best pair into the checkpoint (:math:`\alpha \leftarrow \eta\alpha`,
:math:`\omega \leftarrow \omega + \lambda`; see :mod:`lopt.update`):

* every grid point trains ``--runs`` networks of the task for ``--steps`` steps with
  :class:`~lopt.optimizer.GMNOptimizer` ``(lr=eta, weight_decay=lambda)``, each on its own
  random train / valid partition of the task's *train* set (:meth:`tasks.Task.resplit`;
  the test set is never used);
* the score is the lowest point of the run-averaged validation-loss curve (the benchmark's
  "best test loss" measured on validation data), ties broken by the earlier step;
* ``--task`` may name a task family (``tasks.FAMILIES``): each run then trains its own task
  drawn from it, and its curve is divided by the lowest validation loss that run reaches on
  the whole grid, so that tasks with large losses do not decide alone.

``python -m lopt.calibrate --checkpoint runs/lopt --out runs/lopt_calibrated`` writes the
calibrated checkpoint (loadable by ``GMNOptimizer(model, checkpoint=...)``),
``calibration.json`` (every grid point's curve and score) and ``calibration.png``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from common import cli
from common.errors import ConfigError
from common.persistence import prepare_output, write_figure, write_json
from lopt.baselines import train_curve
from lopt.checkpoint import (
    LearnedOptimizer,
    load_learned_optimizer,
    save_learned_optimizer,
    shipped_name,
)
from tasks import FAMILIES, TASKS, Task, TaskFamily, get_task_or_family
from tasks.base import mix_seed

__all__ = ["CalibrateConfig", "calibrate", "fold", "main", "run", "valid_curve"]


def valid_curve(lopt: LearnedOptimizer, task: Task, lr: float, weight_decay: float, run: int,
                steps: int, eval_every: int, seed: int = 0,
                device: torch.device | str = "cpu") -> list[float]:
    """Validation losses every ``eval_every`` steps of one run on a resampled split."""
    split = task.resplit(mix_seed(seed, 11, run) % (2**31))
    model_seed = mix_seed(seed, 12, run) % (2**31)
    curve = train_curve(split, "learned", lr, model_seed, steps, eval_every, checkpoint=lopt,
                        device=device, weight_decay=weight_decay,
                        eval_data=split.pool("valid"))
    return curve.test_loss[1:]  # the first point is before training


def fold(lopt: LearnedOptimizer, lr: float, weight_decay: float) -> LearnedOptimizer:
    """A copy of ``lopt`` whose default behaviour is ``GMNOptimizer(lr=lr, weight_decay=wd)``."""
    if lr <= 0 or weight_decay < 0:
        raise ValueError(f"need lr > 0 and weight_decay >= 0, got {lr}, {weight_decay}")
    out = copy.deepcopy(lopt)
    out.scales["log_alpha"] = out.scales["log_alpha"] + math.log(lr)
    omega = out.weight_decay + weight_decay
    if omega > 0:
        out.set_weight_decay(omega)
    return out


def calibrate(lopt: LearnedOptimizer, task: Task | TaskFamily, lrs: list[float],
              weight_decays: list[float], steps: int = 600, runs: int = 4, eval_every: int = 20,
              seed: int = 0, device: torch.device | str = "cpu",
              progress: bool = True) -> tuple[LearnedOptimizer, dict]:
    """Grid-search ``(lr, weight_decay)`` on validation data; return the folded optimizer.

    ``task`` may be a :class:`~tasks.families.TaskFamily`: run ``r`` then trains its own task
    drawn from it (:meth:`~tasks.families.TaskFamily.sample_many`: a mixture's members in
    turn; the same task at every grid point), and each run's curve is divided by the
    lowest validation loss that run reaches anywhere on the grid, so that every task weighs
    the same in the score whatever the scale of its loss (a score of 1 would be best on all).

    Returns:
        ``(calibrated, report)``; ``report["grid"]`` holds every point's mean curve and score,
        ``report["best"]`` the chosen ``lr`` and ``weight_decay``.
    """
    if not lrs or not weight_decays:
        raise ValueError("calibration needs at least one lr and one weight decay")
    if min(lrs) <= 0 or min(weight_decays) < 0:
        raise ValueError(f"need lrs > 0 and weight decays >= 0, got {lrs}, {weight_decays}")
    if steps < eval_every:
        raise ValueError(f"steps ({steps}) must be at least eval_every ({eval_every})")
    family = isinstance(task, TaskFamily)
    tasks = task.sample_many(runs, seed) if family else [task] * runs
    points = [(lr, wd) for lr in lrs for wd in weight_decays]
    bar = tqdm(total=len(points) * runs, desc="calibrate", disable=not progress)
    curves = {}  # (lr, wd) -> one validation curve per run
    for lr, wd in points:
        curves[lr, wd] = []
        for r, run_task in enumerate(tasks):
            curves[lr, wd].append(valid_curve(lopt, run_task, lr, wd, r, steps, eval_every, seed,
                                              device))
            bar.update(1)
    bar.close()
    scale = [1.0] * runs
    if family:  # each run's best anywhere on the grid
        scale = [min(min(curves[p][r]) for p in points) for r in range(runs)]
    grid = []
    for lr, wd in points:
        runs_curves = [[v / scale[r] for v in c] for r, c in enumerate(curves[lr, wd])]
        mean = [sum(vs) / runs for vs in zip(*runs_curves)]
        best = min(range(len(mean)), key=lambda i: (mean[i], i))
        grid.append({"lr": lr, "weight_decay": wd, "score": mean[best],
                     "best_step": (best + 1) * eval_every, "mean_valid_curve": mean,
                     "run_best": [min(c) for c in curves[lr, wd]]})
    top = min(grid, key=lambda g: (g["score"], g["best_step"]))
    report = {"task": task.name, "run_tasks": [t.name for t in tasks], "normalized": family,
              "steps": steps, "runs": runs, "eval_every": eval_every, "seed": seed,
              "best": {"lr": top["lr"], "weight_decay": top["weight_decay"],
                       "score": top["score"], "best_step": top["best_step"]},
              "grid": grid}
    return fold(lopt, top["lr"], top["weight_decay"]), report


def plot(report: dict, path: Path) -> None:
    """Best mean validation loss over the (lr, weight decay) grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lrs = sorted({g["lr"] for g in report["grid"]})
    wds = sorted({g["weight_decay"] for g in report["grid"]})
    score = {(g["lr"], g["weight_decay"]): g["score"] for g in report["grid"]}
    fig, ax = plt.subplots(figsize=(1.2 * len(wds) + 2.5, 0.7 * len(lrs) + 2))
    data = [[score[(lr, wd)] for wd in wds] for lr in lrs]
    im = ax.imshow(data, cmap="viridis_r", aspect="auto")
    for i, row in enumerate(data):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.4f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(len(wds)), [f"{w:g}" for w in wds])
    ax.set_yticks(range(len(lrs)), [f"{v:g}" for v in lrs])
    ax.set_xlabel("weight decay")
    ax.set_ylabel("lr multiplier")
    what = "best mean valid loss"
    if report.get("normalized"):
        what = "best mean of valid loss / run's best"
    ax.set_title(f"{what}, {report['task']}", fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    write_figure(fig, path)


@dataclass
class CalibrateConfig:
    """Options of ``python -m lopt.calibrate`` (each field is a ``--flag``)."""

    checkpoint: str = cli.option("", "learned optimizer to calibrate: a meta_train --out "
                                 "folder, 'shipped' or a shipped name such as 'digits' (required)")
    out: str = cli.option("", "folder for the calibrated checkpoint (required; refused when it "
                          "holds files, unless --overwrite, and never the --checkpoint folder)")
    overwrite: bool = cli.option(False, "replace what calibration writes in a non-empty --out")
    task: str = cli.option("digits_mlp32", "task, or task family (each run draws its own task), "
                           "to calibrate on", choices=sorted(TASKS) + sorted(FAMILIES))
    lrs: list[float] = cli.option([0.5, 0.7, 1.0], "lr multipliers to try", check=cli.positive)
    weight_decays: list[float] = cli.option([0.0, 0.1, 0.3, 1.0, 3.0],
                                            "decoupled weight decays to try",
                                            check=cli.nonnegative)
    steps: int = cli.option(600, "inner steps per run", check=cli.positive)
    runs: int = cli.option(4, "runs per grid point, each on its own train/valid split",
                           check=cli.positive)
    eval_every: int = cli.option(20, "steps between validations", check=cli.positive)
    seed: int = cli.option(0, "seed of the splits and model inits")
    device: str = cli.option("cpu", "torch device")
    threads: int = cli.option(1, "torch CPU threads", check=cli.positive)

    def check(self) -> None:
        for name in ("checkpoint", "out"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is required")
        if self.steps < self.eval_every:
            raise ConfigError(f"--steps ({self.steps}) must be at least --eval-every "
                              f"({self.eval_every})")
        if shipped_name(self.checkpoint) is None and _same_folder(self.checkpoint, self.out):
            raise ConfigError(f"--out {self.out} is the --checkpoint folder: calibration would "
                              "overwrite the meta-trained weights; choose another --out")


OUTPUTS = ("lopt.safetensors", "lopt.json", "calibration.json", "calibration.png")


def _same_folder(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    pa = pa.parent if pa.is_file() else pa
    return pa.resolve() == pb.resolve()


def run(cfg: CalibrateConfig) -> dict:
    """Calibrate as configured: checks the task, checkpoint and folder before any training."""
    torch.set_num_threads(cfg.threads)
    task = get_task_or_family(cfg.task)
    lopt = load_learned_optimizer(cfg.checkpoint, device=cfg.device)
    out = prepare_output(cfg.out, overwrite=cfg.overwrite, writes=OUTPUTS)
    t0 = time.time()
    calibrated, report = calibrate(lopt, task, cfg.lrs, cfg.weight_decays, cfg.steps, cfg.runs,
                                   cfg.eval_every, cfg.seed, cfg.device)
    report["checkpoint"] = cfg.checkpoint
    report["wall_s"] = time.time() - t0
    calibrated.extra = {**calibrated.extra, "calibration": report["best"]}
    save_learned_optimizer(calibrated, out)
    write_json(out / "calibration.json", report)
    plot(report, out / "calibration.png")
    b = report["best"]
    tqdm.write(f"calibrated: lr x{b['lr']:g}, weight decay +{b['weight_decay']:g} "
               f"(best mean valid loss {b['score']:.4f} at step {b['best_step']}) -> {out}")
    return report


def main(argv: list[str] | None = None) -> dict:
    return cli.run(CalibrateConfig, run, argv, prog="python -m lopt.calibrate", doc=__doc__)


if __name__ == "__main__":
    main()
