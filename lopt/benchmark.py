"""Benchmark learned optimizers against tuned baselines: on the held-out suite, or on any tasks.

``python -m lopt.benchmark --suite heldout --out runs/heldout`` is the yardstick for every
learned optimizer here: the eleven tasks of :data:`lopt.suite.HELD_OUT_SUITE` (architectures
or data the shipped GMN's meta-training never saw: wider / deeper MLPs, a CNN with
BatchNorm, a ResNet, a ViT, a sequence transformer, an autoencoder, MNIST-1D, a tabular
classification and regression, a teacher-student regression). Protocol, per task:

* **tuned on validation, reported on test**: every tuned optimizer trains ``--tune-seeds``
  runs at every point of its grid; a run's score is the lowest point of its validation
  curve (the task's held-out 20 % of the train set, ``task.pool("valid")``, never trained
  on), a point's score the mean over the seeds, and the lowest score wins (ties: the first
  point). The winner is trained on ``--seeds`` seeds, whose *test* curves are reported;
* the optimizers: ``adam`` (lr over ``--adam-grid``), ``adamw`` (lr over ``--adam-grid`` x
  decoupled weight decay over ``--adamw-wds``), ``adam_default`` (Adam at torch's default lr
  1e-3, untuned), and per learned optimizer ``NAME=CHECKPOINT`` of ``--learned`` (default:
  the shipped GMN) ``NAME`` (lr multiplier 1, untuned) and ``NAME_tuned`` (multiplier over
  ``--learned-grid``); ``--sgdm-grid`` adds SGD-momentum (0.9);
* a run is a function of (optimizer, lr, weight decay, seed), so each distinct one is
  trained once: the tuning seeds are the first of the final seeds (a winner's first runs
  are its tuning runs, chosen on validation and reported on test), ``adam_default`` reuses
  Adam's lr-1e-3 runs and ``NAME_tuned`` the untuned runs when it picks multiplier 1.

Without ``--suite`` (``--suite none``: the protocol of the numbers in ``docs/lopt.md``) the
``--tasks`` are trained with Adam and SGD-momentum tuned on the *test* loss (and AdamW when
``--adamw-wds`` holds a non-zero decay), the learned optimizers at multiplier 1 only (unless
``--learned-grid`` has other values). ``--suite heldout`` changes the defaults of the
options (``python -m lopt.benchmark --suite heldout --help`` shows them); ``--tasks``
restricts the suite.

Outputs in ``--out``, rewritten after every task (a killed run keeps the finished tasks;
``--resume`` with the same options continues it, skipping them): ``benchmark.json`` (config,
every curve, the tuning scores, per-task summaries and, for a suite, the summary over tasks
under ``"suite"``: see :mod:`lopt.suite`), ``curves.png`` (seed-mean test loss against the
step) and, for a suite, ``heldout.md``. Summary per task and optimizer: best test loss
(mean and std over seeds of each run's minimum), final test loss, the first step at which
the seed-mean curve reaches tuned Adam's best seed-mean test loss and the seconds of
training to get there (step times measured in this run), the step speed-up
``adam_steps / steps`` and the wall-clock one (the same ratio of seconds), the
optimizer-step time relative to Adam's and the number of diverged runs.

Evaluating a new learned optimizer against the same baselines: ``--baselines-from
OLD/benchmark.json`` takes the tuning scores, chosen points and final runs of every baseline
from an earlier run of the same protocol (the options in :data:`PROTOCOL` must be equal, and
it must hold every baseline on every task; checked before any training) and trains only the
learned optimizers: about a sixth of the time on the held-out suite. Wall-clock speed-ups
then compare step times measured in two runs.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from common import cli
from common.errors import ConfigError
from common.persistence import (
    PersistenceError,
    prepare_output,
    read_json,
    write_figure,
    write_json,
    write_text,
)
from lopt.baselines import Curve, train_curve
from lopt.checkpoint import LearnedOptimizer, load_learned_optimizer
from lopt.suite import HELD_OUT_SUITE, markdown, summarize_suite
from tasks import TASKS, Task, get_task

__all__ = ["PROTOCOL", "BenchmarkConfig", "Contender", "HeldOutConfig", "benchmark_task",
           "contenders", "main", "reusable_baselines", "run", "summarize"]

IN_DISTRIBUTION = "digits_mlp32"
# the tasks of docs/lopt.md's tables: the default without --suite
DOCUMENTED_TASKS = [IN_DISTRIBUTION, "digits_mlp64", "digits_mlp_deep", "mnist1d_mlp",
                    "digits_cnn", "seq_transformer"]
SUITES = ("none", "heldout")
ADAM_DEFAULT_LR = 1e-3  # torch.optim.Adam's default
BASELINES = ("adam", "adam_default", "sgdm", "adamw")


def log_grid(lo: float, hi: float, n: int) -> list[float]:
    grid = torch.logspace(math.log10(lo), math.log10(hi), n, dtype=torch.float64)
    return [float(v) for v in grid]


def _learned_entries(items: list[str]) -> str | None:
    """What is wrong with ``--learned`` entries (each must be NAME=CHECKPOINT), or None."""
    names = []
    for item in items:
        name, sep, ckpt = item.partition("=")
        if not (sep and name and ckpt):
            return f"entries must be NAME=CHECKPOINT ({item!r} is not)"
        names.append(name)
    clash = sorted({n for n in names if names.count(n) > 1 or n in BASELINES})
    if clash:
        return f"needs names that are unique and not a baseline's {list(BASELINES)} ({clash})"
    return None


def _zero_or_positive(values: list[float]) -> str | None:
    if values == [0.0] or all(v > 0 for v in values):
        return None
    return "must be positive (or 0 alone: none)"


@dataclass
class BenchmarkConfig:
    """Options of ``python -m lopt.benchmark`` (each field is a ``--flag``)."""

    suite: str = cli.option("none", "'heldout': the held-out suite's tasks, protocol (tuned "
                            "on validation) and defaults (see --suite heldout --help); "
                            "'none': --tasks, baselines tuned on test", choices=SUITES)
    tasks: list[str] = cli.option(DOCUMENTED_TASKS, "tasks to train",
                                  choices=sorted(TASKS))
    steps: int = cli.option(2000, "inner steps per run", check=cli.positive)
    seeds: int = cli.option(5, "seeds per optimizer", check=cli.positive)
    tune_seeds: int = cli.option(5, "seeds per grid point when tuning",
                                 check=cli.positive)
    eval_every: int = cli.option(20, "steps between test (and for a suite validation) "
                                 "evaluations", check=cli.positive)
    adam_grid: list[float] = cli.option(sorted({*log_grid(1e-4, 3e-2, 10), 3.5e-3}),
                                        "Adam learning rates (10 log-spaced in 1e-4..3e-2, plus "
                                        "3.5e-3)", check=cli.positive)
    sgdm_grid: list[float] = cli.option(log_grid(1e-3, 3e-1, 10), "SGD-momentum learning rates "
                                        "(10 log-spaced in 1e-3..3e-1; 0 alone: no "
                                        "SGD-momentum)", check=_zero_or_positive)
    adamw_wds: list[float] = cli.option([0.0], "also tune AdamW over --adam-grid x these weight "
                                        "decays (0 alone: no AdamW)", check=cli.nonnegative)
    learned: list[str] = cli.option(["gmn=shipped"], "learned optimizers as NAME=CHECKPOINT "
                                    "(CHECKPOINT 'shipped' = the default shipped weights, "
                                    "'generalist' / 'digits' = those shipped weights, else a "
                                    "meta_train --out folder)",
                                    check=_learned_entries)
    learned_grid: list[float] = cli.option([1.0], "also run each learned optimizer as "
                                           "NAME_tuned, its lr multiplier tuned over these "
                                           "(1 alone: none)", check=cli.positive)
    baselines_from: str = cli.option("", "a previous benchmark.json of the same protocol: "
                                     "reuse its baselines' tuning and runs instead of "
                                     "training them again (learned optimizers still run)")
    out: str = cli.option("runs/lopt_benchmark", "output folder (refused when it holds files, "
                          "unless --overwrite or --resume)")
    overwrite: bool = cli.option(False, "replace what the benchmark writes in a non-empty --out")
    resume: bool = cli.option(False, "continue the run in --out (same options): skip the "
                              "tasks its benchmark.json holds")
    device: str = cli.option("cpu", "torch device")
    threads: int = cli.option(1, "torch CPU threads", check=cli.positive)

    # options a resumed run may change; every other one defines the run
    RUN_CONTROL = ("out", "overwrite", "resume", "device", "threads")

    def check(self) -> None:
        if self.steps < self.eval_every:
            raise ConfigError(f"--steps ({self.steps}) must be at least --eval-every "
                              f"({self.eval_every})")
        if self.resume and self.overwrite:
            raise ConfigError("--resume continues the run in --out and --overwrite replaces "
                              "it: pass one of them")


@dataclass
class HeldOutConfig(BenchmarkConfig):
    """``BenchmarkConfig`` with the held-out suite's defaults (``--suite heldout``).

    Sized for about an hour and a half on one CPU core with the shipped GMN (see
    docs/lopt.md): 500 steps, 5 seeds, 2 tuning seeds, Adam's lr over half decades
    3e-4..3e-2, AdamW's over the same times weight decays 0.01 / 0.1 / 1, learned lr
    multipliers 0.25..4 in octaves, no SGD-momentum.
    """

    suite: str = cli.option("heldout", "'heldout': the held-out suite's tasks, protocol "
                            "(tuned on validation) and defaults; 'none': --tasks, baselines "
                            "tuned on test (see --suite none --help)", choices=SUITES)
    tasks: list[str] = cli.option(HELD_OUT_SUITE, "tasks to train (the held-out suite, or "
                                  "some of it)", choices=sorted(TASKS))
    steps: int = cli.option(500, "inner steps per run", check=cli.positive)
    tune_seeds: int = cli.option(2, "seeds per grid point when tuning (the first of the "
                                 "--seeds)", check=cli.positive)
    adam_grid: list[float] = cli.option([3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
                                        "Adam and AdamW learning rates", check=cli.positive)
    sgdm_grid: list[float] = cli.option([0.0], "SGD-momentum learning rates (0 alone: no "
                                        "SGD-momentum)", check=_zero_or_positive)
    adamw_wds: list[float] = cli.option([0.01, 0.1, 1.0], "AdamW's decoupled weight decays "
                                        "(0 alone: no AdamW)", check=cli.nonnegative)
    learned_grid: list[float] = cli.option([0.25, 0.5, 1.0, 2.0, 4.0], "lr multipliers of "
                                           "NAME_tuned (1 alone: none)", check=cli.positive)
    out: str = cli.option("runs/heldout", "output folder (refused when it holds files, "
                          "unless --overwrite or --resume)")


OUTPUTS = ("benchmark.json", "curves.png", "heldout.md")


# ----------------------------------------------------------------------------- summaries
def _mean_curve(curves: list[Curve]) -> tuple[list[int], list[float]]:
    n = min(len(c.steps) for c in curves)
    steps = curves[0].steps[:n]
    return steps, [sum(c.test_loss[i] for c in curves) / len(curves) for i in range(n)]


def _first_reach(steps: list[int], losses: list[float], target: float) -> int | None:
    return next((s for s, v in zip(steps, losses) if v <= target), None)


def summarize(runs: dict[str, list[Curve]]) -> dict:
    """Per-optimizer summary of one task's runs (see the module docstring); ``runs["adam"]``
    (tuned Adam) is the reference."""
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
            "final_test_loss_mean": sum(c.test_loss[-1] for c in curves) / len(curves),
            "best_of_mean_curve": min(loss),
            "best_of_mean_curve_step": steps[loss.index(min(loss))],
            "steps_to_adam_best": reach,
            "seconds_to_adam_best": reach * per_step if reach is not None else None,
            "step_reduction_vs_adam": (adam_steps / reach) if reach else None,
            "wallclock_reduction_vs_adam": (adam_steps * adam_step_time / (reach * per_step))
            if reach else None,
            "train_step_time_ms": 1e3 * per_step,
            "optimizer_step_time_ms": 1e3 * opt_time,
            "optimizer_step_time_vs_adam": opt_time / adam_opt_time,
            "diverged_runs": sum(c.diverged for c in curves),
        }
    out["adam_target_loss"] = target
    return out


# ----------------------------------------------------------------------------- protocol
@dataclass(frozen=True)
class Contender:
    """One optimizer of the benchmark.

    Attributes:
        name: its name in the results (``adam``, ``gmn_tuned``, ...).
        kind: :func:`lopt.baselines.make_optimizer`'s kind.
        grid: the ``(lr, weight_decay)`` points it is tuned over; one point when untuned.
        tuned: whether the grid is searched (an untuned contender runs its one point).
        source: what makes two contenders' runs at the same point and seed the same run
            (the kind, or the learned optimizer's name).
        checkpoint: the learned optimizer, for ``kind="learned"``.
    """

    name: str
    kind: str
    grid: tuple[tuple[float, float], ...]
    tuned: bool
    source: str
    checkpoint: LearnedOptimizer | None = None


def contenders(cfg: BenchmarkConfig, learned: dict[str, LearnedOptimizer]) -> list[Contender]:
    """The optimizers ``cfg`` asks for, baselines first."""
    out = [Contender("adam", "adam", tuple((lr, 0.0) for lr in cfg.adam_grid), True, "adam")]
    if cfg.suite != "none":
        out.append(Contender("adam_default", "adam", ((ADAM_DEFAULT_LR, 0.0),), False, "adam"))
    if cfg.sgdm_grid != [0.0]:
        out.append(Contender("sgdm", "sgdm", tuple((lr, 0.0) for lr in cfg.sgdm_grid), True,
                             "sgdm"))
    if any(cfg.adamw_wds):
        out.append(Contender("adamw", "adamw", tuple(
            (lr, wd) for lr in cfg.adam_grid for wd in cfg.adamw_wds), True, "adamw"))
    for name, lopt in learned.items():
        out.append(Contender(name, "learned", ((1.0, 0.0),), False, name, lopt))
        if cfg.learned_grid != [1.0]:
            out.append(Contender(f"{name}_tuned", "learned", tuple(
                (m, 0.0) for m in cfg.learned_grid), True, name, lopt))
    return out


def planned_runs(entries: list[Contender], cfg: BenchmarkConfig) -> int:
    """Distinct runs per task (an upper bound: a winner may coincide with other runs)."""
    keys: set = set()
    extra = 0
    for c in entries:
        if c.tuned:
            keys |= {(c.source, p, s) for p in c.grid for s in range(cfg.tune_seeds)}
            extra += max(0, cfg.seeds - cfg.tune_seeds)
        else:
            keys |= {(c.source, c.grid[0], s) for s in range(cfg.seeds)}
    return len(keys) + extra


def _key(kind: str, point: tuple[float, float]) -> str:
    return f"{point[0]:.6g},wd={point[1]:g}" if kind == "adamw" else f"{point[0]:.6g}"


def benchmark_task(task: Task, entries: list[Contender], cfg: BenchmarkConfig,
                   bar: tqdm | None = None, reuse: dict | None = None) -> dict:
    """Tune and run every contender on ``task``: its ``results`` entry (summary, tuning
    scores, the chosen points and every final curve). A suite tunes on ``task.pool("valid")``,
    otherwise on the test loss. ``reuse``: this task's entry of an earlier run of the same
    protocol (:func:`reusable_baselines`), whose baselines are taken as they are."""
    reuse = reuse or {}
    on_valid = cfg.suite != "none"
    valid = task.pool("valid") if on_valid else None
    done: dict[tuple, Curve] = {}

    def curve(c: Contender, point: tuple[float, float], seed: int) -> Curve:
        key = (c.source, point, seed)
        if key not in done:
            done[key] = train_curve(task, c.kind, point[0], seed, cfg.steps, cfg.eval_every,
                                    checkpoint=c.checkpoint, device=cfg.device,
                                    weight_decay=point[1], valid_data=valid)
            if bar is not None:
                bar.update(1)
        return done[key]

    chosen, tuning, reused = {}, {}, {}
    for c in entries:
        chosen[c.name] = c.grid[0]
        if c.kind != "learned" and c.name in reuse.get("curves", {}):
            saved = reuse["curves"][c.name]
            chosen[c.name] = (saved["lr"], saved["weight_decay"])
            reused[c.name] = [Curve(**r) for r in saved["runs"]]
            if c.name in reuse.get("tuning", {}):
                tuning[c.name] = reuse["tuning"][c.name]
            continue
        if c.tuned:
            scores = {}
            for point in c.grid:
                runs = [curve(c, point, s) for s in range(cfg.tune_seeds)]
                scores[point] = sum(r.best_valid if on_valid else r.best for r in runs) / len(
                    runs)
            chosen[c.name] = min(scores, key=scores.get)
            tuning[c.name] = {_key(c.kind, p): v for p, v in scores.items()}
    runs = {c.name: reused.get(c.name) or [curve(c, chosen[c.name], s) for s in range(cfg.seeds)]
            for c in entries}
    curves = {}
    for c in entries:
        lrs = sorted({p[0] for p in c.grid})
        lr, wd = chosen[c.name]
        curves[c.name] = {"lr": lr, "weight_decay": wd, "tuned": c.tuned,
                          "lr_at_grid_edge": len(lrs) > 1 and lr in (lrs[0], lrs[-1]),
                          "runs": [asdict(r) for r in runs[c.name]]}
    return {"summary": summarize(runs), "tuned_on": "valid" if on_valid else "test",
            "tuning": tuning, "curves": curves}


# options that define the baselines' runs: a benchmark reusing another's must agree on them
PROTOCOL = ("suite", "steps", "seeds", "tune_seeds", "eval_every", "adam_grid", "sgdm_grid",
            "adamw_wds")


def reusable_baselines(cfg: BenchmarkConfig, entries: list[Contender]) -> dict:
    """``{task: results entry}`` of ``cfg.baselines_from`` ({} without it), checked to be
    the same protocol and to hold every baseline of ``entries`` on every task of ``cfg``.

    Raises:
        ConfigError: another protocol, or a task / baseline it lacks (before any training).
        PersistenceError: not a ``benchmark.json`` of ``python -m lopt.benchmark``.
    """
    if not cfg.baselines_from:
        return {}
    path = Path(cfg.baselines_from)
    saved = read_json(path, what="--baselines-from benchmark results")
    if not (isinstance(saved, dict) and isinstance(saved.get("config"), dict)
            and isinstance(saved.get("results"), dict)):
        raise PersistenceError(f"--baselines-from {path}: not written by python -m "
                               "lopt.benchmark")
    ours = asdict(cfg)
    differ = [f"--{k.replace('_', '-')} {ours[k]} (it has {saved['config'].get(k)})"
              for k in PROTOCOL if saved["config"].get(k) != ours[k]]
    if differ:
        raise ConfigError(f"--baselines-from {path} ran another protocol: {'; '.join(differ)}")
    wanted = [c.name for c in entries if c.kind != "learned"]
    missing = [f"{t}/{n}" for t in cfg.tasks for n in wanted
               if n not in saved["results"].get(t, {}).get("curves", {})]
    if missing:
        raise ConfigError(f"--baselines-from {path} lacks {', '.join(missing[:4])}"
                          + (f" (+{len(missing) - 4} more)" if len(missing) > 4 else ""))
    return saved["results"]


# ----------------------------------------------------------------------------- outputs
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


def _header(cfg: BenchmarkConfig, done: int) -> str:
    return (f"# Held-out suite: {done} of {len(cfg.tasks)} tasks\n\n"
            f"`python -m lopt.benchmark --suite {cfg.suite}`: {cfg.steps} steps, "
            f"{cfg.seeds} seeds; tuned on validation ({cfg.tune_seeds} seeds per point: Adam "
            f"lr {cfg.adam_grid}, AdamW weight decay {cfg.adamw_wds}, learned lr multiplier "
            f"{cfg.learned_grid}), reported on test; `adam_default` is Adam at lr "
            f"{ADAM_DEFAULT_LR:g}. Learned: {', '.join(cfg.learned)}.")


def write_results(out: Path, cfg: BenchmarkConfig, results: dict, wall_s: float) -> dict:
    """Write ``benchmark.json``, ``curves.png`` (and for a suite ``heldout.md``); returns the
    JSON payload."""
    payload = {"config": asdict(cfg), "results": results, "wall_s": wall_s}
    if cfg.suite != "none":
        payload["suite"] = summarize_suite(results)
        write_text(out / "heldout.md", markdown(payload["suite"], _header(cfg, len(results))))
    write_json(out / "benchmark.json", payload)
    plot(results, out / "curves.png")
    return payload


def _open_output(cfg: BenchmarkConfig) -> tuple[Path, dict, float]:
    """The output folder, the finished tasks' results and their wall time (``--resume``)."""
    path = Path(cfg.out) / "benchmark.json"
    if not (cfg.resume and path.is_file()):
        return prepare_output(cfg.out, overwrite=cfg.overwrite, writes=OUTPUTS), {}, 0.0
    saved = read_json(path, what="benchmark results")
    if not (isinstance(saved, dict) and isinstance(saved.get("config"), dict)
            and isinstance(saved.get("results"), dict)):
        raise PersistenceError(f"{path}: not written by python -m lopt.benchmark")
    ours = asdict(cfg)
    differ = [f"--{k.replace('_', '-')} {ours[k]} (the run has {saved['config'].get(k)})"
              for k in ours if k not in cfg.RUN_CONTROL and saved["config"].get(k) != ours[k]]
    if differ:
        raise ConfigError(f"--resume {cfg.out}: {'; '.join(differ)}; give the run's options "
                          "or start a new --out")
    return Path(cfg.out), saved["results"], float(saved.get("wall_s", 0.0))


def run(cfg: BenchmarkConfig) -> dict:
    """Tune and train every optimizer on every task (see the module docstring); the tasks,
    the learned optimizers' checkpoints and the output folder are checked before any
    training. Returns the per-task results."""
    torch.set_num_threads(cfg.threads)
    tasks = {name: get_task(name) for name in cfg.tasks}
    if cfg.suite != "none":
        for name, task in tasks.items():
            if getattr(task, "valid_fraction", 0.0) <= 0.0:
                raise ConfigError(f"--tasks {name} holds out no validation examples; a suite "
                                  "tunes on them")
    learned = dict(item.split("=", 1) for item in cfg.learned)
    loaded = {name: load_learned_optimizer(ckpt)
              for name, ckpt in learned.items()}
    entries = contenders(cfg, loaded)
    reuse = reusable_baselines(cfg, entries)
    out, results, wall_before = _open_output(cfg)
    todo = [name for name in cfg.tasks if name not in results]
    per_task = planned_runs([c for c in entries if c.kind == "learned" or not reuse], cfg)
    bar = tqdm(total=per_task * len(todo), desc="benchmark")
    t_start = time.time()
    for i, name in enumerate(todo):
        results[name] = benchmark_task(tasks[name], entries, cfg, bar, reuse.get(name))
        bar.total = bar.n + per_task * (len(todo) - i - 1)  # winners may reuse runs
        bar.refresh()
        write_results(out, cfg, results, wall_before + time.time() - t_start)
        s = results[name]["summary"]
        tqdm.write(f"{name}: " + "; ".join(
            f"{k} best {v['best_test_loss_mean']:.4f} reach {v['steps_to_adam_best']} "
            f"x{v['step_reduction_vs_adam'] or 0:.2f} "
            f"t/step x{v['optimizer_step_time_vs_adam']:.1f}"
            for k, v in s.items() if isinstance(v, dict)))
    bar.close()
    if not todo and results:  # nothing left to run: refresh the files all the same
        write_results(out, cfg, results, wall_before)
    return results


def _config_class(argv: list[str] | None) -> type[BenchmarkConfig]:
    """:class:`HeldOutConfig` when the command line asks for ``--suite heldout``."""
    peek = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    peek.add_argument("--suite")
    known, _ = peek.parse_known_args(sys.argv[1:] if argv is None else argv)
    return HeldOutConfig if known.suite == "heldout" else BenchmarkConfig


def main(argv: list[str] | None = None) -> dict:
    return cli.run(_config_class(argv), run, argv, prog="python -m lopt.benchmark",
                   doc=__doc__)


if __name__ == "__main__":
    main()
