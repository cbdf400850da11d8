import warnings

import pytest
import torch

from lopt import CheckpointError, GMNOptimizer, save_learned_optimizer
from lopt.checkpoint import WEIGHTS_FILE
from tasks import get_task
from tests.lopt.helpers import max_diff, random_lopt, train


@pytest.fixture(scope="module")
def task():
    return get_task("digits_mlp32")


def test_state_dict_resume_matches_uninterrupted_run(task, tmp_path):
    lo = random_lopt(dtype=torch.float32, alpha=3.5e-3, head_std=0.1)
    ref = task.make_model(0)
    train(ref, GMNOptimizer(ref, checkpoint=lo), task, 6)

    model = task.make_model(0)
    opt = GMNOptimizer(model, checkpoint=lo)
    train(model, opt, task, 3)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ck.pt")
    del model, opt
    saved = torch.load(tmp_path / "ck.pt", weights_only=True)
    model = task.make_model(5)
    model.load_state_dict(saved["model"])
    opt = GMNOptimizer(model, checkpoint=lo)
    opt.load_state_dict(saved["opt"])
    train(model, opt, task, 3, start=3)
    assert max_diff(dict(ref.named_parameters()), dict(model.named_parameters())) < 1e-6
    # sensitivity: restoring without the optimizer state gives a different result
    fresh = task.make_model(5)
    fresh.load_state_dict(saved["model"])
    train(fresh, GMNOptimizer(fresh, checkpoint=lo), task, 3, start=3)
    assert max_diff(dict(ref.named_parameters()), dict(fresh.named_parameters())) > 1e-5


def test_non_finite_gradients_never_reach_the_weights(task):
    model = task.make_model(0).double()
    opt = GMNOptimizer(model, checkpoint=random_lopt())
    train(model, opt, task, 1)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    state_before = {k: v.clone() for k, v in opt.state[model.layers[0].weight].items()}
    x, y = task.batch(1, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            opt.zero_grad()
            task.loss(model(x.double()), y).backward()
            model.layers[0].weight.grad[0, 0] = float("nan")
            model.layers[1].bias.grad[0] = float("inf")
            opt.step()
    after = dict(model.named_parameters())
    for k in ("layers.0.weight", "layers.1.bias"):
        assert torch.equal(after[k], before[k])
    for k, v in state_before.items():
        assert torch.equal(opt.state[model.layers[0].weight][k], v)
    assert not torch.equal(after["layers.0.bias"], before["layers.0.bias"])
    assert all(torch.isfinite(v).all() for v in after.values())
    assert sum("non-finite" in str(w.message) for w in caught) == 1


def test_parameters_without_gradient_are_skipped(task):
    model = task.make_model(0).double()
    opt = GMNOptimizer(model, checkpoint=random_lopt())
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    x, y = task.batch(0, 0)
    opt.zero_grad(set_to_none=True)
    task.loss(model(x.double()), y).backward()
    model.layers[1].weight.grad = None
    opt.step()
    assert torch.equal(model.layers[1].weight, before["layers.1.weight"])
    assert model.layers[1].weight not in opt.state
    assert not torch.equal(model.layers[0].weight, before["layers.0.weight"])


def test_closure_returns_the_loss(task):
    model = task.make_model(0)
    opt = GMNOptimizer(model, checkpoint=random_lopt(dtype=torch.float32))
    x, y = task.batch(0, 0)

    def closure():
        opt.zero_grad()
        loss = task.loss(model(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss is not None and torch.isfinite(loss)


def test_checkpoint_folder_round_trip(task, tmp_path):
    lo = random_lopt(dtype=torch.float32)
    save_learned_optimizer(lo, tmp_path)
    m1, m2 = task.make_model(0), task.make_model(0)
    train(m1, GMNOptimizer(m1, checkpoint=lo), task, 2)
    train(m2, GMNOptimizer(m2, checkpoint=str(tmp_path)), task, 2)
    assert max_diff(dict(m1.named_parameters()), dict(m2.named_parameters())) == 0.0


def test_a_non_boolean_gmn_context_switch_is_refused(task, tmp_path):
    save_learned_optimizer(random_lopt(dtype=torch.float32), tmp_path)
    config = tmp_path / "lopt.json"
    text = config.read_text()
    assert '"context": false' in text  # the GMN's switch is saved and read back
    config.write_text(text.replace('"context": false', '"context": 1'))
    with pytest.raises(CheckpointError, match="net.context"):
        GMNOptimizer(task.make_model(0), checkpoint=tmp_path)


def test_shape_mismatched_checkpoint_is_a_clear_error(task, tmp_path):
    save_learned_optimizer(random_lopt(hidden=8, dtype=torch.float32), tmp_path / "a")
    save_learned_optimizer(random_lopt(hidden=16, dtype=torch.float32), tmp_path / "b")
    (tmp_path / "b" / WEIGHTS_FILE).replace(tmp_path / "a" / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match="shape mismatches.*checkpoint"):
        GMNOptimizer(task.make_model(0), checkpoint=tmp_path / "a")
    with pytest.raises(CheckpointError, match="not a learned-optimizer checkpoint"):
        GMNOptimizer(task.make_model(0), checkpoint=tmp_path / "missing")


def test_shipped_weights_load_and_reduce_the_loss(task):
    model = task.make_model(0)
    opt = GMNOptimizer(model)  # the shipped meta-trained default
    assert opt.learned.extra.get("outer_step", 0) > 0, "shipped weights should be meta-trained"
    x, y = task.test_data()
    with torch.no_grad():
        start = float(task.loss(model(x), y))
    train(model, opt, task, 100)
    with torch.no_grad():
        end = float(task.loss(model(x), y))
    assert end < 0.5 * start


def test_shipped_weights_run_on_other_architectures():
    task = get_task("digits_cnn")
    model = task.make_model(0)
    losses = train(model, GMNOptimizer(model), task, 30)
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert sum(losses[-5:]) < sum(losses[:5])


def test_state_buffer_is_allocated_once_when_a_parameter_never_has_a_gradient(task):
    model = task.make_model(0)
    opt = GMNOptimizer(model)
    idle = model.layers[1].bias

    def step(t):
        x, y = task.batch(t, 0)
        opt.zero_grad()
        task.loss(model(x), y).backward()
        idle.grad = None  # e.g. a branch this batch did not take
        opt.step()

    step(0)
    buffer, ptr = opt._flat, opt.state[model.layers[0].weight]["m0"].data_ptr()
    step(1)
    step(2)
    assert opt._flat is buffer  # no re-packing step after step
    assert opt.state[model.layers[0].weight]["m0"].data_ptr() == ptr
    assert not opt.state.get(idle)
