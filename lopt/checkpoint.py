"""Learned-optimizer weights on disk: safetensors plus a JSON config, never pickle.

A checkpoint folder (what ``python -m lopt.meta_train --out FOLDER`` writes, and the shipped
``lopt/weights/``) holds::

    lopt.safetensors   net weights under "net.*", meta-learned scalars under "scales.*"
    lopt.json          {"net_kind", "net": hparams, "update": UpdateConfig, ...extra}

Both files are written as one transaction (:func:`common.persistence.write_checkpoint`), so a
killed run never leaves a half-written checkpoint or a pair from two different steps, and
loading validates every file and field (:class:`CheckpointError` names them).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from common.persistence import (
    PersistenceError,
    has_checkpoint,
    json_bytes,
    parse_json,
    parse_tensors,
    read_checkpoint,
    read_shipped,
    require,
    tensor_bytes,
    write_checkpoint,
)
from graphs import params as graph_params
from lopt.nets import NET_KINDS, build_net, net_hparams
from lopt.update import UpdateConfig, init_scales

__all__ = [
    "CheckpointError",
    "LearnedOptimizer",
    "checkpoint_files",
    "learned_optimizer_from",
    "learned_optimizer_from_files",
    "load_learned_optimizer",
    "save_learned_optimizer",
    "SHIPPED",
    "SHIPPED_WEIGHTS",
    "shipped_name",
]

WEIGHTS_FILE = "lopt.safetensors"
CONFIG_FILE = "lopt.json"
SHIPPED_WEIGHTS = {
    "generalist": "meta-trained with persistent ES on generalist_mix (MLPs, CNNs and tiny "
                  "transformers on digits, MNIST-1D, synthetic data); the default",
    "digits": "meta-trained with truncated backprop on digits MLPs only: fastest there, "
              "behind tuned Adam on most held-out tasks",
}
"""The learned optimizers shipped in the ``lopt.weights`` package, by name."""
SHIPPED = "generalist"
"""The shipped weights ``GMNOptimizer(model)`` loads (also called ``"shipped"``)."""


class CheckpointError(PersistenceError):
    """A checkpoint is missing, malformed, or does not fit the net its config describes."""


@dataclass
class LearnedOptimizer:
    """Everything that defines a learned optimizer: net, meta-learned scalars, update rule.

    Attributes:
        net: the GMN or per-parameter MLP (see :mod:`lopt.nets`).
        scales: ``{"log_alpha", "log_beta_dir", "log_beta_scale"}`` scalars, plus
            ``"log_weight_decay"`` when the rule has a learned weight decay.
        update: the update rule's fixed hyper-parameters.
        net_kind: ``"gmn"`` or ``"mlp"``.
        extra: free-form metadata saved in the JSON (meta-training config, outer step, ...).
    """

    net: nn.Module
    scales: dict[str, Tensor]
    update: UpdateConfig
    net_kind: str = "gmn"
    extra: dict = field(default_factory=dict)

    @classmethod
    def fresh(cls, net_kind: str = "gmn", hidden: int = 32, layers: int = 2,
              update: UpdateConfig | None = None, seed: int = 0,
              entry_hidden: int = 0) -> LearnedOptimizer:
        """An untrained learned optimizer (behaves exactly like Adam, step ``alpha_init``);
        ``entry_hidden``: the per-entry hidden width of a ``"neuron"`` net."""
        update = update or UpdateConfig()
        hp = net_hparams(net_kind, update, hidden, layers, entry_hidden)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_net(net_kind, hp)
        return cls(net, init_scales(update), update, net_kind)

    @property
    def weight_decay(self) -> float:
        """The learned decoupled weight decay :math:`\\omega` (0 when there is none)."""
        wd = self.scales.get("log_weight_decay")
        return 0.0 if wd is None else float(wd.exp())

    def set_weight_decay(self, omega: float) -> None:
        """Set :math:`\\omega` to ``omega > 0``, adding the scalar if the rule had none."""
        if omega <= 0:
            raise ValueError(f"a learned weight decay must be positive, got {omega}")
        if "log_weight_decay" not in self.scales:
            self.update = replace(self.update, weight_decay_init=omega)
        ref = self.scales["log_alpha"]
        self.scales["log_weight_decay"] = torch.tensor(math.log(omega), dtype=ref.dtype,
                                                       device=ref.device)

    def weights(self) -> dict[str, Tensor]:
        """The net's parameters and buffers as a flat dict (for ``functional_call``)."""
        return {**dict(self.net.named_parameters()), **dict(self.net.named_buffers())}

    def config(self) -> dict:
        return {"net_kind": self.net_kind, "net": self.net.hparams(),
                "update": asdict(self.update), **self.extra}


