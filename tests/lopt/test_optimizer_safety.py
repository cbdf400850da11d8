"""GMNOptimizer on bad numbers and bad input: nothing non-finite spreads, bad hyper-parameters
and foreign state dicts are refused before anything changes, every floating dtype works, and
torch.distributed.checkpoint's optimizer state dicts resume the step counter."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from lopt import GMNOptimizer
from tests.lopt.helpers import random_lopt


class Tagger(nn.Module):
    """Token embedding -> MLP: a table whose rows only some batches use."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, tokens):
        return self.fc2(torch.relu(self.fc1(self.emb(tokens).mean(1))))


def _mlp(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).to(dtype)


def _step(model, opt, x):
    opt.zero_grad()
    model(x).float().pow(2).mean().backward()
    opt.step()


def _lopt():
    return random_lopt(dtype=torch.float32, alpha=3.5e-3, head_std=0.1)


def test_a_nan_in_an_unused_row_stays_in_its_tensor():
    torch.manual_seed(0)
    model = Tagger()
    with torch.no_grad():
        model.emb.weight[9] = float("nan")  # a row no batch reads: loss and gradients finite
    opt = GMNOptimizer(model, checkpoint=_lopt())
    before = copy.deepcopy(model.state_dict())
    tokens = torch.randint(0, 9, (16, 5))
    with pytest.warns(RuntimeWarning, match="'emb.weight'"):
        _step(model, opt, tokens)
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        p = model.get_parameter(name)
        assert bool(torch.isfinite(p).all()) and not torch.equal(p, before[name]), name
    assert torch.equal(model.emb.weight.nan_to_num(7.0), before["emb.weight"].nan_to_num(7.0))


def test_huge_finite_gradients_give_a_finite_update():
    model = _mlp()
    opt = GMNOptimizer(model, checkpoint=_lopt())
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e20)  # squares overflow float32
    opt.step()
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


@pytest.mark.parametrize("name", ["lr", "weight_decay"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1e-3])
def test_bad_hyper_parameters_are_refused(name, value):
    model = _mlp()
    with pytest.raises(ValueError, match=f"invalid {name}"):
        GMNOptimizer(model, checkpoint=_lopt(), **{name: value})
    opt = GMNOptimizer(model, checkpoint=_lopt())
    opt.param_groups[0][name] = value  # as a scheduler could
    model(torch.randn(3, 4)).sum().backward()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=f"invalid {name}"):
        opt.step()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_foreign_state_dicts_are_refused_before_anything_changes():
    model = _mlp()
    x = torch.randn(8, 4)
    opt = GMNOptimizer(model, checkpoint=_lopt())
    _step(model, opt, x)
    mine = copy.deepcopy(opt.state_dict())
    adam = torch.optim.Adam(model.parameters())
    _step(model, adam, x)
    with pytest.raises(ValueError, match="not a GMNOptimizer state"):
        opt.load_state_dict(adam.state_dict())
    other = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    other_opt = GMNOptimizer(other, checkpoint=_lopt())
    _step(other, other_opt, x)
    with pytest.raises(ValueError, match="another model"):
        opt.load_state_dict(other_opt.state_dict())
    with pytest.raises(ValueError, match="lopt_step"):
        opt.load_state_dict({**mine, "lopt_step": -1})
    after = opt.state_dict()
    assert after["lopt_step"] == mine["lopt_step"] == 1
    for i, st in mine["state"].items():
        assert all(torch.equal(v, after["state"][i][k]) for k, v in st.items())


def test_distributed_checkpoint_state_dicts_resume_the_step_counter():
    x = torch.randn(8, 4)
    ref = _mlp()
    ref_opt = GMNOptimizer(ref, checkpoint=_lopt())
    for _ in range(6):
        _step(ref, ref_opt, x)
    model = _mlp()
    opt = GMNOptimizer(model, checkpoint=_lopt())
    for _ in range(3):
        _step(model, opt, x)
    saved = get_optimizer_state_dict(model, opt)  # drops top-level keys such as lopt_step
    twin = _mlp()
    twin.load_state_dict(model.state_dict())
    twin_opt = GMNOptimizer(twin, checkpoint=_lopt())
    set_optimizer_state_dict(twin, twin_opt, saved)
    assert twin_opt.state_dict()["lopt_step"] == 3
    for _ in range(3):
        _step(twin, twin_opt, x)
    for p, q in zip(ref.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_every_floating_dtype_trains_and_keeps_its_dtype(dtype):
    model = _mlp(dtype)
    opt = GMNOptimizer(model, checkpoint=_lopt())
    x = torch.randn(8, 4, dtype=dtype)
    before = copy.deepcopy(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no non-finite warning either
        for _ in range(3):
            _step(model, opt, x)
    for name, p in model.named_parameters():
        assert p.dtype == dtype and bool(torch.isfinite(p).all()), name
        assert not torch.equal(p, before[name]), name


def test_mixed_dtypes_in_one_model_and_in_its_gradients():
    model = _mlp()
    model[2].double()
    opt = GMNOptimizer(model, checkpoint=_lopt())
    x = torch.randn(8, 4)
    opt.zero_grad()
    model[2](model[1](model[0](x)).double()).pow(2).mean().backward()
    model[0].weight.grad_dtype = None  # torch allows a float64 gradient on a float32 weight
    model[0].weight.grad = model[0].weight.grad.double()
    opt.step()
    assert model[0].weight.dtype == torch.float32 and model[2].weight.dtype == torch.float64
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_checkpoints_with_non_finite_weights_or_bad_config_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from lopt import CheckpointError, save_learned_optimizer
    from lopt.checkpoint import CONFIG_FILE, WEIGHTS_FILE

    save_learned_optimizer(_lopt(), tmp_path / "inf")
    tensors = load_file(tmp_path / "inf" / WEIGHTS_FILE)
    tensors["scales.log_alpha"] = torch.full_like(tensors["scales.log_alpha"], float("inf"))
    save_file(tensors, tmp_path / "inf" / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match="log_alpha.*non-finite"):
        GMNOptimizer(_mlp(), checkpoint=tmp_path / "inf")
    save_learned_optimizer(_lopt(), tmp_path / "decay")
    config = json.loads((tmp_path / "decay" / CONFIG_FILE).read_text())
    config["update"]["second_moment_decay"] = 1.0
    (tmp_path / "decay" / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"decay must be in \[0, 1\)"):
        GMNOptimizer(_mlp(), checkpoint=tmp_path / "decay")
