"""``GMNOptimizer``: the learned optimizer as a drop-in ``torch.optim.Optimizer``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from graphs import ParameterGraph
from lopt.checkpoint import LearnedOptimizer, load_learned_optimizer
from lopt.update import UpdateState, init_state, learned_update

__all__ = ["GMNOptimizer"]


class GMNOptimizer(torch.optim.Optimizer):
    r"""A meta-trained Graph-Metanetwork optimizer with the usual ``torch.optim`` interface.

    The update rule is :func:`lopt.update.learned_update` (documented there): Adam's
    direction, corrected and rescaled per entry by a GMN that reads parameters, gradients,
    momenta and step features over the model's parameter graph. The graph is built once from
    ``model``, which is why the optimizer takes the module rather than bare parameters.

    Args:
        model: the module to train; every trainable parameter must be covered by its
            :class:`~graphs.ParameterGraph`.
        checkpoint: ``None`` for the shipped meta-trained weights, a folder written by
            ``python -m lopt.meta_train --out FOLDER``, or a :class:`LearnedOptimizer`.
        lr: multiplier :math:`\eta` of the learned update (default 1.0); lives in
            ``param_groups`` so ``torch.optim.lr_scheduler`` works.
        weight_decay: decoupled decay :math:`\lambda`: ``p <- p - lr * alpha * lambda * p``
            (AdamW-style, scaled by the effective step size ``lr * alpha``), added to the
            checkpoint's own learned weight decay :math:`\omega` if it has one (the shipped
            one has none: :mod:`lopt.calibrate` found 0 best for it).

    Non-finite gradients never reach the weights: the affected tensors (and their state)
    are left unchanged that step, with one warning. Parameters without a gradient are skipped.
    """

    def __init__(self, model: nn.Module, checkpoint: str | os.PathLike | LearnedOptimizer |
                 None = None, lr: float = 1.0, weight_decay: float = 0.0):
        if lr < 0:
            raise ValueError(f"invalid lr {lr}")
        self.graph = ParameterGraph.from_module(model)
        named = dict(model.named_parameters())
        uncovered = [n for n, p in named.items() if p.requires_grad and n not in
                     self.graph.param_names]
        if uncovered:
            raise ValueError(f"parameters outside the model's parameter graph: {uncovered}")
        params = [named[n] for n in self.graph.param_names]
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        self._names = {p: n for n, p in zip(self.graph.param_names, params)}
        if not isinstance(checkpoint, LearnedOptimizer):
            checkpoint = load_learned_optimizer(checkpoint)
        self.learned = checkpoint
        self.learned.net.requires_grad_(False)
        self._step = 0
        self._warned = False
        self._cache_key = None

    # ------------------------------------------------------------------ helpers
    def _weights(self, ref: Tensor) -> dict[str, Tensor]:
        """Move the net to ``ref``'s device and dtype (cached); the scales there."""
        key = (ref.device, ref.dtype)
        if self._cache_key != key:
            self.learned.net.to(device=ref.device, dtype=ref.dtype)
            self._scales = {k: v.to(ref.device, ref.dtype) for k, v in self.learned.scales.items()}
            self.graph = self.graph.to(ref.device)
            self._cache_key = key
        return self._scales

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One learned update of every parameter that has a finite gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params, grads, lrs, wds, active = {}, {}, {}, {}, {}
        for group in self.param_groups:
            for p in group["params"]:
                n = self._names[p]
                params[n] = p.detach()
                g = p.grad
                ok = g is not None
                if ok and not bool(torch.isfinite(g).all()):
                    ok = False
                    if not self._warned:
                        warnings.warn(
                            f"GMNOptimizer: non-finite gradient in {n!r}; the affected tensors "
                            "are left unchanged this step (warned once)",
                            RuntimeWarning, stacklevel=2,
                        )
                        self._warned = True
                grads[n] = g.detach() if ok else torch.zeros_like(p)
                lrs[n], wds[n], active[n] = group["lr"], group["weight_decay"], ok
        if not any(active.values()):
            return loss
        ref = next(iter(params.values()))
        scales = self._weights(ref)
        cfg = self.learned.update
        slots = init_state(params, cfg).slots()
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p, {})  # .get: no empty entries for skipped params
                for k in slots:
                    if k in st:
                        slots[k][self._names[p]] = st[k]
        step = torch.tensor(float(self._step), dtype=ref.dtype, device=ref.device)
        state = UpdateState.from_slots(step, slots)
        new_params, new_state = learned_update(
            self.learned.net, None, scales, self.graph, params, grads, state, cfg, lrs, wds
        )
        new_slots = new_state.slots()
        self._step += 1
        for group in self.param_groups:
            for p in group["params"]:
                n = self._names[p]
                if not active[n]:
                    continue
                p.copy_(new_params[n])
                st = self.state[p]
                for k in slots:
                    st[k] = new_slots[k][n]
        return loss

    # ------------------------------------------------------------------ (de)serialisation
    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["lopt_step"] = self._step
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        self._step = int(state_dict.pop("lopt_step", 0))
        super().load_state_dict(state_dict)
