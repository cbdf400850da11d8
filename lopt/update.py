r"""The learned update rule, written once as a pure function.

Both :class:`lopt.optimizer.GMNOptimizer` (``step``) and the meta-training unrolls
(:mod:`lopt.unroll`) call :func:`learned_update`, so meta-trained behaviour transfers exactly.

With gradient :math:`g` and step :math:`t \leftarrow t + 1`, per parameter tensor:

.. math::
    m_k &\leftarrow b_k m_k + (1 - b_k) g, \qquad v \leftarrow b_v v + (1 - b_v) g^2 \\
    d &= \frac{m_1 / (1 - b_1^t)}{\sqrt{v / (1 - b_v^t)} + \epsilon}
        \qquad\text{(Adam's direction)} \\
    (o_d, o_s) &= \mathrm{Net}(\text{features}(p, g, m, v, d, t)) \\
    u &= \alpha\, e^{\beta_s \tanh o_s} \bigl(d + \beta_d \tanh o_d\bigr) \\
    p &\leftarrow p - \eta\, u - \eta\, \alpha\, (\lambda + \omega)\, p

where the net (:mod:`lopt.nets`: the per-edge GMN, the cheap :class:`graphs.NeuronGMN` or a
per-parameter MLP) reads the model's parameter graph, :math:`\eta` the
learning-rate multiplier (``param_group["lr"]``, 1 by default), :math:`\lambda` the user's
decoupled weight decay, and :math:`\alpha, \beta_d, \beta_s` (and, when
``weight_decay_init > 0``, a learned decoupled weight decay :math:`\omega`, else
:math:`\omega = 0`) meta-learned scalars stored as logarithms.
Everything is computed on flat ``[B, P]`` entries (:func:`update_entries`, the one home of
the rule; :func:`learned_update` is its dict form for meta-training). A fresh net outputs
zeros, so an untrained learned optimizer *is* Adam (AdamW with decay :math:`\omega` when it
is learned) with step size :math:`\alpha` (initialised to 3.5e-3, the
tuned Adam rate of the reference task). The net
can only correct the direction by at most :math:`\beta_d` per entry and scale the step by a
factor in :math:`[e^{-\beta_s}, e^{\beta_s}]`: the update magnitude stays bounded. With
``UpdateConfig.normalize_update`` the bracket is first divided by its root mean square per
tensor (Celo2's normalised update), so the step's size is set by the scaling alone. With
``UpdateConfig.tensor_stats`` the net also reads three per-tensor statistics
(:func:`lopt.features.tensor_stats`): how consistent the gradient is, whether it agrees
with its momentum, and the tensor's scale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils._pytree import register_dataclass

from lopt.features import (
    entry_features,
    gradient_agreement,
    normalize,
    normalize_,
    num_features,
    num_tensor_features,
    step_features,
    tensor_stats,
)

__all__ = ["UpdateConfig", "UpdateState", "init_scales", "init_state", "learned_update",
           "net_outputs", "per_entry", "slot_names", "update_entries"]



@dataclass
class UpdateState:
    """The learned update rule's optimizer state for a set of parameters.

    Attributes:
        step: ``[]`` steps taken (shared by a population's members).
        momenta: one ``{name: [*shape]}`` per decay of ``UpdateConfig.momentum_decays``.
        second: the second moment ``{name: [*shape]}``.

    A pytree for ``torch.func`` (``grad``, ``vmap``) like the dicts it holds.
    """

    step: Tensor
    momenta: tuple[dict[str, Tensor], ...]
    second: dict[str, Tensor]

    def slots(self) -> dict[str, dict[str, Tensor]]:
        """Per-parameter buffers by their stored names (:func:`slot_names`)."""
        return dict(zip(slot_names(len(self.momenta)), (*self.momenta, self.second),
                        strict=True))

    @classmethod
    def from_slots(cls, step: Tensor, slots: Mapping[str, Mapping[str, Tensor]]) -> UpdateState:
        """The inverse of :meth:`slots`."""
        momenta = tuple(dict(slots[f"m{k}"]) for k in range(len(slots) - 1))
        return cls(step, momenta, dict(slots["v"]))

    def map(self, fn) -> UpdateState:
        """``fn`` applied to every tensor (e.g. ``Tensor.detach``, a device move)."""
        return UpdateState(fn(self.step), tuple({n: fn(t) for n, t in m.items()}
                                                for m in self.momenta),
                           {n: fn(t) for n, t in self.second.items()})


def slot_names(num_momenta: int) -> list[str]:
    """Stored names of the per-parameter buffers: ``m0 .. m{K-1}`` and ``v``."""
    return [*(f"m{k}" for k in range(num_momenta)), "v"]


register_dataclass(UpdateState)
State = UpdateState  # the name the unrolls and estimators use

UPDATE_EPS = 1e-16
"""``UpdateConfig.normalize_update``'s offset under the square root of the mean square."""


@dataclass(frozen=True)
class UpdateConfig:
    """Hyper-parameters of the update rule (fixed during meta-training).

    Attributes:
        momentum_decays: decays :math:`b_k` of the momenta fed to the net; the first is Adam's
            :math:`b_1`.
        second_moment_decay: :math:`b_v`.
        eps: Adam's :math:`\\epsilon`.
        step_taus: time scales of the step features :math:`\\tanh(t/\\tau - 1)`.
        alpha_init, beta_dir_init, beta_scale_init: initial :math:`\\alpha, \\beta_d, \\beta_s`.
        weight_decay_init: initial learned decoupled weight decay :math:`\\omega` (relative
            to :math:`\\alpha`, as AdamW's); 0 (the default, and what checkpoints from before
            it existed load as) = no learned weight decay.
        normalize_update: divide each tensor's direction :math:`d + \\beta_d \\tanh o_d` by
            its root mean square before scaling it (Celo2's normalised update: every tensor
            moves by :math:`\\eta \\alpha e^{\\beta_s \\tanh o_s}` in RMS, whatever the
            gradients' history); False (the default, and older checkpoints): an untrained
            net is Adam.
        tensor_stats: feed the net three per-tensor statistics (:func:`lopt.features.tensor_stats`:
            the Adam direction's RMS, the gradient's cosine with its momentum, the tensor's
            log scale), so that it can tell a noisy or overshooting tensor from a steady one
            and size its step to the weights; False (the default, and older checkpoints).
    """

    momentum_decays: tuple[float, ...] = (0.9, 0.99, 0.999)
    second_moment_decay: float = 0.999
    eps: float = 1e-8
    step_taus: tuple[float, ...] = (10.0, 100.0, 1000.0)
    alpha_init: float = 3.5e-3
    beta_dir_init: float = 0.1
    beta_scale_init: float = 1.0
    weight_decay_init: float = 0.0
    normalize_update: bool = False
    tensor_stats: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, value, need: str):
            raise ValueError(f"{name} must be {need}, got {value!r}")

        numbers = [("second_moment_decay", self.second_moment_decay), ("eps", self.eps),
                   ("alpha_init", self.alpha_init), ("beta_dir_init", self.beta_dir_init),
                   ("beta_scale_init", self.beta_scale_init),
                   ("weight_decay_init", self.weight_decay_init)]
        numbers += [("momentum_decays", b) for b in self.momentum_decays]
        numbers += [("step_taus", t) for t in self.step_taus]
        for name, value in numbers:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                    value):
                bad(name, value, "a finite number")
        if not self.momentum_decays:
            bad("momentum_decays", self.momentum_decays, "non-empty")
        for b in (*self.momentum_decays, self.second_moment_decay):
            if not 0 <= b < 1:  # a decay of 1 never forgets its zero start: division by 0
                bad("a decay", b, "in [0, 1)")
        for name, value in numbers[1:5] + [("step_taus", t) for t in self.step_taus]:
            if value <= 0:
                bad(name, value, "positive")
        if self.weight_decay_init < 0:
            bad("weight_decay_init", self.weight_decay_init, ">= 0")
        for name in ("normalize_update", "tensor_stats"):
            if not isinstance(getattr(self, name), bool):
                bad(name, getattr(self, name), "true or false")

    @property
    def in_channels(self) -> int:
        """Feature channels of a net that gets the step features as channels."""
        return num_features(len(self.momentum_decays), len(self.step_taus), self.tensor_stats)

    @property
    def entry_channels(self) -> int:
        """Per-entry feature channels (without the step features)."""
        return num_tensor_features(len(self.momentum_decays), self.tensor_stats)

    @property
    def read_channels(self) -> tuple[int, ...]:
        """The channels a :class:`graphs.NeuronGMN` averages on neurons: gradient, sqrt(v)
        and Adam direction (a gradient's scale and sign structure per neuron, as Adafactor's
        row and column statistics)."""
        k = len(self.momentum_decays)
        return (1, 2 + k, 3 + k)

    @property
    def out_channels(self) -> int:
        """Net outputs per entry: direction correction and log step-scale."""
        return 2

    @classmethod
    def from_dict(cls, d: Mapping) -> UpdateConfig:
        d = dict(d)
        for key in ("momentum_decays", "step_taus"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def init_scales(cfg: UpdateConfig, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """The meta-learned scalars, each ``[]``: ``{"log_alpha", "log_beta_dir", "log_beta_scale"}``
    and ``"log_weight_decay"`` when ``cfg.weight_decay_init > 0``."""
    scales = {
        "log_alpha": torch.tensor(math.log(cfg.alpha_init), dtype=dtype),
        "log_beta_dir": torch.tensor(math.log(cfg.beta_dir_init), dtype=dtype),
        "log_beta_scale": torch.tensor(math.log(cfg.beta_scale_init), dtype=dtype),
    }
    if cfg.weight_decay_init > 0:
        scales["log_weight_decay"] = torch.tensor(math.log(cfg.weight_decay_init), dtype=dtype)
    return scales


def init_state(params: Mapping[str, Tensor], cfg: UpdateConfig) -> UpdateState:
    """Zero optimizer state for ``params`` (step 0, zero momenta and second moment)."""
    ref = next(iter(params.values()))

    def zeros() -> dict[str, Tensor]:
        return {n: torch.zeros_like(p) for n, p in params.items()}

    return UpdateState(torch.zeros((), dtype=ref.dtype, device=ref.device),
                       tuple(zeros() for _ in cfg.momentum_decays), zeros())


def _flat(graph, d: Mapping[str, Tensor], lead: int) -> Tensor:
    """``{name: [B?, *shape]}`` -> ``[B, P]`` in the graph's entry order."""
    return torch.cat([d[n].reshape(lead, -1) for n in graph.param_names], 1)


def _unflat(graph, x: Tensor, stacked: bool) -> dict[str, Tensor]:
    """``[B, P]`` -> ``{name: [B?, *shape]}`` (views)."""
    lead = (x.shape[0],) if stacked else ()
    return {n: piece.reshape(*lead, *shape) for n, shape, piece in
            zip(graph.param_names, graph.param_shapes, torch.split(x, graph.param_numels, 1))}


def per_entry(graph, value: float | Mapping[str, float | Tensor], ref: Tensor) -> float | Tensor:
    """A number, or ``{name: value}`` -> one value per entry ``[P]`` like ``ref`` (a number
    when all are equal numbers)."""
    if not isinstance(value, Mapping):
        return value
    values = [value[n] for n in graph.param_names]
    if all(isinstance(v, (int, float)) for v in values) and len(set(values)) == 1:
        return float(values[0])
    per_tensor = torch.stack([torch.as_tensor(v, dtype=ref.dtype, device=ref.device)
                              for v in values])
    numels = torch.tensor(graph.param_numels, device=ref.device)
    return torch.repeat_interleave(per_tensor, numels, output_size=ref.shape[-1])


def net_outputs(net: nn.Module, weights: Mapping[str, Tensor] | None, graph, x: Tensor,
                steps: Tensor, stacked: bool, out: Tensor | None = None) -> Tensor:
    """The net's two outputs per entry ``[B, 2, P]`` from the features ``x [B, C, P]``.

    A net that reads flat entries and a context (``net.reads_entries``: :class:`NeuronGMN`)
    gets them as they are; the others (the per-edge GMN, the per-parameter MLP) get one
    parameter-shaped dict per channel, the step features broadcast as further channels.
    ``out`` (no autograd), a ``[B, 2, P]`` buffer, receives the outputs of a net that reads
    entries; the others return a new tensor.
    """
    if getattr(net, "reads_entries", False):
        args, kwargs = (graph, x), {"context": steps}
        if out is not None:
            kwargs["out"] = out
    else:
        channels = [_unflat(graph, x[:, c], stacked) for c in range(x.shape[1])]
        shapes = channels[0]
        channels += [{n: s.expand(v.shape) for n, v in shapes.items()} for s in steps]
        args, kwargs = (graph, *channels), {}
    out = net(*args, **kwargs) if weights is None else functional_call(
        net, dict(weights), args, kwargs)
    if isinstance(out, Tensor):
        return out
    lead = x.shape[0]
    # contiguous: the in-place squash then runs the same (vectorised) kernel as the pure one
    return torch.cat([out[n].reshape(lead, -1, 2) for n in graph.param_names],
                     1).transpose(1, 2).contiguous()


def update_entries(
    net: nn.Module,
    weights: Mapping[str, Tensor] | None,
    scales: Mapping[str, Tensor],
    graph,
    params: Tensor,
    grads: Tensor,
    momenta: tuple[Tensor, ...],
    second: Tensor,
    step: Tensor,
    cfg: UpdateConfig,
    lr: float | Tensor = 1.0,
    weight_decay: float | Tensor = 0.0,
    stacked: bool = True,
    inplace: bool = False,
    scratch: dict[str, Tensor] | None = None,
) -> tuple[Tensor, tuple[Tensor, ...], Tensor]:
    """:func:`learned_update` on flat entries: every quantity ``[B, P]`` in the graph's order.

    ``step`` is the new step count (already incremented); ``lr`` and ``weight_decay`` a
    number or one value per entry. Returns the new ``(params, momenta, second)``. With
    ``inplace`` (no autograd: :class:`GMNOptimizer`) the momenta and ``second`` tensors are
    updated in place and returned, saving a copy of the state per step, and the direction,
    features, net outputs and new parameters are written into buffers kept in ``scratch``
    (allocated there once: a fresh P-sized buffer every step costs page faults as much as the
    arithmetic); the returned parameters are then a view of ``scratch["outputs"]``, valid
    until the next call.
    """
    bv = cfg.second_moment_decay
    big = torch.finfo(grads.dtype).max
    numels = graph.param_numels
    # the gradient's agreement with the momentum before it (read before the in-place update)
    agreement = gradient_agreement(grads, momenta[0], numels) if cfg.tensor_stats else None
    # m <- b m + (1 - b) g, one fused pass per momentum; a finite gradient above
    # sqrt(dtype max) would square to inf (and the features to NaN): the second moment
    # saturates at the largest finite value instead (identity otherwise)
    if inplace:
        momenta = tuple(m.lerp_(grads, 1 - b)
                        for b, m in zip(cfg.momentum_decays, momenta, strict=True))
        second = second.mul_(bv).addcmul_(grads, grads, value=1 - bv).nan_to_num_(posinf=big)
    else:
        momenta = tuple(torch.lerp(m, grads, 1 - b)
                        for b, m in zip(cfg.momentum_decays, momenta, strict=True))
        second = torch.nan_to_num(torch.addcmul(bv * second, grads, grads, value=1 - bv),
                                  posinf=big)
    corr1 = 1 - cfg.momentum_decays[0] ** step
    corr2 = 1 - bv**step
    # Adam's direction m / (c1 (sqrt(v) / sqrt(c2) + eps)), from the root sqrt(v + 1e-30) that
    # is also a feature (the tiny offset keeps d sqrt(v) / dv finite where v = 0)
    root_scale, floor = corr1 / corr2.sqrt(), cfg.eps * corr1
    features = outputs = None
    if inplace:  # the same arithmetic into reused buffers (scratch)
        lead, p = params.shape
        features = _scratch(scratch, "features", (lead, cfg.entry_channels, p), params)
        outputs = _scratch(scratch, "outputs", (lead, cfg.out_channels, p), params)
        root_channel = num_tensor_features(len(cfg.momentum_decays)) - 2
        root = torch.add(second, 1e-30, out=features[:, root_channel]).sqrt_()
        direction = _scratch(scratch, "direction", (lead, p), params)
        torch.mul(root, root_scale, out=direction).add_(floor)
        direction = torch.div(momenta[0], direction, out=direction)
    else:
        root = (second + 1e-30).sqrt()
        direction = momenta[0] / (root * root_scale + floor)
    stats = None if agreement is None else tensor_stats(params, direction, agreement, numels)
    x = entry_features(params, grads, momenta, root, direction, numels, out=features,
                       stats=stats)
    out = net_outputs(net, weights, graph, x, step_features(step, cfg.step_taus), stacked,
                      out=outputs)
    alpha = scales["log_alpha"].exp()
    beta_dir = scales["log_beta_dir"].exp()
    beta_scale = scales["log_beta_scale"].exp()
    # tanh o = 2 sigmoid(2 o) - 1 (sigmoid costs a quarter of tanh on CPU), so
    # alpha exp(beta_s tanh o_s) = alpha e^{-beta_s} exp(2 beta_s sigmoid(2 o_s))
    # and d + beta_d tanh o_d = (2 beta_d sigmoid(2 o_d) - beta_d) + d
    if inplace:  # the same expression, without P-sized temporaries (out is ours)
        scale = out[:, 1].mul_(2).sigmoid_().mul_(2 * beta_scale).exp_().mul_(
            alpha * (-beta_scale).exp())
        u = out[:, 0].mul_(2).sigmoid_().mul_(2 * beta_dir).sub_(beta_dir).add_(direction)
        if cfg.normalize_update:
            u = normalize_(u, graph.param_numels, UPDATE_EPS)
        u = u.mul_(scale)
    else:
        scale = torch.exp(torch.sigmoid(2 * out[:, 1]) * (2 * beta_scale)) * (
            alpha * (-beta_scale).exp())
        u = torch.sigmoid(2 * out[:, 0]) * (2 * beta_dir) - beta_dir + direction
        if cfg.normalize_update:
            u = normalize(u, graph.param_numels, UPDATE_EPS)
        u = u * scale
    lam = weight_decay
    if "log_weight_decay" in scales:
        lam = lam + scales["log_weight_decay"].exp()
    decay = not (isinstance(lam, (int, float)) and lam == 0)
    if inplace and not decay:  # new = params - lr u, into u's buffer
        if not (isinstance(lr, (int, float)) and lr == 1):  # (1 * u is u)
            u = u.mul_(lr)
        return torch.sub(params, u, out=u), momenta, second
    new = params - lr * u
    if decay:
        new = new - lr * alpha * lam * params
    return new, momenta, second


def _scratch(scratch: dict[str, Tensor] | None, key: str, shape: tuple[int, ...],
             like: Tensor) -> Tensor:
    """A work buffer kept in ``scratch`` from step to step (a fresh P-sized buffer every
    step costs page faults as much as the arithmetic on it)."""
    buf = None if scratch is None else scratch.get(key)
    if buf is None or buf.shape != shape or buf.dtype != like.dtype or \
            buf.device != like.device:
        buf = like.new_empty(shape)
        if scratch is not None:
            scratch[key] = buf
    return buf


def learned_update(
    net: nn.Module,
    weights: Mapping[str, Tensor] | None,
    scales: Mapping[str, Tensor],
    graph,
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    state: UpdateState,
    cfg: UpdateConfig,
    lr: float | Mapping[str, float | Tensor] = 1.0,
    weight_decay: float | Mapping[str, float | Tensor] = 0.0,
) -> tuple[dict[str, Tensor], UpdateState]:
    """One step of the learned optimizer; pure in all tensor arguments.

    Args:
        net: the learned optimizer's net (:mod:`lopt.nets`), called with its ``weights``
            through ``functional_call`` (see :func:`net_outputs`).
        weights: the net's parameters and buffers ``{name: tensor}`` (a partial dict falls
            back to the module's own tensors; ``None`` uses the module as it is).
        scales: meta-learned scalars (see :func:`init_scales`).
        graph: the :class:`~graphs.ParameterGraph` of the trained model.
        params, grads: ``{name: [*shape]}`` for every name in ``graph.param_names``, or
            ``{name: [P, *shape]}`` for a population of ``P`` networks updated in one call
            (features are normalised per member; the net runs once on the stacked graph).
        state: the optimizer state from :func:`init_state` or a previous call.
        cfg: the update rule's hyper-parameters.
        lr, weight_decay: the multiplier :math:`\\eta` and decay :math:`\\lambda`, a number or
            one per parameter name.

    Returns:
        ``(new_params, new_state)``, same structure as the inputs.
    """
    batch = graph.batch_size_of(params)
    stacked = batch is not None
    lead = batch if stacked else 1
    p = _flat(graph, params, lead)
    step = state.step + 1
    new, momenta, second = update_entries(
        net, weights, scales, graph, p, _flat(graph, grads, lead),
        tuple(_flat(graph, m, lead) for m in state.momenta), _flat(graph, state.second, lead),
        step, cfg, per_entry(graph, lr, p), per_entry(graph, weight_decay, p),
        stacked,
    )
    return _unflat(graph, new, stacked), UpdateState(
        step, tuple(_unflat(graph, m, stacked) for m in momenta), _unflat(graph, second, stacked))
