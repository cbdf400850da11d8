"""The held-out suite: the tasks every learned optimizer here is measured on, and the summary
over them.

``python -m lopt.benchmark --suite heldout`` trains every task of :data:`HELD_OUT_SUITE`
with the protocol of :mod:`lopt.benchmark` (baselines and learned lr multipliers tuned on
validation data, reported on test). :func:`summarize_suite` condenses its per-task summaries
and adds, per optimizer, over the tasks:

* the interquartile mean (:func:`iqm`) of the step speed-ups and of the wall-clock speed-ups
  to tuned Adam's best test loss (a task whose seed-mean curve never gets there counts 0);
* the number of tasks where its seed-mean curve reaches tuned Adam's best;
* the number of tasks where its best (mean over seeds of each run's minimum) and where its
  final test loss is worse than :data:`WORSE_FACTOR` x tuned Adam's;
* the number of diverged runs (a non-finite test loss).

:func:`markdown` writes the same as tables (``heldout.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["HELD_OUT_SUITE", "WORSE_FACTOR", "iqm", "markdown", "summarize_suite"]

HELD_OUT_SUITE: list[str] = [
    "digits_mlp64",        # wider MLP than meta-training's
    "digits_mlp_deep",     # deeper MLP (3 hidden layers)
    "digits_cnn",          # convolutions + BatchNorm
    "digits_resnet",       # residual convolutions
    "digits_vit",          # attention on image patches
    "seq_transformer",     # attention on tokens, another dataset
    "digits_autoencoder",  # a bottleneck and a regression (MSE) loss
    "mnist1d_mlp",         # another dataset
    "breast_cancer_mlp",   # tabular classification
    "diabetes_mlp",        # tabular regression
    "teacher_student",     # synthetic regression onto a random teacher
]
"""Tasks (``tasks.TASKS`` names) whose architecture or data neither shipped optimizer's
meta-training saw: ``digits`` (``digits_small_mlp_family``: MLPs of width 16 / 32, depth 1 / 2
on the digits) nor ``generalist`` (``generalist_mix``; ``tests/lopt/test_suite.py`` checks
that the two are disjoint)."""

WORSE_FACTOR = 1.1


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the sorted values without the lowest and the highest
    ``floor(n / 4)`` (``scipy.stats.trim_mean(values, 0.25)``, as rliable's IQM)."""
    if not values:
        raise ValueError("the IQM of no values is undefined")
    ordered = sorted(values)
    cut = len(ordered) // 4
    middle = ordered[cut:len(ordered) - cut]
    return sum(middle) / len(middle)


def _task_rows(result: dict) -> dict[str, dict]:
    """One task's per-optimizer summary, with the chosen lr / weight decay, condensed."""
    rows = {}
    for name, s in result["summary"].items():
        if not isinstance(s, dict):
            continue
        curves = result["curves"][name]
        rows[name] = {
            "lr": curves["lr"],
            "weight_decay": curves["weight_decay"],
            "tuned": curves.get("tuned", True),
            "lr_at_grid_edge": curves.get("lr_at_grid_edge", False),
            "best_test_loss_mean": s["best_test_loss_mean"],
            "best_test_loss_std": s["best_test_loss_std"],
            "final_test_loss_mean": s["final_test_loss_mean"],
            "steps_to_adam_best": s["steps_to_adam_best"],
            "seconds_to_adam_best": s["seconds_to_adam_best"],
            "step_speedup": s["step_reduction_vs_adam"],
            "wallclock_speedup": s["wallclock_reduction_vs_adam"],
            "diverged_runs": s["diverged_runs"],
        }
    return rows


