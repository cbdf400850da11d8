"""``python -m lopt.demo``: the shipped GMN optimizer beside Adam on the reference task.

Trains ``digits_mlp32`` (MLP 64-32-10 on 8x8 digits) once with ``GMNOptimizer`` (shipped
meta-trained weights) and once with Adam at its tuned learning rate 3.5e-3, from the same
initialisation and on the same batches; prints both test losses and writes
``curves.png`` and ``demo.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lopt.baselines import train_curve
from tasks import get_task


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m lopt.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--task", default="digits_mlp32", help="task name (default digits_mlp32)")
    p.add_argument("--steps", type=int, default=1000, help="training steps (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="model-init and data seed (default 0)")
    p.add_argument("--adam-lr", type=float, default=3.5e-3, help="Adam lr (default 3.5e-3)")
    p.add_argument("--checkpoint", default=None,
                   help="learned-optimizer folder from meta_train (default: shipped weights)")
    p.add_argument("--out", default="runs/lopt_demo", help="output folder")
    p.add_argument("--eval-every", type=int, default=20, help="steps between test evaluations")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # tiny models: more threads only add overhead on a shared CPU
    task = get_task(args.task)
    curves = {
        "GMNOptimizer": train_curve(task, "learned", 1.0, args.seed, args.steps,
                                    args.eval_every, checkpoint=args.checkpoint),
        f"Adam (lr {args.adam_lr:g})": train_curve(task, "adam", args.adam_lr, args.seed,
                                                   args.steps, args.eval_every),
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, c in curves.items():
        summary[name] = {"final_test_loss": c.test_loss[-1], "best_test_loss": c.best,
                         "best_step": c.steps[c.test_loss.index(c.best)],
                         "optimizer_step_ms": 1e3 * c.step_time_s}  # fmt: skip
        print(f"{name:>20}: final test loss {c.test_loss[-1]:.4f}, best {c.best:.4f} "
              f"(step {summary[name]['best_step']}), optimizer step "
              f"{1e3 * c.step_time_s:.2f} ms")  # fmt: skip

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, c in curves.items():
        ax.plot(c.steps, c.test_loss, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"test loss ({args.task})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    payload = {"config": vars(args), "summary": summary,
               "curves": {k: {"steps": c.steps, "test_loss": c.test_loss}
                          for k, c in curves.items()}}  # fmt: skip
    (out / "demo.json").write_text(json.dumps(payload, indent=1))
    print(f"figure: {out / 'curves.png'}")
    return payload


if __name__ == "__main__":
    main()
