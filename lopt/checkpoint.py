"""Learned-optimizer weights on disk: safetensors plus a JSON config, never pickle.

A checkpoint folder (what ``python -m lopt.meta_train --out FOLDER`` writes, and the shipped
``lopt/weights/``) holds::

    lopt.safetensors   net weights under "net.*", meta-learned scalars under "scales.*"
    lopt.json          {"net_kind", "net": hparams, "update": UpdateConfig, ...extra}

Files are written atomically (temporary file, then ``os.replace``), so a killed run never
leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lopt.nets import build_net
from lopt.update import UpdateConfig, init_scales

__all__ = [
    "CheckpointError",
    "LearnedOptimizer",
    "atomic_write_json",
    "atomic_save_tensors",
    "load_learned_optimizer",
    "save_learned_optimizer",
    "SHIPPED",
]

WEIGHTS_FILE = "lopt.safetensors"
CONFIG_FILE = "lopt.json"
SHIPPED = "default"
"""Name of the shipped checkpoint inside the ``lopt.weights`` package."""


class CheckpointError(ValueError):
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
              update: UpdateConfig | None = None, seed: int = 0) -> LearnedOptimizer:  # fmt: skip
        """An untrained learned optimizer (behaves exactly like Adam, step ``alpha_init``)."""
        update = update or UpdateConfig()
        hp = dict(in_channels=update.in_channels, out_channels=update.out_channels,
                  hidden=hidden, layers=layers)  # fmt: skip
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
                                                       device=ref.device)  # fmt: skip

    def weights(self) -> dict[str, Tensor]:
        """The net's parameters and buffers as a flat dict (for ``functional_call``)."""
        return {**dict(self.net.named_parameters()), **dict(self.net.named_buffers())}

    def config(self) -> dict:
        return {"net_kind": self.net_kind, "net": self.net.hparams(),
                "update": asdict(self.update), **self.extra}  # fmt: skip


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON to ``path`` via a temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def atomic_save_tensors(path: str | os.PathLike, tensors: Mapping[str, Tensor],
                        metadata: Mapping[str, str] | None = None) -> None:  # fmt: skip
    """``safetensors`` save via a temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
              metadata=dict(metadata) if metadata else None)  # fmt: skip
    os.replace(tmp, path)


def save_learned_optimizer(lopt: LearnedOptimizer, folder: str | os.PathLike) -> Path:
    """Write ``lopt.safetensors`` and ``lopt.json`` into ``folder`` (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v for k, v in lopt.weights().items()}
    tensors.update({f"scales.{k}": v for k, v in lopt.scales.items()})
    atomic_save_tensors(folder / WEIGHTS_FILE, tensors)
    atomic_write_json(folder / CONFIG_FILE, lopt.config())
    return folder


def _read(folder) -> tuple[dict, dict[str, Tensor]]:
    if folder is None:
        pkg = resources.files("lopt.weights")
        config_text = pkg.joinpath(f"{SHIPPED}.json").read_text()
        with resources.as_file(pkg.joinpath(f"{SHIPPED}.safetensors")) as p:
            tensors = load_file(str(p))
        return json.loads(config_text), tensors
    folder = Path(folder)
    if folder.is_file():  # accept the .safetensors or .json path itself
        folder = folder.parent
    cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.exists() or not w_path.exists():
        raise CheckpointError(
            f"{folder} is not a learned-optimizer checkpoint: expected {CONFIG_FILE} and "
            f"{WEIGHTS_FILE} (written by python -m lopt.meta_train --out {folder})"
        )
    return json.loads(cfg_path.read_text()), load_file(str(w_path))


def load_learned_optimizer(
    folder: str | os.PathLike | None = None, device: torch.device | str | None = None
) -> LearnedOptimizer:
    """Load a checkpoint folder, or the shipped weights when ``folder`` is ``None``.

    Raises:
        CheckpointError: files missing, or tensors whose names / shapes do not match the net
            that the JSON config describes.
    """
    config, tensors = _read(folder)
    try:
        update = UpdateConfig.from_dict(config["update"])
        kind = config.get("net_kind", "gmn")
        net = build_net(kind, config["net"])
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"malformed learned-optimizer config: {err}") from err
    scales = init_scales(update)
    expected = {f"net.{k}": v for k, v in net.state_dict().items()}
    expected.update({f"scales.{k}": v for k, v in scales.items()})
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs net {tuple(v.shape)}"
        for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape
    ]  # fmt: skip
    if missing or unexpected or wrong:
        where = "shipped weights" if folder is None else str(folder)
        raise CheckpointError(
            f"checkpoint {where} does not match the {kind} described by its config "
            f"{config['net']}: shape mismatches {wrong[:5]}, missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    scales = {k[7:]: v.clone() for k, v in tensors.items() if k.startswith("scales.")}
    extra = {k: v for k, v in config.items() if k not in ("net_kind", "net", "update")}
    lopt = LearnedOptimizer(net, scales, update, kind, extra)
    if device is not None:
        lopt.net.to(device)
        lopt.scales = {k: v.to(device) for k, v in lopt.scales.items()}
    return lopt
