"""Shipped accuracy predictors: ``predict.load_predictor("cnn")(module) -> float``.

The weights live in ``predict/weights/<name>.safetensors`` + ``<name>.json`` (package data,
read by ``common.persistence.read_shipped``); ``python -m predict.train --save-weights
predict/weights --overwrite`` writes them (the GMN of the 50 % split, seed 0, of each zoo).
Both are validated on load: finite tensors, a config naming a GMN predictor, and weights that
fit it; anything else is a :class:`common.persistence.PersistenceError` naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from common.errors import UserError
from common.persistence import (
    PersistenceError,
    checkpoint_file,
    load_tensors,
    read_json,
    read_shipped,
    require,
)
from graphs import GraphConstructionError, ParameterGraph
from graphs import params as P
from predict.models import GMN_READOUTS, GMNPredictor

__all__ = ["PREDICTORS", "AccuracyPredictor", "UnreadableNetworkError", "load_predictor"]

PREDICTORS = ("cnn", "diverse")
SHIPPED_PACKAGE = "predict.weights"


class UnreadableNetworkError(UserError):
    """The module cannot be read by a predictor (no parameter graph, or not a digits model)."""


@dataclass
class AccuracyPredictor:
    """A trained GMN predictor of a digits classifier's test accuracy.

    Attributes:
        model: the :class:`predict.models.GMNPredictor`.
        meta: its JSON metadata (zoo, training config, test R2 / tau).
    """

    model: GMNPredictor
    meta: dict[str, Any]

    @torch.no_grad()
    def __call__(self, module: nn.Module) -> float:
        """Predicted test accuracy (in ``[0, 1]``) of ``module``: ``[B, 1, 8, 8] -> [B, 10]``.

        Any architecture the parameter graph can trace is accepted (other widths and depths
        than the zoo's). Raises :class:`UnreadableNetworkError` otherwise.
        """
        try:
            pg = ParameterGraph.from_module(module)
        except GraphConstructionError as err:
            raise UnreadableNetworkError(
                f"cannot build a parameter graph of {type(module).__name__}: {err}"
            ) from err
        was_training = module.training
        module.eval()
        try:
            out = module(torch.zeros(2, 1, 8, 8, device=_device_of(module)))
        except Exception as err:  # any failure means it is not an 8x8-digits classifier
            raise UnreadableNetworkError(
                f"{type(module).__name__} does not map [B, 1, 8, 8] digit images to logits: {err}"
            ) from err
        finally:
            module.train(was_training)
        if tuple(out.shape) != (2, 10):
            raise UnreadableNetworkError(
                f"expected logits [B, 10] for images [B, 1, 8, 8], got {tuple(out.shape)}"
            )
        params = P.to(P.detach(dict(module.named_parameters())), "cpu", torch.float32)
        device = next(self.model.parameters()).device
        data = pg.encode(params).to(device)
        return float(self.model(data)[0])

    def to(self, device: torch.device | str) -> AccuracyPredictor:
        self.model.to(device)
        return self


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def load_predictor(name: str = "cnn", folder: str | Path | None = None) -> AccuracyPredictor:
    """A shipped predictor (``"cnn"``: varying-CNN zoo, ``"diverse"``: mixed architectures).

    ``folder`` loads ``<folder>/<name>.safetensors`` + ``.json`` instead (e.g. the
    ``--save-weights`` folder of ``python -m predict.train``).

    Raises:
        UserError: ``name`` is not a shipped predictor (and no ``folder`` was given).
        PersistenceError: a file is missing or malformed; the message names it.
    """
    if folder is None:
        if name not in PREDICTORS:
            raise UserError(f"unknown predictor {name!r}; shipped: {PREDICTORS}")
        meta, state = read_shipped(SHIPPED_PACKAGE, name)
        where = f"{SHIPPED_PACKAGE}/{name}"
        return _predictor(meta, state, f"{where}.json", f"{where}.safetensors")
    config = checkpoint_file(folder, f"{name}.json")  # through an unfinished save, if any
    weights = checkpoint_file(folder, f"{name}.safetensors")
    meta = read_json(config, what="predictor config")
    return _predictor(meta, load_tensors(weights), str(config), str(weights))


def _predictor(meta: Any, state: Mapping[str, Tensor], config: str,
               weights: str) -> AccuracyPredictor:
    """A :class:`GMNPredictor` described by ``meta`` holding ``state``; errors name the files."""
    hidden = require(meta, "hidden", int, config, check=lambda v: v > 0, why="a positive int")
    layers = require(meta, "layers", int, config, check=lambda v: v > 0, why="a positive int")
    readout = "mean"  # predictors saved before the readout was configurable
    if isinstance(meta, Mapping) and "readout" in meta:
        readout = require(meta, "readout", str, config, check=GMN_READOUTS.__contains__,
                          why=f"one of {GMN_READOUTS}")
    model = GMNPredictor(hidden=hidden, layers=layers, readout=readout)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        problem = " ".join(str(err).split())
        raise PersistenceError(
            f"{weights} does not hold the weights of the predictor {config} describes "
            f"(hidden {hidden}, layers {layers}, readout {readout!r}): {problem[:300]}"
        ) from None
    return AccuracyPredictor(model.eval(), dict(meta))
