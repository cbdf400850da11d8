import math

import pytest
import torch
from torch.func import functional_call

from graphs import ParameterGraph
from graphs.permutation import node_permutation, permute_parameters
from lopt import (
    GMNOptimizer,
    LearnedOptimizer,
    UpdateConfig,
    init_scales,
    init_state,
    learned_update,
)
from lopt.checkpoint import load_learned_optimizer, save_learned_optimizer
from lopt.estimators import es_estimate, tbptt_estimate
from lopt.features import gradient_agreement, tensor_stats
from lopt.unroll import clipped_loss, new_inner_run, unroll
from tasks import get_task
from tests.lopt.helpers import max_diff, random_lopt, train


@pytest.fixture(scope="module")
def task():
    return get_task("digits_mlp32")


@pytest.mark.parametrize("kind,stats", [("gmn", False), ("neuron", False), ("neuron", True)])
def test_fresh_learned_optimizer_is_adam(task, kind, stats):
    m1 = task.make_model(0).double()
    m2 = task.make_model(0).double()
    lo = LearnedOptimizer.fresh(kind, update=UpdateConfig(alpha_init=3.5e-3, tensor_stats=stats))
    lo.scales = init_scales(lo.update, torch.float64)  # float32 log(alpha) would round alpha
    train(m1, GMNOptimizer(m1, checkpoint=lo), task, 5)
    train(m2, torch.optim.Adam(m2.parameters(), lr=3.5e-3), task, 5)
    assert max_diff(dict(m1.named_parameters()), dict(m2.named_parameters())) < 1e-10


def test_fresh_learned_optimizer_with_learned_weight_decay_is_adamw(task):
    m1 = task.make_model(0).double()
    m2 = task.make_model(0).double()
    lo = LearnedOptimizer.fresh(update=UpdateConfig(alpha_init=3.5e-3, weight_decay_init=0.3))
    lo.scales = init_scales(lo.update, torch.float64)
    assert set(lo.scales) == {"log_alpha", "log_beta_dir", "log_beta_scale", "log_weight_decay"}
    train(m1, GMNOptimizer(m1, checkpoint=lo, weight_decay=0.2), task, 5)
    # the user's decoupled decay adds to the learned one
    train(m2, torch.optim.AdamW(m2.parameters(), lr=3.5e-3, weight_decay=0.5), task, 5)
    assert max_diff(dict(m1.named_parameters()), dict(m2.named_parameters())) < 1e-10


@pytest.mark.parametrize("kind", ["gmn", "neuron"])
def test_a_fresh_normalised_update_moves_every_tensor_by_alpha_in_rms(task, kind):
    model = task.make_model(0).double()
    lo = LearnedOptimizer.fresh(kind, update=UpdateConfig(alpha_init=1e-2,
                                                          normalize_update=True))
    lo.scales = init_scales(lo.update, torch.float64)
    opt = GMNOptimizer(model, checkpoint=lo)
    for t in range(3):
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        train(model, opt, task, 1, start=t)
        for k, v in model.named_parameters():
            rms = float((v.detach() - before[k]).square().mean().sqrt())
            assert rms == pytest.approx(1e-2, rel=1e-6), k
    with pytest.raises(ValueError, match="normalize_update"):
        UpdateConfig(normalize_update=1)


def test_learned_weight_decay_is_optional_and_validated():
    assert "log_weight_decay" not in init_scales(UpdateConfig())
    with pytest.raises(ValueError, match="weight_decay_init"):
        UpdateConfig(weight_decay_init=-1.0)


def test_learned_weight_decay_round_trips_through_a_checkpoint(task, tmp_path):
    lo = random_lopt()
    lo.update = UpdateConfig(alpha_init=1e-2, weight_decay_init=0.05)
    lo.scales = init_scales(lo.update, torch.float64)
    save_learned_optimizer(lo, tmp_path)
    back = load_learned_optimizer(tmp_path)
    assert back.update.weight_decay_init == 0.05
    assert math.isclose(float(back.scales["log_weight_decay"].exp()), 0.05, rel_tol=1e-6)
    m1, m2 = task.make_model(0).double(), task.make_model(0).double()
    train(m1, GMNOptimizer(m1, checkpoint=lo), task, 3)
    train(m2, GMNOptimizer(m2, checkpoint=str(tmp_path)), task, 3)
    assert max_diff(dict(m1.named_parameters()), dict(m2.named_parameters())) < 1e-6


