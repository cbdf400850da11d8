"""The outer learner: applies averaged meta-gradients to a learned optimizer.

Adam over the net's weights (``outer_lr``) and the meta-learned log-scales (``scale_lr``),
after a global-norm clip. A meta-gradient that is non-finite, or whose norm overflows
(clipping would scale it to nothing while Adam's momentum still moves), is never applied.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from graphs import params as graph_params
from lopt.checkpoint import LearnedOptimizer

__all__ = ["OuterLearner"]


class OuterLearner:
    """Adam on ``lopt``'s net weights and scales (made trainable here)."""

    def __init__(self, lopt: LearnedOptimizer, outer_lr: float, scale_lr: float,
                 grad_clip: float) -> None:
        self.lopt = lopt
        self.net_params = dict(lopt.net.named_parameters())
        for v in lopt.scales.values():
            v.requires_grad_(True)
        self.grad_clip = grad_clip
        self.adam = torch.optim.Adam([
            {"params": list(self.net_params.values()), "lr": outer_lr},
            {"params": list(lopt.scales.values()), "lr": scale_lr},
        ])

    def meta(self) -> dict[str, dict[str, Tensor]]:
        """``{"net": weights, "scales": scales}``, detached: what the estimators differentiate."""
        return graph_params.detach({"net": self.net_params, "scales": self.lopt.scales})

    @property
    def num_meta(self) -> int:
        return graph_params.numel(self.meta())

    @staticmethod
    def finite(grad: Tensor) -> bool:
        """Whether a flat meta-gradient may be applied (finite, with a finite norm)."""
        return bool(torch.isfinite(torch.linalg.vector_norm(grad)))

    def apply(self, grad: Tensor) -> float:
        """One clipped Adam step along the flat meta-gradient ``grad``; returns its norm
        before clipping (NaN, and no step, when it is not :meth:`finite`)."""
        if not self.finite(grad):
            return float("nan")
        tree = graph_params.unflatten(grad, self.meta())
        for k, v in self.net_params.items():
            v.grad = tree["net"][k].clone()
        for k, v in self.lopt.scales.items():
            v.grad = tree["scales"][k].clone()
        leaves = list(self.net_params.values()) + list(self.lopt.scales.values())
        norm = float(torch.nn.utils.clip_grad_norm_(leaves, self.grad_clip))
        self.adam.step()
        self.adam.zero_grad(set_to_none=True)
        return norm

    def scales(self) -> dict[str, float]:
        """The meta-learned scalars (``exp`` of the log-scales)."""
        return {k: math.exp(float(v.detach())) for k, v in self.lopt.scales.items()}

    def finish(self) -> LearnedOptimizer:
        """Freeze the scales again and return the learned optimizer."""
        for v in self.lopt.scales.values():
            v.requires_grad_(False)
        return self.lopt

    # -------------------------------------------------------------------- persistence
    def state_tensors(self) -> tuple[dict[str, Tensor], list]:
        """Adam's state as ``({"outer.<i>.<key>": tensor}, param_groups)``."""
        sd = self.adam.state_dict()
        tensors = {f"outer.{idx}.{k}": torch.as_tensor(v)
                   for idx, st in sd["state"].items() for k, v in st.items()}
        return tensors, sd["param_groups"]

    def load_state(self, tensors: dict[str, Tensor], param_groups: list) -> None:
        """Restore Adam's state written by :meth:`state_tensors`."""
        state: dict = {}
        for key, v in tensors.items():
            if key.startswith("outer."):
                _, idx, k = key.split(".", 2)
                state.setdefault(int(idx), {})[k] = v
        self.adam.load_state_dict({"state": state, "param_groups": param_groups})
