"""Shipped accuracy predictors: ``predict.load_predictor("cnn")(module) -> float``.

The weights live in ``predict/weights/<name>.safetensors`` + ``<name>.json`` (package data,
read through ``importlib.resources``); ``python -m predict.train --save-weights
predict/weights`` writes them (the GMN of the 50 % split, seed 0, of each zoo).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from graphs import GraphConstructionError, ParameterGraph
from predict.models import GMNPredictor

__all__ = ["PREDICTORS", "AccuracyPredictor", "UnreadableNetworkError", "load_predictor"]

PREDICTORS = ("cnn", "diverse")


class UnreadableNetworkError(ValueError):
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
        params = {k: v.detach().float().cpu() for k, v in module.named_parameters()}
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
    """
    if folder is None and name not in PREDICTORS:
        raise ValueError(f"unknown predictor {name!r}; shipped: {PREDICTORS}")
    if folder is None:
        root = resources.files("predict") / "weights"
        meta_text = (root / f"{name}.json").read_text()
        with resources.as_file(root / f"{name}.safetensors") as path:
            state = load_file(str(path))
    else:
        meta_text = (Path(folder) / f"{name}.json").read_text()
        state = load_file(str(Path(folder) / f"{name}.safetensors"))
    meta = json.loads(meta_text)
    model = GMNPredictor(
        hidden=meta["hidden"], layers=meta["layers"], readout=meta.get("readout", "mean")
    )
    model.load_state_dict(state)
    return AccuracyPredictor(model.eval(), meta)