@pytest.mark.parametrize("kind", ["gmn", "neuron"])
def test_randomized_net_changes_the_update(task, kind):
    m1 = task.make_model(0).double()
    m2 = task.make_model(0).double()
    train(m1, GMNOptimizer(m1, checkpoint=random_lopt(kind=kind)), task, 2)
    still = random_lopt(alpha=1e-2, head_std=0.0, kind=kind)
    train(m2, GMNOptimizer(m2, checkpoint=still), task, 2)
    assert max_diff(dict(m1.named_parameters()), dict(m2.named_parameters())) > 1e-4


def _one_step(task, lr=1.0, weight_decay=0.0, scheduler=None, steps=1):
    model = task.make_model(0).double()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = GMNOptimizer(model, checkpoint=random_lopt(), lr=lr, weight_decay=weight_decay)
    sched = scheduler(opt) if scheduler else None
    deltas = []
    for t in range(steps):
        prev = {k: v.detach().clone() for k, v in model.named_parameters()}
        train(model, opt, task, 1, start=t)
        deltas.append({k: v.detach() - prev[k] for k, v in model.named_parameters()})
        if sched:
            sched.step()
    return before, deltas


def test_lr_multiplier_scales_the_update(task):
    _, (d1,) = _one_step(task, lr=1.0)
    _, (dh,) = _one_step(task, lr=0.5)
    for k in d1:
        torch.testing.assert_close(dh[k], 0.5 * d1[k], rtol=1e-10, atol=1e-12)
    assert max(v.abs().max() for v in d1.values()) > 0


def test_scheduler_changes_the_update(task):
    sched = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)  # noqa: E731
    _, d_sched = _one_step(task, scheduler=sched, steps=2)
    _, d_const = _one_step(task, steps=2)
    for k in d_sched[0]:  # step 0 at lr 1, step 1 at lr 0.1: same state, so exactly 1/10
        torch.testing.assert_close(d_sched[0][k], d_const[0][k], rtol=0, atol=0)
        torch.testing.assert_close(d_sched[1][k], 0.1 * d_const[1][k], rtol=1e-10, atol=1e-12)


def test_decoupled_weight_decay(task):
    before, (d0,) = _one_step(task, weight_decay=0.0)
    _, (dw,) = _one_step(task, weight_decay=0.5)
    alpha = math.exp(random_lopt().scales["log_alpha"].item())
    for k in d0:
        torch.testing.assert_close(dw[k], d0[k] - alpha * 0.5 * before[k], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["gmn", "neuron"])
def test_step_is_equivariant_to_hidden_permutations(task, kind):
    model = task.make_model(0).double()
    pg = ParameterGraph.from_module(model)
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(3))
    sigma = node_permutation(pg, {"layers.0": perm})
    params = {k: v.detach() for k, v in model.named_parameters()}
    twin = task.make_model(1).double()
    with torch.no_grad():
        for k, v in permute_parameters(pg, params, sigma).items():
            dict(twin.named_parameters())[k].copy_(v)
    lo = random_lopt(kind=kind)
    train(model, GMNOptimizer(model, checkpoint=lo), task, 3)
    train(twin, GMNOptimizer(twin, checkpoint=lo), task, 3)
    p1 = {k: v.detach() for k, v in model.named_parameters()}
    p2 = {k: v.detach() for k, v in twin.named_parameters()}
    assert max_diff(permute_parameters(pg, p1, sigma), p2) < 1e-9
    # sensitivity: the twin is not simply equal to the unpermuted run
    assert max_diff(p1, p2) > 1e-3


@pytest.mark.parametrize("kind", ["gmn", "neuron"])
def test_optimizer_step_equals_the_pure_update(task, kind):
    model = task.make_model(0).double()
    lo = random_lopt(kind=kind)
    opt = GMNOptimizer(model, checkpoint=lo)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    x, y = task.batch(0, 0)
    grads = torch.func.grad(lambda p: task.loss(functional_call(model, p, (x.double(),)), y))(
        params
    )
    new, _ = learned_update(lo.net, lo.weights(), lo.scales, opt.graph, params, grads,
                            init_state(params, lo.update), lo.update)
    train(model, opt, task, 1)
    assert max_diff(new, dict(model.named_parameters())) == 0.0