def summarize_suite(results: dict) -> dict:
    """The suite summary of :func:`lopt.benchmark.run`'s per-task ``results``.

    Returns:
        ``{"tasks": [...], "worse_factor": 1.1, "per_task": {task: {optimizer: row}},
        "over_tasks": {optimizer: {"tasks", "iqm_step_speedup", "iqm_wallclock_speedup",
        "tasks_reaching_adam_best", "tasks_best_worse", "tasks_final_worse",
        "diverged_runs"}}}``; a speed-up is ``None`` in a row and 0 in the IQM when the
        optimizer never reaches tuned Adam's best on that task.
    """
    per_task = {task: _task_rows(result) for task, result in results.items()}
    names: list[str] = []
    for rows in per_task.values():
        names += [n for n in rows if n not in names]
    over = {}
    for name in names:
        rows = [(t[name], t["adam"]) for t in per_task.values() if name in t]
        over[name] = {
            "tasks": len(rows),
            "iqm_step_speedup": iqm([r["step_speedup"] or 0.0 for r, _ in rows]),
            "iqm_wallclock_speedup": iqm([r["wallclock_speedup"] or 0.0 for r, _ in rows]),
            "tasks_reaching_adam_best": sum(r["steps_to_adam_best"] is not None
                                            for r, _ in rows),
            "tasks_best_worse": sum(r["best_test_loss_mean"]
                                    > WORSE_FACTOR * a["best_test_loss_mean"] for r, a in rows),
            "tasks_final_worse": sum(r["final_test_loss_mean"]
                                     > WORSE_FACTOR * a["final_test_loss_mean"]
                                     for r, a in rows),
            "diverged_runs": sum(r["diverged_runs"] for r, _ in rows),
        }
    return {"tasks": list(per_task), "worse_factor": WORSE_FACTOR, "per_task": per_task,
            "over_tasks": over}


def _speedup(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}x"


def _setting(row: dict) -> str:
    wd = f", wd {row['weight_decay']:g}" if row["weight_decay"] else ""
    edge = " (grid edge)" if row["tuned"] and row["lr_at_grid_edge"] else ""
    return f"lr {row['lr']:.3g}{wd}{edge}"


def markdown(suite: dict, header: str = "") -> str:
    """``heldout.md``: one row per task (best test loss and speed-ups per optimizer), the
    over-task rows, then every task's details."""
    over = suite["over_tasks"]
    names = list(over)
    n = len(suite["tasks"])
    line = "| " + " | ".join(["task", *names]) + " |"
    out = [header, "", "Cell: best test loss (mean over seeds of each run's minimum); step / "
           "wall-clock speed-up to tuned Adam's best test loss (seed-mean curves; 'never' = "
           "not reached, counted 0 in the IQM).", "", line,
           "|" + "---|" * (len(names) + 1)]
    for task, rows in suite["per_task"].items():
        cells = []
        for name in names:
            r = rows.get(name)
            cells.append("–" if r is None else (
                f"{r['best_test_loss_mean']:.4g} ({_speedup(r['step_speedup'])} / "
                f"{_speedup(r['wallclock_speedup'])})"))
        out.append("| " + " | ".join([task, *cells]) + " |")
    factor = suite["worse_factor"]
    for label, key, fmt in [
        ("**IQM step speed-up**", "iqm_step_speedup", "{:.2f}x"),
        ("**IQM wall-clock speed-up**", "iqm_wallclock_speedup", "{:.2f}x"),
        ("**tasks reaching Adam's best**", "tasks_reaching_adam_best", "{}/" + str(n)),
        (f"**tasks best > {factor:g}x Adam's**", "tasks_best_worse", "{}/" + str(n)),
        (f"**tasks final > {factor:g}x Adam's**", "tasks_final_worse", "{}/" + str(n)),
        ("**diverged runs**", "diverged_runs", "{}"),
    ]:
        out.append("| " + " | ".join([label, *(fmt.format(over[k][key]) for k in names)])
                   + " |")
    out += ["", "## Per task", "", "| task | optimizer | setting | best test loss | final test "
            "loss | steps to Adam's best | seconds to Adam's best | step speed-up | wall-clock "
            "speed-up | diverged runs |", "|" + "---|" * 10]
    for task, rows in suite["per_task"].items():
        for name, r in rows.items():
            seconds = r["seconds_to_adam_best"]
            out.append(
                f"| {task} | {name} | {_setting(r)} | {r['best_test_loss_mean']:.4g} ± "
                f"{r['best_test_loss_std']:.2g} | {r['final_test_loss_mean']:.4g} | "
                f"{r['steps_to_adam_best'] if r['steps_to_adam_best'] is not None else 'never'}"
                f" | {'never' if seconds is None else f'{seconds:.2f}'} | "
                f"{_speedup(r['step_speedup'])} | {_speedup(r['wallclock_speedup'])} | "
                f"{r['diverged_runs']} |")
    return "\n".join(out) + "\n"
