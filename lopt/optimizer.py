"""``GMNOptimizer``: the learned optimizer as a drop-in ``torch.optim.Optimizer``."""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from graphs import ParameterGraph
from lopt.checkpoint import LearnedOptimizer, load_learned_optimizer
from lopt.update import per_entry, slot_names, update_entries

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
        checkpoint: ``None`` (or ``"shipped"``) for the shipped default weights
            (``"generalist"``), a name of :data:`lopt.SHIPPED_WEIGHTS` (``"digits"``: the
            digits-MLP specialist), a folder written by ``python -m lopt.meta_train --out
            FOLDER``, or a :class:`LearnedOptimizer` (``lopt/weights/README.md`` describes the
            shipped ones).
        lr: multiplier :math:`\eta` of the learned update (default 1.0); lives in
            ``param_groups`` so ``torch.optim.lr_scheduler`` works.
        weight_decay: decoupled decay :math:`\lambda`: ``p <- p - lr * alpha * lambda * p``
            (AdamW-style, scaled by the effective step size ``lr * alpha``), added to the
            checkpoint's own learned weight decay :math:`\omega` if it has one (the default
            has 0.1, from :mod:`lopt.calibrate`; ``"digits"`` has none).

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
        self._order = params
        if not isinstance(checkpoint, LearnedOptimizer):
            checkpoint = load_learned_optimizer(checkpoint)
        self.learned = checkpoint
        self.learned.net.requires_grad_(False)
        self._step = 0
        self._warned = False
        self._cache_key = None
        self._flat: Tensor | None = None  # [slots, P]: see _buffers
        self._views: list[list[Tensor]] = [[]]
        self._bad_state: set[Tensor] = set()
        self._scratch: dict[str, Tensor] = {}  # step-to-step work buffers (see update_entries)
        bounds = [0, *itertools.accumulate(self.graph.param_numels)]
        self._spans = list(zip(bounds[:-1], bounds[1:]))

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

    def _params(self) -> list[Tensor]:
        """The parameters in the graph's entry order."""
        return self._order

    def _buffers(self, compute: torch.dtype) -> Tensor:
        """The optimizer state of every entry as one ``[slots, P]`` buffer (allocated once).

        ``state[p]`` holds views of it, so ``state_dict`` / ``load_state_dict`` and
        ``torch.distributed.checkpoint`` see the usual per-parameter tensors while a step
        updates all of them in a few vectorised operations. State loaded into ``self.state``
        (``load_state_dict``) is packed into the buffer here.
        """
        params = self._params()
        ref = params[0]
        names = slot_names(len(self.learned.update.momentum_decays))
        flat = self._flat
        # state[p] tensors that are not our views were put there by load_state_dict
        if flat is None or flat.dtype != compute or flat.device != ref.device or any(
                self.state[p].get(names[0], v) is not v
                for p, v in zip(params, self._views[0]) if p in self.state):
            old = flat
            flat = torch.zeros(len(names), self.graph.num_params, dtype=compute, device=ref.device)
            views = [list(torch.split(row, self.graph.param_numels)) for row in flat]
            views = [[v.view(p.shape) for v, p in zip(row, params)] for row in views]
            for k, key in enumerate(names):
                for p, v in zip(params, views[k]):
                    st = self.state.get(p)
                    if st is not None and key in st:
                        v.copy_(st[key])
                    elif old is not None:  # a slot someone deleted: start it from zero
                        v.zero_()
                    if st is not None or p in self.state:
                        self.state[p][key] = v
            self._flat, self._views = flat, views
            # a loaded state may hold non-finite values: those tensors stay masked
            bad = [p for p in params if not all(_finite(self.state.get(p, {}).get(key))
                                                for key in names)]
            self._bad_state = set(bad)
        return flat

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
        params = self._params()
        compute = torch.float64 if all(p.dtype == torch.float64 for p in params) \
            else torch.float32
        cfg = self.learned.update
        flat = self._buffers(compute)
        grads = [p.grad for p in params]
        g = self._flatten([x if x is not None else torch.zeros_like(p)
                           for x, p in zip(grads, params)], "grads", compute)
        x = self._flatten([p.detach() for p in params], "params", compute)
        # the common case costs two reductions; only a non-finite value or a missing gradient
        # takes the per-tensor path
        all_ok = bool((g.sum() + x.sum()).isfinite())  # (an overflow only takes the slow path)
        active = [True] * len(params)
        if not all_ok or self._bad_state or any(v is None for v in grads):
            active = self._mask(params, grads, g, x, flat)
        if not any(active):
            return loss
        scales = self._weights(x)
        k = len(cfg.momentum_decays)
        lr = self._per_entry("lr", x)
        wd = self._per_entry("weight_decay", x)
        step = torch.tensor(float(self._step + 1), dtype=compute, device=x.device)
        saved = {i: flat[:, a:b].clone() for i, (a, b) in enumerate(self._spans)
                 if not active[i]}
        new, _, _ = update_entries(
            self.learned.net, None, scales, self.graph, x[None], g[None],
            tuple(flat[j][None] for j in range(k)), flat[k][None], step, cfg, lr, wd,
            stacked=False, inplace=True, scratch=self._scratch,  # state updated in place
        )
        for i, old in saved.items():  # masked tensors keep their state
            a, b = self._spans[i]
            flat[:, a:b].copy_(old)
        self._step += 1
        pieces = torch.split(new[0], self.graph.param_numels)
        dest = [p for p, a in zip(params, active) if a]
        torch._foreach_copy_(dest, [v.view(p.shape) for v, p, a in zip(pieces, params, active)
                                    if a])
        counter = torch.tensor(float(self._step))
        names = slot_names(k)
        for p, a, *views in zip(params, active, *self._views):
            if a:
                st = self.state[p]
                if names[0] not in st:
                    st.update(zip(names, views))
                st["step"] = counter
        return loss

    def _flatten(self, tensors: list[Tensor], key: str, dtype: torch.dtype) -> Tensor:
        """The tensors one after the other in a work buffer ``[P]`` of ``dtype``."""
        buf = self._scratch.get(key)
        if buf is None or buf.dtype != dtype or buf.device != tensors[0].device:
            buf = self._scratch[key] = torch.empty(self.graph.num_params, dtype=dtype,
                                                   device=tensors[0].device)
        if all(t.dtype == dtype for t in tensors):
            return torch.cat([t.reshape(-1) for t in tensors], out=buf)
        torch._foreach_copy_(list(torch.split(buf, self.graph.param_numels)),
                             [t.reshape(-1) for t in tensors])
        return buf

    def _mask(self, params: list[Tensor], grads: list[Tensor | None], g: Tensor, x: Tensor,
              flat: Tensor) -> list[bool]:
        """Zero the entries of tensors without a finite gradient (and the values and state of
        tensors with non-finite values or state), so they reach no other tensor; which tensors
        are updated. Warns once about non-finite numbers."""
        active = []
        for i, (p, grad) in enumerate(zip(params, grads)):
            a, b = self._spans[i]
            clean = p not in self._bad_state and bool(torch.isfinite(x[a:b]).all())
            ok = grad is not None and clean and bool(torch.isfinite(g[a:b]).all())
            if grad is not None and not ok and not self._warned:
                warnings.warn(
                    f"GMNOptimizer: non-finite gradient, value or state in "
                    f"{self._names[p]!r}; the affected tensors are left unchanged this step "
                    "(warned once)", RuntimeWarning, stacklevel=3,
                )
                self._warned = True
            if not ok:
                g[a:b] = 0
            if not clean:
                x[a:b] = 0
                flat[:, a:b] = 0  # restored after the update (the tensor is not active)
            active.append(ok)
        return active

    def _per_entry(self, key: str, ref: Tensor) -> float | Tensor:
        """A group hyper-parameter: one number, or one value per entry when groups differ."""
        return per_entry(self.graph, {self._names[p]: group[key] for group in self.param_groups
                                      for p in group["params"]}, ref)

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
