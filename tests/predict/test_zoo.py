import math

import pytest
import torch

from predict.architectures import build_module
from predict.zoo import LABELS, ZooConfig, build_zoo, evaluate_module, train_group, zoo_folder
from tasks import load_digits_split
from tests.predict.conftest import TINY


@pytest.mark.parametrize("name", ["cnn_zoo", "diverse_zoo"])
def test_labels_are_true_accuracies(name, request):
    zoo = request.getfixturevalue(name)
    _, _, xt, yt = load_digits_split(zoo.config.data_seed)
    for i in range(0, len(zoo), 3):
        m = build_module(zoo.records[i]["spec"])  # rebuilt from the spec alone
        m.load_state_dict(zoo.states[i])
        acc, loss = evaluate_module(m, xt, yt)
        manual = (m(xt).argmax(-1) == yt).float().mean().item()
        assert acc == pytest.approx(zoo.records[i]["labels"]["test_acc"], abs=1e-6)
        assert manual == pytest.approx(acc, abs=1e-6)
        assert 0.0 <= acc <= 1.0 and math.isfinite(loss)


def test_records_and_graphs(diverse_zoo):
    zoo = diverse_zoo
    assert len(zoo) == TINY["size"]
    for i in range(len(zoo)):
        rec = zoo.records[i]
        assert set(rec) == {"spec", "hparams", "labels"}
        assert set(rec["labels"]) == set(LABELS)
        assert set(rec["hparams"]) >= {"lr", "weight_decay", "init_scale", "steps"}
        pg, params = zoo.graph(i), zoo.params(i)
        assert pg.flatten_params(params).isfinite().all()
        out = zoo.module(i)(torch.zeros(2, 1, 8, 8))
        assert out.shape == (2, 10)
    assert len(set(zoo.families())) > 1


def test_cached_once(cnn_zoo, zoo_cache):
    config = ZooConfig(kind="cnn", **TINY)
    assert (zoo_folder(config, zoo_cache) / "zoo.safetensors").exists()
    again = build_zoo(config, root=zoo_cache, progress=False)  # loads, does not retrain
    assert again.records == cnn_zoo.records
    for a, b in zip(again.states, cnn_zoo.states):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_vectorized_training_learns():
    # two MLPs trained together (vmap) with their own lr / budget: both well above chance
    x, y, xt, yt = load_digits_split(0)
    spec = {"family": "mlp", "kwargs": {"hidden": [32], "activation": "relu"}}
    hps = [{"lr": 1e-2, "weight_decay": 1e-4, "init_scale": 1.0, "steps": s, "seed": s}
           for s in (60, 40)]  # fmt: skip
    for params in train_group(spec, hps, x, y, batch_size=32, seed=0):
        m = build_module(spec)
        m.load_state_dict(params)
        assert evaluate_module(m, xt, yt)[0] > 0.6
