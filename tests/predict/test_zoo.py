import json
import math
import os
import shutil
from functools import partial

import pytest
import torch
from safetensors.torch import load_file, save_file

from common.persistence import PersistenceError, has_checkpoint
from predict.architectures import build_module
from predict.zoo import (
    LABELS,
    ZOO_FILES,
    Zoo,
    ZooConfig,
    build_zoo,
    evaluate_module,
    main,
    train_group,
    zoo_folder,
)
from tasks import load_digits_split
from tests.predict.conftest import TINY, assert_damage_named


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
           for s in (60, 40)]
    for params in train_group(spec, hps, x, y, batch_size=32, seed=0):
        m = build_module(spec)
        m.load_state_dict(params)
        assert evaluate_module(m, xt, yt)[0] > 0.6


# ----------------------------------------------------------------------------- the cache on disk
CNN = ZooConfig(kind="cnn", **TINY)


@pytest.fixture
def zoo_copy(cnn_zoo, zoo_cache, tmp_path):
    """A copy of the tiny cnn zoo's cache folder under ``tmp_path`` (the root) and its folder."""
    folder = zoo_folder(CNN, tmp_path)
    shutil.copytree(zoo_folder(CNN, zoo_cache), folder)
    return tmp_path, folder


def test_cache_holds_exactly_one_checkpoint(cnn_zoo, zoo_cache):
    folder = zoo_folder(CNN, zoo_cache)
    assert sorted(p.name for p in folder.iterdir()) == ["build.json", "zoo.json",
                                                         "zoo.safetensors"]
    assert json.loads((folder / "build.json").read_text())["groups"] >= 1


def _edit_json(path, edit):
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _edit_tensors(path, edit):
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


CORRUPTIONS = {
    "truncated tensors": (lambda f: (f / "zoo.safetensors").write_bytes(
        (f / "zoo.safetensors").read_bytes()[:1000]), ["zoo.safetensors"]),
    "nan tensor": (lambda f: _edit_tensors(f / "zoo.safetensors", lambda t: t[
        "2.classifier.bias"].fill_(float("nan"))), ["zoo.safetensors", "2.classifier.bias"]),
    "missing tensor": (lambda f: _edit_tensors(f / "zoo.safetensors", lambda t: t.pop(
        "3.classifier.weight")), ["zoo.safetensors", "3.classifier.weight"]),
    "misshapen tensor": (lambda f: _edit_tensors(f / "zoo.safetensors", lambda t: t.update(
        {"1.classifier.bias": torch.zeros(3)})), ["zoo.safetensors", "1.classifier.bias"]),
    "truncated index": (lambda f: (f / "zoo.json").write_text(
        (f / "zoo.json").read_text()[:500]), ["zoo.json"]),
    "missing label": (lambda f: _edit_json(f / "zoo.json", lambda m: m["records"][2][
        "labels"].pop("test_acc")), ["zoo.json", "records[2]", "test_acc"]),
    "non-finite label": (lambda f: _edit_json(f / "zoo.json", lambda m: m["records"][4][
        "labels"].update(train_loss=float("inf"))), ["zoo.json", "records[4]", "train_loss"]),
    "missing network": (lambda f: _edit_json(f / "zoo.json", lambda m: m["records"].pop()),
                        ["zoo.json", "records"]),
    "unknown family": (lambda f: _edit_json(f / "zoo.json", lambda m: m["records"][0][
        "spec"].update(family="lstm")), ["zoo.json", "records[0]", "family"]),
    "bad config": (lambda f: _edit_json(f / "zoo.json", lambda m: m["config"].update(
        batch_size=0)), ["zoo.json", "config", "--batch-size"]),
}


@pytest.mark.parametrize("damage", sorted(CORRUPTIONS))
def test_damaged_cache_is_an_error_naming_the_file(damage, zoo_copy):
    root, folder = zoo_copy
    corrupt, named = CORRUPTIONS[damage]
    load = partial(build_zoo, CNN, root=root, progress=False)
    assert_damage_named(folder, corrupt, load, ["--rebuild", *named])


def test_killed_save_leaves_no_zoo_a_later_load_trusts(cnn_zoo, tmp_path, monkeypatch):
    folder = tmp_path / "zoo"

    def killed(*args, **kwargs):  # dies at the commit point, every file already written
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(os, "rename", killed)
        with pytest.raises(KeyboardInterrupt):
            cnn_zoo.save(folder, {"seconds": 1.0})
    assert not has_checkpoint(folder, ZOO_FILES)
    with pytest.raises(PersistenceError, match="zoo.json"):
        Zoo.load(folder)
    cnn_zoo.save(folder, {"seconds": 1.0})  # the next save drops the unfinished one
    again = Zoo.load(folder)
    assert again.records == cnn_zoo.records
    assert sorted(p.name for p in folder.iterdir()) == ["build.json", "zoo.json",
                                                         "zoo.safetensors"]


def test_cache_of_another_config_is_refused(zoo_copy):
    root, folder = zoo_copy
    _edit_json(folder / "zoo.json", lambda m: m["config"].update(data_seed=5))
    with pytest.raises(PersistenceError, match="another config"):
        build_zoo(CNN, root=root, progress=False)


def test_command_line_loads_the_cached_zoo(cnn_zoo, zoo_cache, capsys):
    zoo = main(["--kind", "cnn", "--size", str(TINY["size"]), "--seed", str(TINY["seed"]),
                "--min-steps", str(TINY["min_steps"]), "--max-steps", str(TINY["max_steps"]),
                "--cache", str(zoo_cache), "--quiet"])
    assert zoo.records == cnn_zoo.records
    info = json.loads(capsys.readouterr().out)
    assert info["size"] == TINY["size"] and info["folder"] == str(zoo_folder(CNN, zoo_cache))
