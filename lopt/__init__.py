"""Learned optimization with Graph Metanetworks.

``GMNOptimizer(model)`` is a drop-in ``torch.optim.Optimizer`` whose update is computed by a
meta-trained GMN over the model's parameter graph; ``python -m lopt.meta_train`` meta-trains
new ones by truncated backpropagation (or evolution strategies) through ``torch.func``
unrolls — on one process or many (``torchrun``, :mod:`lopt.distributed`), each unrolling
populations of networks in one batched computation; ``python -m lopt.calibrate`` tunes the
learned step size and weight decay on validation data; ``python -m lopt.benchmark`` compares
learned optimizers with tuned Adam, AdamW and SGD-momentum (``--suite heldout``: on the
held-out suite of :mod:`lopt.suite`, the yardstick), ``python -m lopt.throughput`` measures
meta-training throughput.
"""

from lopt.checkpoint import (
    SHIPPED_WEIGHTS,
    CheckpointError,
    LearnedOptimizer,
    load_learned_optimizer,
    save_learned_optimizer,
)
from lopt.distributed import GroupError
from lopt.optimizer import GMNOptimizer
from lopt.update import UpdateConfig, init_scales, init_state, learned_update

__all__ = [
    "CheckpointError",
    "GMNOptimizer",
    "GroupError",
    "LearnedOptimizer",
    "SHIPPED_WEIGHTS",
    "UpdateConfig",
    "init_scales",
    "init_state",
    "learned_update",
    "load_learned_optimizer",
    "save_learned_optimizer",
]
