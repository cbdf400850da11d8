"""``python -m lopt.demo``: the shipped learned optimizers beside tuned Adam, on the reference
task and on a task of the held-out suite.

Trains every ``--tasks`` model from the same initialisation and on the same batches with
``GMNOptimizer`` under each ``--learned`` checkpoint (by default the two shipped ones:
``generalist``, the default, and ``digits``, the digits-MLP specialist) and with Adam at that
task's tuned learning rate (``--adam-lrs``); prints the test losses and writes
``curves.png`` (one panel per task) and ``demo.json`` to ``--out``.

The default tasks are the reference task ``digits_mlp32`` (MLP 64-32-10 on 8x8 digits, Adam's
lr 3.5e-3 tuned on an 11-point grid) and ``digits_cnn`` (a CNN with BatchNorm, in the held-out
suite of :mod:`lopt.suite`: no optimizer shipped here was meta-trained on it; Adam's lr 0.01
tuned on validation by ``python -m lopt.benchmark --suite heldout``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from common import cli
from common.errors import ConfigError
from common.persistence import prepare_output, write_figure, write_json
from lopt.baselines import train_curve
from lopt.checkpoint import load_learned_optimizer
from tasks import TASKS, get_task


@dataclass
class DemoConfig:
    """Options of ``python -m lopt.demo`` (each field is a ``--flag``)."""

    tasks: list[str] = cli.option(["digits_mlp32", "digits_cnn"], "task names",
                                  choices=sorted(TASKS))
    adam_lrs: list[float] = cli.option([3.5e-3, 1e-2], "Adam's (tuned) lr, one per task")
    learned: list[str] = cli.option(["generalist", "digits"], "learned optimizers: shipped "
                                    "names ('generalist', 'digits', 'shipped' = the default) "
                                    "or folders written by lopt.meta_train / lopt.calibrate")
    steps: int = cli.option(600, "training steps", check=cli.positive)
    seed: int = cli.option(0, "model-init and data seed")
    out: str = cli.option("runs/lopt_demo", "output folder (re-running replaces the demo's own "
                          "files; a folder holding anything else is refused)")
    eval_every: int = cli.option(20, "steps between test evaluations", check=cli.positive)

    def check(self) -> None:
        if self.steps < self.eval_every:
            raise ConfigError(f"--steps ({self.steps}) must be at least --eval-every "
                              f"({self.eval_every})")
        if len(self.adam_lrs) != len(self.tasks):
            raise ConfigError(f"--adam-lrs needs one lr per task: {len(self.tasks)} tasks, "
                              f"{len(self.adam_lrs)} lrs")
        if any(not lr > 0 for lr in self.adam_lrs):
            raise ConfigError(f"--adam-lrs must be positive, got {self.adam_lrs}")
        if not self.tasks:
            raise ConfigError("--tasks needs at least one task")


def run(cfg: DemoConfig) -> dict:
    """Train each task's model with every learned optimizer and with Adam; table and figure."""
    torch.set_num_threads(1)  # tiny models: more threads only add overhead on a shared CPU
    learned = {name: load_learned_optimizer(name) for name in cfg.learned}
    out = prepare_output(cfg.out, writes=["demo.json", "curves.png"], rerun=True)
    curves: dict[str, dict] = {}
    summary: dict[str, dict] = {}
    for task_name, adam_lr in zip(cfg.tasks, cfg.adam_lrs, strict=True):
        task = get_task(task_name)
        runs = {f"GMNOptimizer ({name})": train_curve(task, "learned", 1.0, cfg.seed, cfg.steps,
                                                       cfg.eval_every, checkpoint=lopt)
                for name, lopt in learned.items()}
        runs[f"Adam (lr {adam_lr:g})"] = train_curve(task, "adam", adam_lr, cfg.seed,
                                                      cfg.steps, cfg.eval_every)
        print(f"{task_name}:")
        summary[task_name] = {}
        for name, c in runs.items():
            best_step = c.steps[c.test_loss.index(c.best)]
            summary[task_name][name] = {
                "final_test_loss": c.test_loss[-1], "best_test_loss": c.best,
                "best_step": best_step, "optimizer_step_ms": 1e3 * c.step_time_s}
            print(f"  {name:>26}: final test loss {c.test_loss[-1]:.4f}, best {c.best:.4f} "
                  f"(step {best_step}), optimizer step {1e3 * c.step_time_s:.2f} ms")
        curves[task_name] = {k: {"steps": c.steps, "test_loss": c.test_loss}
                             for k, c in runs.items()}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cfg.tasks), figsize=(5.5 * len(cfg.tasks), 3.8),
                             squeeze=False)
    for ax, (task_name, runs) in zip(axes[0], curves.items(), strict=True):
        for name, c in runs.items():
            ax.plot(c["steps"], c["test_loss"], label=name)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("test loss")
        ax.set_title(task_name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure(fig, out / "curves.png")
    payload = {"config": asdict(cfg), "summary": summary, "curves": curves}
    write_json(out / "demo.json", payload)
    print(f"figure: {out / 'curves.png'}")
    return payload


def main(argv: list[str] | None = None) -> dict:
    return cli.run(DemoConfig, run, argv, prog="python -m lopt.demo", doc=__doc__)


if __name__ == "__main__":
    main()