def checkpoint_files(lopt: LearnedOptimizer) -> dict[str, bytes]:
    """``{lopt.safetensors, lopt.json}`` contents: what :func:`save_learned_optimizer` writes
    (and what meta-training puts into each checkpoint transaction)."""
    tensors = {f"net.{k}": v for k, v in lopt.weights().items()}
    tensors.update({f"scales.{k}": v for k, v in lopt.scales.items()})
    return {WEIGHTS_FILE: tensor_bytes(tensors), CONFIG_FILE: json_bytes(lopt.config())}


def save_learned_optimizer(lopt: LearnedOptimizer, folder: str | os.PathLike) -> Path:
    """Write ``lopt.safetensors`` and ``lopt.json`` into ``folder`` (created if needed), both
    or neither (:func:`common.persistence.write_checkpoint`)."""
    return write_checkpoint(folder, checkpoint_files(lopt))


def shipped_name(ref) -> str | None:
    """The shipped weights ``ref`` means, or ``None`` when it is a path.

    ``None`` and ``"shipped"`` mean the default (:data:`SHIPPED`); a ``str`` that is a key of
    :data:`SHIPPED_WEIGHTS` always means those shipped weights, whatever the current folder
    holds (a warning says so when a file or folder of that name exists there: give it as a
    path, ``"./digits"``, to load it); anything else is a path.
    """
    if ref is None or (isinstance(ref, str) and ref == "shipped"):
        return SHIPPED
    if isinstance(ref, str) and ref in SHIPPED_WEIGHTS:
        if Path(ref).exists():
            warnings.warn(f"{ref!r} names the shipped {ref} weights, not ./{ref} (give "
                          f"'./{ref}' to load that folder)", stacklevel=3)
        return ref
    return None


def _read(folder) -> tuple[str, dict, dict[str, Tensor]]:
    """``(where, config, tensors)`` of shipped weights (see :func:`shipped_name`) or a folder."""
    name = shipped_name(folder)
    if name is not None:
        config, tensors = read_shipped("lopt.weights", name)
        return f"shipped weights lopt/weights/{name}", config, tensors
    folder = Path(folder)
    if folder.is_file():  # accept the .safetensors or .json path itself
        folder = folder.parent
    if not has_checkpoint(folder, (CONFIG_FILE, WEIGHTS_FILE)):
        raise CheckpointError(
            f"{folder} is not a learned-optimizer checkpoint: expected {CONFIG_FILE} and "
            f"{WEIGHTS_FILE} (written by python -m lopt.meta_train --out {folder}); the shipped "
            f"weights are named {', '.join(map(repr, SHIPPED_WEIGHTS))} or 'shipped'"
        )
    return (str(folder), *_parse_files(read_checkpoint(folder, (CONFIG_FILE, WEIGHTS_FILE)),
                                       folder))


def _parse_files(blobs: dict[str, bytes], folder: Path) -> tuple[dict, dict[str, Tensor]]:
    """``(config, tensors)`` from the contents of ``lopt.json`` and ``lopt.safetensors``."""
    return (parse_json(blobs[CONFIG_FILE].decode(), str(folder / CONFIG_FILE)),
            parse_tensors(blobs[WEIGHTS_FILE], str(folder / WEIGHTS_FILE)))


