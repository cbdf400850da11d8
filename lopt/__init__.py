"""Learned optimization with Graph Metanetworks.

``GMNOptimizer(model)`` is a drop-in ``torch.optim.Optimizer`` whose update is computed by a
meta-trained GMN over the model's parameter graph; ``python -m lopt.meta_train`` meta-trains
new ones by truncated backpropagation (or evolution strategies) through ``torch.func``
unrolls; ``python -m lopt.benchmark`` compares them with tuned Adam and SGD-momentum.
"""

from lopt.checkpoint import (
    CheckpointError,
    LearnedOptimizer,
    load_learned_optimizer,
    save_learned_optimizer,
)
from lopt.optimizer import GMNOptimizer
from lopt.update import UpdateConfig, init_scales, init_state, learned_update

__all__ = [
    "CheckpointError",
    "GMNOptimizer",
    "LearnedOptimizer",
    "UpdateConfig",
    "init_scales",
    "init_state",
    "learned_update",
    "load_learned_optimizer",
    "save_learned_optimizer",
]
