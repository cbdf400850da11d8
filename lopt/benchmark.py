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

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from lopt.baselines import Curve, train_curve
from tasks import get_task

__all__ = ["main", "summarize"]

IN_DISTRIBUTION = "digits_mlp32"
HELD_OUT = ["digits_mlp64", "digits_mlp_deep", "mnist1d_mlp", "digits_cnn", "seq_transformer"]


def log_grid(lo: float, hi: float, n: int) -> list[float]:
    grid = torch.logspace(math.log10(lo), math.log10(hi), n, dtype=torch.float64)
    return [float(v) for v in grid]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lopt.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--tasks", nargs="+", default=[IN_DISTRIBUTION, *HELD_OUT],
                   help="tasks to train (default: digits_mlp32 and the held-out tasks)")
    p.add_argument("--steps", type=int, default=2000, help="inner steps per run (default 2000)")
    p.add_argument("--seeds", type=int, default=5, help="seeds per optimizer (default 5)")
    p.add_argument("--tune-seeds", type=int, default=5,
                   help="seeds per grid point when tuning baselines (default 5)")
    p.add_argument("--eval-every", type=int, default=20, help="steps between test evaluations")
    p.add_argument("--adam-grid", type=float, nargs="+",
                   default=sorted({*log_grid(1e-4, 3e-2, 10), 3.5e-3}),
                   help="Adam learning rates (default: 10 log-spaced in 1e-4..3e-2, plus 3.5e-3)")
    p.add_argument("--sgdm-grid", type=float, nargs="+", default=log_grid(1e-3, 3e-1, 10),
                   help="SGD-momentum learning rates (default: 10 log-spaced in 1e-3..3e-1)")
    p.add_argument("--adamw-wds", type=float, nargs="*", default=[],
                   help="also tune AdamW over --adam-grid x these weight decays (default: none)")
    p.add_argument("--learned", nargs="*", default=["gmn=shipped"],
                   help="learned optimizers as NAME=CHECKPOINT (CHECKPOINT 'shipped' = the "
                        "shipped weights, else a meta_train --out folder); default gmn=shipped")
    p.add_argument("--out", default="runs/lopt_benchmark", help="output folder")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    return p


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


def tune(task, kind: str, grid: list[tuple[float, float]], args,
         bar) -> tuple[tuple[float, float], dict[tuple[float, float], float]]:  # fmt: skip
    """The grid point ``(lr, weight_decay)`` with the lowest mean best test loss over the
    tuning seeds, and every point's score."""
    scores = {}
    for point in grid:
        lr, wd = point
        bests = []
        for seed in range(args.tune_seeds):
            bests.append(train_curve(task, kind, lr, seed, args.steps, args.eval_every,
                                     device=args.device, weight_decay=wd).best)  # fmt: skip
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
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    learned = dict(item.split("=", 1) for item in args.learned)
    baselines = [("adam", [(lr, 0.0) for lr in args.adam_grid]),
                 ("sgdm", [(lr, 0.0) for lr in args.sgdm_grid])]  # fmt: skip
    if args.adamw_wds:
        baselines.append(("adamw", [(lr, wd) for lr in args.adam_grid for wd in args.adamw_wds]))
    total = len(args.tasks) * (sum(len(g) for _, g in baselines) * args.tune_seeds
                               + (len(baselines) + len(learned)) * args.seeds)  # fmt: skip
    bar = tqdm(total=total, desc="benchmark")
    results: dict = {}
    t_start = time.time()
    for name in args.tasks:
        task = get_task(name)
        runs: dict[str, list[Curve]] = {}
        lrs, grids = {}, {}
        wds = {}
        for kind, grid in baselines:
            (lrs[kind], wds[kind]), grids[kind] = tune(task, kind, grid, args, bar)
        for kind, _ in baselines:
            runs[kind] = []
            for seed in range(args.seeds):
                runs[kind].append(train_curve(task, kind, lrs[kind], seed, args.steps,
                                              args.eval_every, device=args.device,
                                              weight_decay=wds[kind]))  # fmt: skip
                bar.update(1)
        for lname, ckpt in learned.items():
            lrs[lname] = 1.0
            runs[lname] = []
            for seed in range(args.seeds):
                runs[lname].append(train_curve(
                    task, "learned", 1.0, seed, args.steps, args.eval_every,
                    checkpoint=None if ckpt == "shipped" else ckpt, device=args.device))
                bar.update(1)
        results[name] = {
            "summary": summarize(runs),
            "tuning": {k: {_key(k, p): s for p, s in g.items()} for k, g in grids.items()},
            "curves": {k: {"lr": lrs[k], "weight_decay": wds.get(k, 0.0),
                           "runs": [asdict(c) for c in v]} for k, v in runs.items()},
        }
        payload = {"config": vars(args), "results": results, "wall_s": time.time() - t_start}
        (out / "benchmark.json").write_text(json.dumps(payload, indent=1))
        plot(results, out / "curves.png")
        s = results[name]["summary"]
        tqdm.write(f"{name}: " + "; ".join(
            f"{k} best {v['best_test_loss_mean']:.4f} reach {v['steps_to_adam_best']} "
            f"x{v['step_reduction_vs_adam'] or 0:.2f} "
            f"t/step x{v['optimizer_step_time_vs_adam']:.1f}"
            for k, v in s.items() if isinstance(v, dict)))  # fmt: skip
    bar.close()
    return results


if __name__ == "__main__":
    main()
