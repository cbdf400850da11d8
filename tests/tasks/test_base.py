import math
from functools import partial

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad

from tasks.base import SupervisedTask, mix_seed
from tasks.data import DataSplit
from tasks.registry import TASKS, get_task

TASK_NAMES = list(TASKS)


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.named_parameters()}


def _toy_task(**kwargs) -> SupervisedTask:
    x = torch.arange(100, dtype=torch.float32)[:, None]
    data = DataSplit(x, x[:, 0].long() % 3, x[:10], x[:10, 0].long() % 3)
    return SupervisedTask("toy", partial(nn.Linear, 1, 3), lambda: data, **kwargs)


def test_mix_seed_is_stable_and_spreads():
    assert mix_seed(1, 2, 3) == mix_seed(1, 2, 3)
    assert 0 <= mix_seed(1, 2, 3) < 2**63
    seeds = {mix_seed(s, t) for s in range(20) for t in range(20)}
    assert len(seeds) == 400
    assert mix_seed(1, 2) != mix_seed(2, 1)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_batches_are_deterministic_and_vary(name):
    task = get_task(name)
    x, y = task.batch(3, 5)
    x2, y2 = task.batch(3, 5)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape[0] == y.shape[0]
    if task.batch_size is not None:
        assert x.shape[0] == task.batch_size
        assert not torch.equal(x, task.batch(4, 5)[0])  # next step
        assert not torch.equal(x, task.batch(3, 6)[0])  # another run
        assert not torch.equal(x, task.batch(3, 5, "valid")[0])
    xt, yt = task.test_data()
    assert xt.shape[1:] == x.shape[1:] and xt.shape[0] == yt.shape[0]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_make_model_is_seeded_and_leaves_global_rng_alone(name):
    task = get_task(name)
    torch.manual_seed(0)
    expected = torch.rand(())
    torch.manual_seed(0)
    a, b, c = _params(task.make_model(1)), _params(task.make_model(1)), _params(task.make_model(2))
    assert torch.rand(()) == expected
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_functional_grad_of_loss(name):
    task = get_task(name)
    model = task.make_model(0)
    assert len(list(model.buffers())) == 0  # no BatchNorm running statistics to mutate
    params = _params(model)
    x, y = task.batch(0, 0)

    def loss_fn(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return task.loss(functional_call(model, p, (x,)), y)

    grads = grad(loss_fn)(params)
    assert grads.keys() == params.keys()
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    loss = loss_fn(params)
    assert loss.ndim == 0 and 0 < float(loss) < task.loss_clip


@pytest.mark.parametrize("name", TASK_NAMES)
def test_adam_reduces_loss(name):
    task = get_task(name)
    model = task.make_model(0)
    x, y = task.batch(0, 0)
    lr = 1e-4 if name == "siren_image" else 1e-2
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with torch.no_grad():
        before = float(task.loss(model(x), y))
    for _ in range(15):
        opt.zero_grad()
        task.loss(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        after = float(task.loss(model(x), y))
    assert after < 0.9 * before


def test_train_and_valid_pools_are_disjoint():
    task = _toy_task(batch_size=None, valid_fraction=0.2)
    x_train, _ = task.batch(0, 0, "train")
    x_valid, _ = task.batch(0, 0, "valid")
    assert x_train.shape[0] == 80 and x_valid.shape[0] == 20
    assert set(x_train[:, 0].tolist()).isdisjoint(x_valid[:, 0].tolist())
    minibatch, _ = _toy_task(batch_size=10).batch(7, 1, "valid")
    assert minibatch.shape[0] == 10 and minibatch.min() >= 80
    assert minibatch[:, 0].unique().numel() == 10  # drawn without replacement


def test_resplit_partitions_the_train_set_by_seed_and_keeps_the_test_set():
    task = _toy_task(batch_size=None, valid_fraction=0.2)
    parts = {}
    for seed in (0, 1):
        re = task.resplit(seed)
        x_train, _ = re.batch(0, 0, "train")
        x_valid, y_valid = re.batch(0, 0, "valid")
        train, valid = set(x_train[:, 0].tolist()), set(x_valid[:, 0].tolist())
        assert len(train) == 80 and len(valid) == 20 and train.isdisjoint(valid)
        assert train | valid == set(range(100))  # a partition of the train set
        assert torch.equal(y_valid, x_valid[:, 0].long() % 3)  # inputs keep their targets
        assert torch.equal(re.batch(0, 0, "valid")[0], x_valid)  # deterministic
        assert all(torch.equal(a, b) for a, b in zip(re.test_data(), task.test_data()))
        parts[seed] = valid
    assert parts[0] != parts[1] and parts[0] != set(range(80, 100))
    assert task.split_seed is None and task.resplit(0) == task.resplit(0)


def test_fitting_task_valid_is_train():
    task = get_task("siren_image")
    x_train, y_train = task.batch(0, 0)
    x_valid, y_valid = task.batch(0, 0, "valid")
    assert torch.equal(x_train, x_valid) and x_train.shape == (784, 2)
    assert task.num_classes is None and task.loss_clip == 1.0


def test_loss_clip_and_accuracy():
    task = get_task("digits_mlp32")
    assert task.loss_clip == pytest.approx(1.5 * math.log(10))
    assert get_task("seq_transformer").loss_clip == pytest.approx(1.5 * math.log(2))
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert float(task.accuracy(logits, torch.tensor([0, 1, 1]))) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        get_task("siren_image").accuracy(logits, torch.tensor([0, 1, 1]))


def test_invalid_configs_and_splits():
    with pytest.raises(ValueError):
        _toy_task(valid_fraction=1.0)
    with pytest.raises(ValueError):
        _toy_task(batch_size=0)
    with pytest.raises(ValueError):
        _toy_task().batch(0, 0, "test")  # type: ignore[arg-type]


def test_tasks_are_immutable_values():
    task = get_task("digits_mlp32")
    assert task == get_task("digits_mlp32")
    with pytest.raises(AttributeError):
        task.batch_size = 4  # type: ignore[misc]