def learned_optimizer_from_files(blobs: dict[str, bytes], folder: str | os.PathLike,
                                 device: torch.device | str | None = None) -> LearnedOptimizer:
    """The learned optimizer of checkpoint file contents already read from ``folder`` (as
    meta-training's rank 0 reads and broadcasts them); see :func:`load_learned_optimizer`."""
    try:
        config, tensors = _parse_files(blobs, Path(folder))
    except PersistenceError as err:
        raise CheckpointError(str(err)) from None
    return learned_optimizer_from(str(folder), config, tensors, device)


def _net_field_ok(key: str, value) -> bool:
    """Net sizes are positive integers (a context size may be 0); ``read_channels`` a list
    of channel indices or null; ``aggr`` a string; ``context`` (the GMN's global context
    switch) a boolean."""
    if key == "context":
        return isinstance(value, bool)
    if key == "read_channels":
        return value is None or (isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value))
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    zero_ok = key in ("context_channels", "entry_hidden")
    return not isinstance(value, int) or value >= (0 if zero_ok else 1)


def _parse_config(config: dict, where: str) -> tuple[str, dict, UpdateConfig]:
    """``(net_kind, net hparams, update config)``, each field checked; errors name it."""
    where = f"{where}/{CONFIG_FILE}" if not where.startswith("shipped") else where
    kind = config.get("net_kind", "gmn") if isinstance(config, dict) else None
    if kind not in NET_KINDS:
        raise CheckpointError(f"{where}: field 'net_kind' = {kind!r} is not one of "
                              f"{sorted(NET_KINDS)}")
    hp = require(config, "net", dict, where)
    for key, value in hp.items():
        if not _net_field_ok(key, value):
            raise CheckpointError(f"{where}: field 'net.{key}' = {value!r} is not accepted "
                                  "(net sizes are positive integers)")
    raw = require(config, "update", dict, where)
    try:
        update = UpdateConfig.from_dict(raw)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: field 'update' is not accepted: {err}") from err
    return kind, hp, update


def load_learned_optimizer(
    folder: str | os.PathLike | None = None, device: torch.device | str | None = None
) -> LearnedOptimizer:
    """Load a checkpoint folder, or shipped weights: ``None`` or ``"shipped"`` for the
    default, a name of :data:`SHIPPED_WEIGHTS` (``"generalist"``, ``"digits"``) for those
    (:func:`shipped_name` says how a name and a folder of the same name are told apart).

    Raises:
        CheckpointError: files missing or malformed, a config field the code does not accept,
            non-finite tensors, or tensors whose names / shapes do not match the net that the
            JSON config describes; the message names the file and the field.
    """
    try:
        where, config, tensors = _read(folder)
    except PersistenceError as err:
        raise CheckpointError(str(err)) from None
    return learned_optimizer_from(where, config, tensors, device)


def learned_optimizer_from(where: str, config: dict, tensors: dict[str, Tensor],
                           device: torch.device | str | None = None) -> LearnedOptimizer:
    """The learned optimizer of a parsed ``lopt.json`` and ``lopt.safetensors`` (read from
    ``where``, named in errors); see :func:`load_learned_optimizer`."""
    try:
        kind, hp, update = _parse_config(config, where)
    except PersistenceError as err:
        raise CheckpointError(str(err)) from None
    try:
        net = build_net(kind, hp)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: field 'net' = {hp} does not build a {kind}: {err}"
                              ) from err
    scales = init_scales(update)
    expected = {f"net.{k}": v for k, v in net.state_dict().items()}
    expected.update({f"scales.{k}": v for k, v in scales.items()})
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs net {tuple(v.shape)}"
        for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"checkpoint {where} does not match the {kind} described by its config "
            f"{hp}: shape mismatches {wrong[:5]}, missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    # in init_scales' order: the outer learner's Adam state is restored by position
    scales = {k: tensors[f"scales.{k}"].clone() for k in scales}
    extra = {k: v for k, v in config.items() if k not in ("net_kind", "net", "update")}
    lopt = LearnedOptimizer(net, scales, update, kind, extra)
    if device is not None:
        lopt.net.to(device)
        lopt.scales = graph_params.to(lopt.scales, device)
    return lopt
