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

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from lopt.baselines import train_curve
from lopt.checkpoint import LearnedOptimizer, load_learned_optimizer, save_learned_optimizer
from tasks import Task, TaskFamily, get_task_or_family
from tasks.base import mix_seed

__all__ = ["calibrate", "fold", "main", "valid_curve"]


def valid_curve(lopt: LearnedOptimizer, task: Task, lr: float, weight_decay: float, run: int,
                steps: int, eval_every: int, seed: int = 0,
                device: torch.device | str = "cpu") -> list[float]:  # fmt: skip
    """Validation losses every ``eval_every`` steps of one run on a resampled split."""
    split = task.resplit(mix_seed(seed, 11, run) % (2**31))
    model_seed = mix_seed(seed, 12, run) % (2**31)
    curve = train_curve(split, "learned", lr, model_seed, steps, eval_every, checkpoint=lopt,
                        device=device, weight_decay=weight_decay,
                        eval_data=split.pool("valid"))  # fmt: skip
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
              progress: bool = True) -> tuple[LearnedOptimizer, dict]:  # fmt: skip
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
                                              device))  # fmt: skip
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
                     "run_best": [min(c) for c in curves[lr, wd]]})  # fmt: skip
    top = min(grid, key=lambda g: (g["score"], g["best_step"]))
    report = {"task": task.name, "run_tasks": [t.name for t in tasks], "normalized": family,
              "steps": steps, "runs": runs, "eval_every": eval_every, "seed": seed,
              "best": {"lr": top["lr"], "weight_decay": top["weight_decay"],
                       "score": top["score"], "best_step": top["best_step"]},
              "grid": grid}  # fmt: skip
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
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lopt.calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--checkpoint", required=True,
                   help="learned optimizer to calibrate: a meta_train --out folder or 'shipped'")
    p.add_argument("--out", required=True, help="folder for the calibrated checkpoint")
    p.add_argument("--task", default="digits_mlp32",
                   help="task, or task family (each run draws its own task), to calibrate on")
    p.add_argument("--lrs", type=float, nargs="+", default=[0.5, 0.7, 1.0],
                   help="lr multipliers to try (default 0.5 0.7 1)")
    p.add_argument("--weight-decays", type=float, nargs="+", default=[0.0, 0.1, 0.3, 1.0, 3.0],
                   help="decoupled weight decays to try (default 0 0.1 0.3 1 3)")
    p.add_argument("--steps", type=int, default=600, help="inner steps per run (default 600)")
    p.add_argument("--runs", type=int, default=4,
                   help="runs per grid point, each on its own train/valid split (default 4)")
    p.add_argument("--eval-every", type=int, default=20, help="steps between validations")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and model inits")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    task = get_task_or_family(args.task)
    ckpt = None if args.checkpoint == "shipped" else args.checkpoint
    lopt = load_learned_optimizer(ckpt, device=args.device)
    t0 = time.time()
    calibrated, report = calibrate(lopt, task, args.lrs, args.weight_decays,
                                   args.steps, args.runs, args.eval_every, args.seed,
                                   args.device)  # fmt: skip
    report["checkpoint"] = args.checkpoint
    report["wall_s"] = time.time() - t0
    calibrated.extra = {**calibrated.extra, "calibration": report["best"]}
    out = Path(args.out)
    save_learned_optimizer(calibrated, out)
    (out / "calibration.json").write_text(json.dumps(report, indent=1))
    plot(report, out / "calibration.png")
    b = report["best"]
    tqdm.write(f"calibrated: lr x{b['lr']:g}, weight decay +{b['weight_decay']:g} "
               f"(best mean valid loss {b['score']:.4f} at step {b['best_step']}) -> {out}")
    return report


if __name__ == "__main__":
    main()
