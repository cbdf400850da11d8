from importlib import resources

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from predict import UnreadableNetworkError, load_predictor
from predict.architectures import ZooCNN, ZooMLP, build_module
from predict.models import GMNPredictor
from predict.shipped import PREDICTORS
from predict.train import kendall_tau, save_gmn_predictor
from predict.zoo import ZooConfig, _sample_hparams, train_group
from tasks import digits_resnet, digits_vit, load_digits_split
from tests.predict.conftest import assert_damage_named


def _shipped(name: str) -> bool:
    return (resources.files("predict") / "weights" / f"{name}.safetensors").is_file()


@pytest.mark.skipif(not _shipped("cnn"), reason="cnn predictor not shipped yet")
def test_cnn_predictor_reads_unseen_widths():
    predictor = load_predictor("cnn")
    for module in (ZooCNN((8, 8)), ZooCNN((5, 7, 9, 6), activation="gelu")):
        acc = predictor(module)
        assert isinstance(acc, float) and 0.0 <= acc <= 1.0


@pytest.mark.skipif(not _shipped("diverse"), reason="diverse predictor not shipped yet")
def test_diverse_predictor_reads_mixed_architectures():
    predictor = load_predictor("diverse")
    torch.manual_seed(0)
    for module in (ZooMLP((24,)), digits_resnet(widths=(6, 6)), digits_vit(depth=1)):
        acc = predictor(module)
        assert isinstance(acc, float) and 0.0 <= acc <= 1.0


@pytest.mark.skipif(not _shipped("cnn"), reason="cnn predictor not shipped yet")
def test_unreadable_modules_raise_clearly():
    predictor = load_predictor("cnn")
    with pytest.raises(UnreadableNetworkError, match="parameter graph"):
        predictor(nn.Bilinear(3, 3, 4))  # no converter
    with pytest.raises(UnreadableNetworkError, match="digit images"):
        predictor(nn.Sequential(nn.Linear(3, 4)))  # cannot read [B, 1, 8, 8]


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown predictor"):
        load_predictor("imagenet")


# ----------------------------------------------------------------------------- predictions
# Networks of each zoo's kind, trained here with the zoo's own hyper-parameter distribution
# (``_sample_hparams``: lr, weight decay, init scale, steps) on two fixed architectures so
# that each trains vectorized in seconds. Measured (single thread): cnn tau 0.73, mean
# |error| 0.052; diverse tau 0.78, mean |error| 0.076. Broken predictors miss the bounds: fresh
# or random weights (mean |error| >= 0.22, tau up to 0.59), the true mean as a constant
# (0.24 / 0.31), the cnn predictor's weights plus noise of their own std (0.108).
TRACKING = {
    "cnn": ([{"family": "zoo_cnn", "kwargs": {"channels": [8, 8], "activation": "relu",
                                              "dropout": 0.0}},
             {"family": "zoo_cnn", "kwargs": {"channels": [4, 4, 4], "activation": "tanh",
                                              "dropout": 0.0}}], 6, 0.09),
    "diverse": ([{"family": "mlp", "kwargs": {"hidden": [32], "activation": "relu"}},
                 {"family": "digits_cnn", "kwargs": {"channels": [8, 8], "norm": None,
                                                     "activation": "relu"}}], 6, 0.12),
}
MIN_TAU = 0.55


def _trained_networks(specs, seed, per_spec=12):
    x, y, _, _ = load_digits_split(0)
    gen = torch.Generator().manual_seed(seed)
    config = ZooConfig(min_steps=20, max_steps=150)
    modules = []
    for i, spec in enumerate(specs):
        hparams = [_sample_hparams(config, gen) for _ in range(per_spec)]
        for params in train_group(spec, hparams, x, y, batch_size=32, seed=i):
            module = build_module(spec)
            module.load_state_dict(params)
            modules.append(module.eval())
    return modules


@pytest.fixture
def one_thread():
    """Small vmapped training is fastest on one thread (and slowest on oversubscribed cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(TRACKING))
def test_shipped_predictions_track_true_accuracies(name, one_thread):
    specs, seed, max_error = TRACKING[name]
    modules = _trained_networks(specs, seed)
    _, _, xt, yt = load_digits_split(0)
    with torch.no_grad():
        true = torch.tensor([(m(xt).argmax(-1) == yt).float().mean().item() for m in modules])
    # the networks span chance to good: guessing their mean accuracy misses the bound
    assert (true - true.mean()).abs().mean() > 1.4 * max_error
    predictor = load_predictor(name)
    pred = torch.tensor([predictor(m) for m in modules])
    assert (pred - true).abs().mean() < max_error, (pred, true)
    assert kendall_tau(pred, true) > MIN_TAU, (pred, true)


# ----------------------------------------------------------------------------- files on disk
@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = GMNPredictor(hidden=8, layers=1, readout="groups")
    save_gmn_predictor(model, tmp_path, "mine", {"hidden": 8, "layers": 1, "readout": "groups"})
    return tmp_path, model


def test_saved_predictor_round_trips(saved):
    folder, model = saved
    assert sorted(p.name for p in folder.iterdir()) == ["mine.json", "mine.safetensors"]
    loaded = load_predictor("mine", folder=folder)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k


PREDICTOR_DAMAGE = {
    "truncated weights": (lambda f: (f / "mine.safetensors").write_bytes(
        (f / "mine.safetensors").read_bytes()[:200]), ["mine.safetensors"]),
    "nan weight": (lambda f: save_file({**load_file(str(f / "mine.safetensors")),
                                        "head.0.bias": torch.full((8,), float("nan"))},
                                       str(f / "mine.safetensors")),
                   ["mine.safetensors", "head.0.bias"]),
    "weights missing": (lambda f: (f / "mine.safetensors").unlink(), ["mine.safetensors"]),
    "config missing": (lambda f: (f / "mine.json").unlink(), ["mine.json"]),
    "config not JSON": (lambda f: (f / "mine.json").write_text("{\"hidden\": 8,"),
                        ["mine.json"]),
    "hidden missing": (lambda f: (f / "mine.json").write_text('{"layers": 1}'),
                       ["mine.json", "hidden"]),
    "hidden zero": (lambda f: (f / "mine.json").write_text('{"hidden": 0, "layers": 1}'),
                    ["mine.json", "hidden"]),
    "unknown readout": (lambda f: (f / "mine.json").write_text(
        '{"hidden": 8, "layers": 1, "readout": "attention"}'), ["mine.json", "readout"]),
    "weights of another size": (lambda f: (f / "mine.json").write_text(
        '{"hidden": 16, "layers": 1, "readout": "groups"}'), ["mine.safetensors", "mine.json"]),
}


@pytest.mark.parametrize("damage", sorted(PREDICTOR_DAMAGE))
def test_damaged_predictor_is_an_error_naming_the_file(damage, saved):
    folder, _ = saved
    corrupt, named = PREDICTOR_DAMAGE[damage]
    assert_damage_named(folder, corrupt, lambda: load_predictor("mine", folder=folder), named)


def test_shipped_files_are_validated_and_describe_their_zoo():
    for name in PREDICTORS:
        predictor = load_predictor(name)
        assert predictor.meta["zoo"] == name and predictor.meta["readout"] == "groups"
        assert 0.5 < predictor.meta["test_r2"] <= 1.0
