"""Benchmark learned optimizers against LR-tuned Adam and SGD-momentum.

``python -m lopt.benchmark --out runs/lopt_benchmark`` trains every task with

* Adam and SGD-momentum (0.9), each at every learning rate of a log grid; the rate with the
  lowest mean (over ``--tune-seeds``) best test loss is kept and re-run on all ``--seeds``;
* optionally (``--adamw-wds``) AdamW tuned over the Adam learning-rate grid times those
  decoupled weight decays: not one of the targets' baselines, but the fair comparison for a
  learned optimizer whose rule includes a (meta-learned) weight decay;
* every learned optimizer of ``--learned NAME=CHECKPOINT`` (default: the shipped GMN), at
  its learning-rate multiplier 1 (no tuning),

and writes ``benchmark.json`` (all curves and the summary) and ``curves.png`` (mean test loss
against the step). Summary per task and optimizer: best test loss (mean over seeds of each
run's minimum), the first step at which the seed-mean curve reaches tuned Adam's best
seed-mean test loss, the step-reduction factor ``adam_steps / steps``, the wall-clock
equivalent (the same ratio of the time to get there, step times measured in this run) and the
optimizer-step time relative to Adam's.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from common import cli
from common.errors import ConfigError
from common.persistence import prepare_output, write_figure, write_json
from lopt.baselines import Curve, train_curve
from lopt.checkpoint import load_learned_optimizer
from tasks import TASKS, get_task

__all__ = ["BenchmarkConfig", "main", "run", "summarize"]

IN_DISTRIBUTION = "digits_mlp32"
HELD_OUT = ["digits_mlp64", "digits_mlp_deep", "mnist1d_mlp", "digits_cnn", "seq_transformer"]


def log_grid(lo: float, hi: float, n: int) -> list[float]:
    grid = torch.logspace(math.log10(lo), math.log10(hi), n, dtype=torch.float64)
    return [float(v) for v in grid]


def _learned_entries(items: list[str]) -> str | None:
    """What is wrong with ``--learned`` entries (each must be NAME=CHECKPOINT), or None."""
    for item in items:
        name, sep, ckpt = item.partition("=")
        if not (sep and name and ckpt):
            return f"entries must be NAME=CHECKPOINT ({item!r} is not)"
    return None


@dataclass
class BenchmarkConfig:
    """Options of ``python -m lopt.benchmark`` (each field is a ``--flag``)."""

    tasks: list[str] = cli.option([IN_DISTRIBUTION, *HELD_OUT], "tasks to train",
                                  choices=sorted(TASKS))
    steps: int = cli.option(2000, "inner steps per run", check=cli.positive)
    seeds: int = cli.option(5, "seeds per optimizer", check=cli.positive)
    tune_seeds: int = cli.option(5, "seeds per grid point when tuning baselines",
                                 check=cli.positive)
    eval_every: int = cli.option(20, "steps between test evaluations", check=cli.positive)
    adam_grid: list[float] = cli.option(sorted({*log_grid(1e-4, 3e-2, 10), 3.5e-3}),
                                        "Adam learning rates (10 log-spaced in 1e-4..3e-2, plus "
                                        "3.5e-3)", check=cli.positive)
    sgdm_grid: list[float] = cli.option(log_grid(1e-3, 3e-1, 10), "SGD-momentum learning rates "
                                        "(10 log-spaced in 1e-3..3e-1)", check=cli.positive)
    adamw_wds: list[float] = cli.option([0.0], "also tune AdamW over --adam-grid x these weight "
                                        "decays (0 alone: no AdamW)", check=cli.nonnegative)
    learned: list[str] = cli.option(["gmn=shipped"], "learned optimizers as NAME=CHECKPOINT "
                                    "(CHECKPOINT 'shipped' = the shipped weights, else a "
                                    "meta_train --out folder)",
                                    check=_learned_entries)
    out: str = cli.option("runs/lopt_benchmark", "output folder (refused when it holds files, "
                          "unless --overwrite)")
    overwrite: bool = cli.option(False, "replace what the benchmark writes in a non-empty --out")
    device: str = cli.option("cpu", "torch device")
    threads: int = cli.option(1, "torch CPU threads", check=cli.positive)

    def check(self) -> None:
        if self.steps < self.eval_every:
            raise ConfigError(f"--steps ({self.steps}) must be at least --eval-every "
                              f"({self.eval_every})")


OUTPUTS = ("benchmark.json", "curves.png")


def _mean_curve(curves: list[Curve]) -> tuple[list[int], list[float]]:
    n = min(len(c.steps) for c in curves)
    steps = curves[0].steps[:n]
    return steps, [sum(c.test_loss[i] for c in curves) / len(curves) for i in range(n)]


def _first_reach(steps: list[int], losses: list[float], target: float) -> int | None:
    return next((s for s, v in zip(steps, losses) if v <= target), None)


def summarize(runs: dict[str, list[Curve]]) -> dict:
    """Per-optimizer summary of one task's runs (see the module docstring)."""
    mean_curves = {k: _mean_curve(v) for k, v in runs.items()}
    a_steps, a_loss = mean_curves["adam"]
    target = min(a_loss)
    adam_steps = _first_reach(a_steps, a_loss, target)
    adam_step_time = sum(c.total_time_s / max(1, c.steps[-1]) for c in runs["adam"]) / len(
        runs["adam"]
    )
    adam_opt_time = sum(c.step_time_s for c in runs["adam"]) / len(runs["adam"])
    out = {}
    for name, curves in runs.items():
        steps, loss = mean_curves[name]
        reach = _first_reach(steps, loss, target)
        per_step = sum(c.total_time_s / max(1, c.steps[-1]) for c in curves) / len(curves)
        opt_time = sum(c.step_time_s for c in curves) / len(curves)
        best = [c.best for c in curves]
        out[name] = {
            "best_test_loss_mean": sum(best) / len(best),
            "best_test_loss_std": float(torch.tensor(best).std()) if len(best) > 1 else 0.0,
            "best_of_mean_curve": min(loss),
            "best_of_mean_curve_step": steps[loss.index(min(loss))],
            "steps_to_adam_best": reach,
            "step_reduction_vs_adam": (adam_steps / reach) if reach else None,
            "wallclock_reduction_vs_adam": (adam_steps * adam_step_time / (reach * per_step))
            if reach else None,
            "train_step_time_ms": 1e3 * per_step,
            "optimizer_step_time_ms": 1e3 * opt_time,
            "optimizer_step_time_vs_adam": opt_time / adam_opt_time,
        }
    out["adam_target_loss"] = target
    return out


