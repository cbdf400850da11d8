"""``python -m lopt.demo``: the shipped GMN optimizer beside Adam on the reference task.

Trains ``digits_mlp32`` (MLP 64-32-10 on 8x8 digits) once with ``GMNOptimizer`` (shipped
meta-trained weights) and once with Adam at its tuned learning rate 3.5e-3, from the same
initialisation and on the same batches; prints both test losses and writes
``curves.png`` and ``demo.json`` to ``--out``.
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

    task: str = cli.option("digits_mlp32", "task name", choices=sorted(TASKS))
    steps: int = cli.option(1000, "training steps", check=cli.positive)
    seed: int = cli.option(0, "model-init and data seed")
    adam_lr: float = cli.option(3.5e-3, "Adam lr", check=cli.positive)
    checkpoint: str = cli.option("shipped", "learned-optimizer folder from meta_train, or "
                                 "'shipped' (the shipped weights)")
    out: str = cli.option("runs/lopt_demo", "output folder (re-running replaces the demo's own "
                          "files; a folder holding anything else is refused)")
    eval_every: int = cli.option(20, "steps between test evaluations", check=cli.positive)

    def check(self) -> None:
        if self.steps < self.eval_every:
            raise ConfigError(f"--steps ({self.steps}) must be at least --eval-every "
                              f"({self.eval_every})")


def run(cfg: DemoConfig) -> dict:
    """Train the task's model with the learned optimizer and with Adam; table and figure."""
    torch.set_num_threads(1)  # tiny models: more threads only add overhead on a shared CPU
    lopt = load_learned_optimizer(None if cfg.checkpoint == "shipped" else cfg.checkpoint)
    out = prepare_output(cfg.out, writes=["demo.json", "curves.png"], rerun=True)
    task = get_task(cfg.task)
    curves = {
        "GMNOptimizer": train_curve(task, "learned", 1.0, cfg.seed, cfg.steps, cfg.eval_every,
                                    checkpoint=lopt),
        f"Adam (lr {cfg.adam_lr:g})": train_curve(task, "adam", cfg.adam_lr, cfg.seed,
                                                  cfg.steps, cfg.eval_every),
    }
    summary = {}
    for name, c in curves.items():
        summary[name] = {"final_test_loss": c.test_loss[-1], "best_test_loss": c.best,
                         "best_step": c.steps[c.test_loss.index(c.best)],
                         "optimizer_step_ms": 1e3 * c.step_time_s}
        print(f"{name:>20}: final test loss {c.test_loss[-1]:.4f}, best {c.best:.4f} "
              f"(step {summary[name]['best_step']}), optimizer step "
              f"{1e3 * c.step_time_s:.2f} ms")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, c in curves.items():
        ax.plot(c.steps, c.test_loss, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"test loss ({cfg.task})")
    ax.legend()
    fig.tight_layout()
    write_figure(fig, out / "curves.png")
    payload = {"config": asdict(cfg), "summary": summary,
               "curves": {k: {"steps": c.steps, "test_loss": c.test_loss}
                          for k, c in curves.items()}}
    write_json(out / "demo.json", payload)
    print(f"figure: {out / 'curves.png'}")
    return payload


def main(argv: list[str] | None = None) -> dict:
    return cli.run(DemoConfig, run, argv, prog="python -m lopt.demo", doc=__doc__)


if __name__ == "__main__":
    main()
