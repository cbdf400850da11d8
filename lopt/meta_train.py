"""Meta-train a learned optimizer: ``python -m lopt.meta_train --task T --steps N --out DIR``.

Each outer step advances ``--tasks-per-step`` inner runs (each a population of
``--population`` networks) by one truncation of ``--truncation`` inner steps, estimates the
meta-gradient of their mean meta-loss by truncated backprop (``--estimator tbptt``) or
antithetic ES (``--estimator es``), clips it and takes an outer Adam step. Several processes:
``torchrun --nproc_per_node=N -m lopt.meta_train ...``. See :mod:`lopt.trainer` for the
loop and :mod:`lopt.run_state` for the checkpoint.

Truncated backprop is biased against what pays off only over hundreds of steps, weight
decay above all; ``python -m lopt.calibrate`` then searches the step-size multiplier and a
weight decay on validation data and folds them into the checkpoint.

Outputs in ``--out``: ``config.json``; ``lopt.safetensors`` + ``lopt.json`` (load with
``GMNOptimizer(model, checkpoint=DIR)``), ``train_state.safetensors`` + ``train_state.json``
and ``log.csv``, all five written as one checkpoint every ``--save-every`` steps (a killed
run leaves the last complete one; ``--resume`` continues it exactly); ``meta_loss.png``.
A new run refuses an ``--out`` folder that holds files unless ``--overwrite`` is given.
"""

from __future__ import annotations

from common import cli
from lopt.checkpoint import LearnedOptimizer
from lopt.trainer import MetaTrainConfig, meta_train

__all__ = ["MetaTrainConfig", "build_parser", "main", "meta_train"]

PROG = "python -m lopt.meta_train"


def build_parser():
    return cli.build_parser(MetaTrainConfig, PROG, __doc__)


def main(argv: list[str] | None = None) -> LearnedOptimizer:
    return cli.run(MetaTrainConfig, meta_train, argv, prog=PROG, doc=__doc__)


if __name__ == "__main__":
    main()
