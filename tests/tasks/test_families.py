import pytest
import torch

from tasks.architectures import MLP, DigitsCNN
from tasks.base import Task
from tasks.families import FAMILIES, CNNFamily, MLPFamily, get_family


@pytest.mark.parametrize("name", list(FAMILIES))
def test_sampling_is_deterministic_and_diverse(name):
    family = get_family(name)
    a, b = family.sample(3), family.sample(3)
    assert isinstance(a, Task) and a.name == b.name and a.name.startswith(name + "/")
    pa, pb = a.make_model(0).state_dict(), b.make_model(0).state_dict()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    names = {family.sample(s).name for s in range(20)}
    assert len(names) >= 5


def test_mlp_family_draws_from_its_options():
    family = MLPFamily("f", widths=(16, 64), depths=(1, 3), activations=("tanh",))
    for seed in range(10):
        task = family.sample(seed)
        model = task.make_model(0)
        assert isinstance(model, MLP)
        hidden = [layer.out_features for layer in model.layers[:-1]]
        assert len(hidden) in (1, 3) and set(hidden) <= {16, 64} and len(set(hidden)) == 1
        assert all(isinstance(act, torch.nn.Tanh) for act in model.acts)
        x, y = task.batch(0, seed)
        assert model(x).shape == (128, 10)


def test_cnn_family_models_run():
    family = CNNFamily("c")
    for seed in range(5):
        task = family.sample(seed)
        model = task.make_model(seed)
        assert isinstance(model, DigitsCNN)
        x, y = task.batch(0, seed)
        assert task.loss(model(x), y).ndim == 0


def test_data_seed_changes_the_data():
    family = MLPFamily("f", widths=(16,), depths=(1,), activations=("relu",))
    by_seed = {}
    for seed in range(20):
        task = family.sample(seed)
        by_seed.setdefault(task.name, task)
    assert len(by_seed) >= 2
    t1, t2 = list(by_seed.values())[:2]
    assert not torch.equal(t1.test_data()[1], t2.test_data()[1])


def test_unknown_family():
    with pytest.raises(KeyError):
        get_family("nope")