def tune(task, kind: str, grid: list[tuple[float, float]], cfg,
         bar) -> tuple[tuple[float, float], dict[tuple[float, float], float]]:
    """The grid point ``(lr, weight_decay)`` with the lowest mean best test loss over the
    tuning seeds, and every point's score."""
    scores = {}
    for point in grid:
        lr, wd = point
        bests = []
        for seed in range(cfg.tune_seeds):
            bests.append(train_curve(task, kind, lr, seed, cfg.steps, cfg.eval_every,
                                     device=cfg.device, weight_decay=wd).best)
            bar.update(1)
        scores[point] = sum(bests) / len(bests)
    return min(scores, key=scores.get), scores


def _key(kind: str, point: tuple[float, float]) -> str:
    return f"{point[0]:.6g},wd={point[1]:g}" if kind == "adamw" else f"{point[0]:.6g}"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results)
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for name, r in results[task]["curves"].items():
            steps, loss = _mean_curve([Curve(**c) for c in r["runs"]])
            wd = f", wd {r['weight_decay']:g}" if r.get("weight_decay") else ""
            ax.plot(steps, loss, label=f"{name} (lr {r['lr']:.3g}{wd})")
        ax.axhline(results[task]["summary"]["adam_target_loss"], color="k", lw=0.6, ls=":")
        ax.set_yscale("log")
        ax.set_title(task)
        ax.set_xlabel("step")
        ax.set_ylabel("test loss (mean over seeds)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    write_figure(fig, path)


def run(cfg: BenchmarkConfig) -> dict:
    """Tune the baselines and train every optimizer on every task; the learned optimizers'
    checkpoints and the output folder are checked before any training."""
    torch.set_num_threads(cfg.threads)
    learned = dict(item.split("=", 1) for item in cfg.learned)
    loaded = {name: load_learned_optimizer(None if ckpt == "shipped" else ckpt)
              for name, ckpt in learned.items()}
    out = prepare_output(cfg.out, overwrite=cfg.overwrite, writes=OUTPUTS)
    baselines = [("adam", [(lr, 0.0) for lr in cfg.adam_grid]),
                 ("sgdm", [(lr, 0.0) for lr in cfg.sgdm_grid])]
    if any(cfg.adamw_wds):
        baselines.append(("adamw", [(lr, wd) for lr in cfg.adam_grid for wd in cfg.adamw_wds]))
    total = len(cfg.tasks) * (sum(len(g) for _, g in baselines) * cfg.tune_seeds
                              + (len(baselines) + len(learned)) * cfg.seeds)
    bar = tqdm(total=total, desc="benchmark")
    results: dict = {}
    t_start = time.time()
    for name in cfg.tasks:
        task = get_task(name)
        runs: dict[str, list[Curve]] = {}
        lrs, grids = {}, {}
        wds = {}
        for kind, grid in baselines:
            (lrs[kind], wds[kind]), grids[kind] = tune(task, kind, grid, cfg, bar)
        for kind, _ in baselines:
            runs[kind] = []
            for seed in range(cfg.seeds):
                runs[kind].append(train_curve(task, kind, lrs[kind], seed, cfg.steps,
                                              cfg.eval_every, device=cfg.device,
                                              weight_decay=wds[kind]))
                bar.update(1)
        for lname, lopt in loaded.items():
            lrs[lname] = 1.0
            runs[lname] = []
            for seed in range(cfg.seeds):
                runs[lname].append(train_curve(task, "learned", 1.0, seed, cfg.steps,
                                               cfg.eval_every, checkpoint=lopt,
                                               device=cfg.device))
                bar.update(1)
        results[name] = {
            "summary": summarize(runs),
            "tuning": {k: {_key(k, p): s for p, s in g.items()} for k, g in grids.items()},
            "curves": {k: {"lr": lrs[k], "weight_decay": wds.get(k, 0.0),
                           "runs": [asdict(c) for c in v]} for k, v in runs.items()},
        }
        payload = {"config": asdict(cfg), "results": results, "wall_s": time.time() - t_start}
        write_json(out / "benchmark.json", payload)
        plot(results, out / "curves.png")
        s = results[name]["summary"]
        tqdm.write(f"{name}: " + "; ".join(
            f"{k} best {v['best_test_loss_mean']:.4f} reach {v['steps_to_adam_best']} "
            f"x{v['step_reduction_vs_adam'] or 0:.2f} "
            f"t/step x{v['optimizer_step_time_vs_adam']:.1f}"
            for k, v in s.items() if isinstance(v, dict)))
    bar.close()
    return results


def main(argv: list[str] | None = None) -> dict:
    return cli.run(BenchmarkConfig, run, argv, prog="python -m lopt.benchmark", doc=__doc__)


if __name__ == "__main__":
    main()