@pytest.mark.parametrize("kind", ["neuron", "mlp"])
def test_tensor_stats_optimizer_steps_equal_the_pure_update(task, kind):
    # three steps, so that the gradient's agreement with its momentum is not the zero of step 1
    lo = random_lopt(kind=kind, update=UpdateConfig(alpha_init=1e-2, tensor_stats=True))
    assert lo.update.entry_channels == UpdateConfig().entry_channels + 3
    model = task.make_model(0).double()
    opt = GMNOptimizer(model, checkpoint=lo)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    state = init_state(params, lo.update)
    for t in range(3):
        x, y = task.batch(t, 0)
        grads = torch.func.grad(
            lambda p, x=x, y=y: task.loss(functional_call(model, p, (x.double(),)), y))(params)
        params, state = learned_update(lo.net, lo.weights(), lo.scales, opt.graph, params,
                                       grads, state, lo.update)
        train(model, opt, task, 1, start=t)
        assert max_diff(params, dict(model.named_parameters())) < 1e-12
    with pytest.raises(ValueError, match="tensor_stats"):
        UpdateConfig(tensor_stats="yes")


def test_tensor_stats_values():
    g = torch.tensor([[1.0, -2.0, 3.0, 0.5, 0.5]], dtype=torch.float64)
    numels = [3, 2]
    agree = gradient_agreement(g, -3 * g, numels)
    torch.testing.assert_close(agree, torch.tensor([[-1.0, -1.0]], dtype=torch.float64))
    assert float(gradient_agreement(g, torch.zeros_like(g), numels).abs().max()) == 0.0
    p = torch.tensor([[3.0, 4.0, 0.0, 1.0, -1.0]], dtype=torch.float64) * 1e-1
    d = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    s = tensor_stats(p, d, agree, numels)
    assert s.shape == (1, 3, 5)
    rms_p = torch.tensor([(0.25 / 3) ** 0.5, 0.1], dtype=torch.float64)
    expected = torch.stack([torch.tensor([1.0, 1e-8], dtype=torch.float64),
                            torch.tensor([-1.0, -1.0], dtype=torch.float64),
                            torch.log(rms_p + 1e-4) / 4])
    torch.testing.assert_close(s[0], expected.repeat_interleave(torch.tensor(numels), 1))


@pytest.mark.parametrize("kind,stats", [("gmn", False), ("neuron", False), ("neuron", True)])
def test_meta_gradient_matches_finite_differences(task, kind, stats):
    lo = random_lopt(hidden=8, layers=1, kind=kind,
                     update=UpdateConfig(alpha_init=1e-2, tensor_stats=stats))
    run = new_inner_run(task, 0, 100, lo.update, dtype=torch.float64)
    meta = {"net": {k: v.detach() for k, v in lo.net.named_parameters()},
            "scales": dict(lo.scales)}
    loss, grads, _ = tbptt_estimate(lo.net, meta, run, 3, lo.update)
    g = torch.Generator().manual_seed(1)
    d = {gk: {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in dd.items()}
         for gk, dd in meta.items()}

    def at(s):
        m = {gk: {k: v + s * d[gk][k] for k, v in dd.items()} for gk, dd in meta.items()}
        return unroll(lo.net, m, run, 3, lo.update)[0]

    eps = 1e-6
    fd = (at(eps) - at(-eps)) / (2 * eps)
    an = sum((grads[gk][k] * d[gk][k]).sum() for gk in grads for k in grads[gk])
    assert abs(float(fd)) > 1e-4
    assert abs(float(fd - an)) < 1e-6 * max(1.0, abs(float(fd)))
    assert torch.isclose(loss, at(0.0))


def test_es_estimate_correlates_with_the_true_gradient(task):
    lo = random_lopt(hidden=4, layers=1, kind="mlp", head_std=0.0)  # cheap net
    run = new_inner_run(task, 0, 100, lo.update, dtype=torch.float64)
    meta = {"net": {}, "scales": dict(lo.scales)}  # only the scalars: a 3-dim problem
    _, g_true, _ = tbptt_estimate(lo.net, meta, run, 2, lo.update)
    gen = torch.Generator().manual_seed(0)
    _, g_es, _ = es_estimate(lo.net, meta, run, 2, lo.update, sigma=1e-3, pairs=16,
                             generator=gen)
    a = torch.stack([g_true["scales"][k] for k in meta["scales"]])
    b = torch.stack([g_es["scales"][k] for k in meta["scales"]])
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.8


def test_clipped_loss():
    clip = 3.0
    out = clipped_loss(torch.tensor([float("nan"), 5.0, -1.0, 1.5]), clip)
    assert out.tolist() == [1.0, 1.0, 0.0, 0.5]
