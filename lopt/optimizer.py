"""``GMNOptimizer``: the learned optimizer as a drop-in ``torch.optim.Optimizer``."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from graphs import ParameterGraph
from lopt.checkpoint import LearnedOptimizer, load_learned_optimizer
from lopt.update import UpdateState, learned_update, slot_names

__all__ = ["GMNOptimizer"]


def _check_hyper(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value) or value < 0:
        raise ValueError(f"invalid {name}: {value!r} (a finite number >= 0 is required)")


def _finite(t: Tensor | None) -> bool:
    return t is None or bool(torch.isfinite(t).all())


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

    Non-finite values never spread: a tensor whose gradient, value or optimizer state is not
    finite is left unchanged that step (one warning) and enters the GMN's message passing as
    zeros, so it cannot reach other tensors. Parameters without a gradient are skipped.
    ``lr`` and ``weight_decay`` must be finite and >= 0 (checked again at every step, so a
    scheduler cannot slip a NaN in). Any floating dtype works: the update is computed in
    float32 (float64 when every parameter is float64) and cast back to each parameter's dtype.
    The step counter is also kept per parameter (``state[p]["step"]``, as torch's Adam does),
    so ``torch.distributed.checkpoint``'s optimizer state dicts resume it.
    """

    def __init__(self, model: nn.Module, checkpoint: str | os.PathLike | LearnedOptimizer |
                 None = None, lr: float = 1.0, weight_decay: float = 0.0):
        _check_hyper("lr", lr)
        _check_hyper("weight_decay", weight_decay)
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
        for group in self.param_groups:
            _check_hyper("lr", group["lr"])
            _check_hyper("weight_decay", group["weight_decay"])
        every = [p for group in self.param_groups for p in group["params"]]
        compute = torch.float64 if all(p.dtype == torch.float64 for p in every) \
            else torch.float32
        cfg = self.learned.update
        names = slot_names(len(cfg.momentum_decays))
        params, grads, slots, lrs, wds, active = {}, {}, {n: {} for n in names}, {}, {}, {}
        for group in self.param_groups:
            for p in group["params"]:
                n = self._names[p]
                st = self.state.get(p, {})  # .get: no empty entries for skipped params
                g = p.grad
                clean = _finite(p) and all(_finite(st.get(k)) for k in names)
                ok = g is not None and _finite(g) and clean
                if g is not None and not ok and not self._warned:
                    warnings.warn(
                        f"GMNOptimizer: non-finite gradient, value or state in {n!r}; the "
                        "affected tensors are left unchanged this step (warned once)",
                        RuntimeWarning, stacklevel=2,
                    )
                    self._warned = True
                zero = None if ok and all(k in st for k in names) else \
                    torch.zeros(p.shape, dtype=compute, device=p.device)
                params[n] = p.detach().to(compute) if clean else zero
                grads[n] = g.detach().to(compute) if ok else zero
                for k in names:
                    slots[k][n] = st[k].to(compute) if clean and k in st else zero
                lrs[n], wds[n], active[n] = group["lr"], group["weight_decay"], ok
        if not any(active.values()):
            return loss
        ref = next(iter(params.values()))
        scales = self._weights(ref)
        step = torch.tensor(float(self._step), dtype=ref.dtype, device=ref.device)
        state = UpdateState.from_slots(step, slots)
        new_params, new_state = learned_update(
            self.learned.net, None, scales, self.graph, params, grads, state, cfg, lrs, wds
        )
        new_slots = new_state.slots()
        self._step += 1
        counter = torch.tensor(float(self._step))
        for group in self.param_groups:
            for p in group["params"]:
                n = self._names[p]
                if not active[n]:
                    continue
                p.copy_(new_params[n].to(p.dtype))
                st = self.state[p]
                for k in names:
                    st[k] = new_slots[k][n]
                st["step"] = counter
        return loss

    # ------------------------------------------------------------------ (de)serialisation
    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["lopt_step"] = self._step
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a :meth:`state_dict`; another optimizer's state, another model's, or a
        negative step counter is refused before anything changes."""
        state_dict = dict(state_dict)
        step = state_dict.pop("lopt_step", None)
        names = {*slot_names(len(self.learned.update.momentum_decays)), "step"}
        order = [p for group in self.param_groups for p in group["params"]]
        index = [i for group in state_dict.get("param_groups", []) for i in group["params"]]
        if len(index) != len(order):
            raise ValueError(f"the state dict holds {len(index)} parameters, this optimizer "
                             f"{len(order)}: it belongs to another model")
        shape_of = {i: order[k].shape for k, i in enumerate(index)}
        steps = []
        for i, st in state_dict.get("state", {}).items():
            foreign = sorted(set(st) - names)
            if foreign:
                raise ValueError(f"not a GMNOptimizer state: parameter {i} holds {foreign} "
                                 f"(expected {sorted(names)}); another optimizer's state?")
            for k, v in st.items():
                if k == "step":
                    steps.append(float(v))
                elif i not in shape_of or tuple(v.shape) != tuple(shape_of[i]):
                    raise ValueError(f"state '{k}' of parameter {i} has shape "
                                     f"{tuple(v.shape)}, the parameter "
                                     f"{tuple(shape_of.get(i, ()))}: another model's state")
        if step is None:  # a state dict torch.distributed.checkpoint rebuilt: per-parameter
            step = int(max(steps)) if steps else 0
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"invalid lopt_step {step!r} (an integer >= 0 is required)")
        super().load_state_dict(state_dict)
        self._step = step
