"""The held-out suite stays held out: meta-training's task distributions share none of its
architectures and never train on one of its test examples."""

from __future__ import annotations

import pytest
import torch

from lopt.suite import HELD_OUT_SUITE
from tasks import get_family, get_task

META_TRAINING = ["digits_small_mlp_family", "generalist_mix"]
"""The families the shipped and the issue-15 learned optimizers meta-train on."""


def _architecture(task) -> tuple:
    model = task.make_model(0)
    return (type(model).__name__,
            tuple((n, tuple(p.shape)) for n, p in model.named_parameters()))


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(len(x), -1).float()}


@pytest.fixture(scope="module")
def held_out():
    tasks = [get_task(name) for name in HELD_OUT_SUITE]
    return ({_architecture(t) for t in tasks},
            [(t.name, _rows(t.data().x_test)) for t in tasks])


@pytest.mark.parametrize("family", META_TRAINING)
def test_meta_training_shares_no_architecture_and_no_test_example_with_the_suite(
        family, held_out):
    architectures, test_rows = held_out
    seen_data = set()
    for seed in range(150):
        task = get_family(family).sample(seed)
        assert _architecture(task) not in architectures, task.name
        data = task.data()
        if id(data) in seen_data:  # loaders are cached: one check per distinct dataset
            continue
        seen_data.add(id(data))
        train = _rows(data.x_train)
        for name, rows in test_rows:
            assert not train & rows, f"{task.name} trains on test examples of {name}"
