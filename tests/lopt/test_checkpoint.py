"""Shipped learned optimizers by name: the default, every name, and a folder that happens to
be called like one."""

import pytest
import torch
from torch import nn

from lopt import (
    SHIPPED_WEIGHTS,
    CheckpointError,
    GMNOptimizer,
    load_learned_optimizer,
    save_learned_optimizer,
)
from lopt.checkpoint import SHIPPED
from tests.lopt.helpers import random_lopt


def _same(a, b) -> bool:
    wa, wb = a.weights(), b.weights()
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa) and all(
        torch.equal(a.scales[k], b.scales[k]) for k in a.scales)


def test_every_shipped_name_loads_and_trains_and_none_is_the_default():
    assert SHIPPED in SHIPPED_WEIGHTS
    default = load_learned_optimizer()
    assert _same(default, load_learned_optimizer("shipped"))
    assert _same(default, load_learned_optimizer(SHIPPED))
    for name in SHIPPED_WEIGHTS:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        before = [p.detach().clone() for p in model.parameters()]
        opt = GMNOptimizer(model, checkpoint=name)
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
        after = list(model.parameters())
        assert all(torch.isfinite(p).all() for p in after)
        assert any(not torch.equal(a, b) for a, b in zip(before, after)), name


def test_a_shipped_name_means_the_shipped_weights_and_a_path_the_folder(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = random_lopt(dtype=torch.float32)
    save_learned_optimizer(mine, tmp_path / "digits")
    with pytest.warns(UserWarning, match=r"'\./digits'"):
        shipped = load_learned_optimizer("digits")
    assert not _same(shipped, mine)
    assert _same(load_learned_optimizer("./digits"), mine)
    assert _same(load_learned_optimizer(tmp_path / "digits"), mine)  # a Path is a path


def test_an_unknown_name_lists_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="not a learned-optimizer checkpoint.*"
                                              "'generalist', 'digits'"):
        load_learned_optimizer("generalst")
