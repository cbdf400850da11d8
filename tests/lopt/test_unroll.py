"""Task augmentation: a re-parameterised inner run computes the same function, and its
optimizer sees parameters scaled by 1/s and gradients by s."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad

from lopt.unroll import log_uniform_scales, new_inner_run, reparameterize, unroll
from lopt.update import UpdateConfig
from tasks import get_task
from tests.lopt.helpers import random_lopt


def test_a_reparameterised_run_computes_the_same_function_with_scaled_gradients():
    task = get_task("digits_cnn")
    cfg = UpdateConfig()
    run = new_inner_run(task, [0, 1], 10, cfg, dtype=torch.float64)
    scales = log_uniform_scales(run.graph.param_names, 1000.0, torch.Generator().manual_seed(0))
    aug = reparameterize(run, scales)
    assert aug.reparam == scales and not run.reparam  # the original run is untouched
    x, y = task.batch(0, 0)
    x = x.double()

    def loss(params, reparam):
        theta = {n: p * reparam.get(n, 1.0) for n, p in params.items()}
        return task.loss(functional_call(run.model, theta, (x,)), y)

    plain, scaled = run.member(0), aug.member(0)
    assert loss(plain, {}).item() == pytest.approx(loss(scaled, scales).item(), rel=1e-12)
    g_plain, g_scaled = grad(loss)(plain, {}), grad(loss)(scaled, scales)
    for n, s in scales.items():
        torch.testing.assert_close(scaled[n], plain[n] / s)
        torch.testing.assert_close(g_scaled[n], g_plain[n] * s, rtol=1e-9, atol=1e-12)
    # the unroll computes with the scaled parameters: a learned optimizer sees other inputs
    lo = random_lopt(kind="mlp", hidden=4)
    meta = {"net": dict(lo.net.named_parameters()), "scales": dict(lo.scales)}
    a, _ = unroll(lo.net, meta, run, 2, lo.update)
    b, _ = unroll(lo.net, meta, aug, 2, lo.update)
    assert abs(float(a) - float(b)) > 1e-6


def test_reparameterize_and_scales_check_their_inputs():
    run = new_inner_run(get_task("digits_mlp32"), 0, 10, UpdateConfig())
    names = run.graph.param_names
    scales = log_uniform_scales(names, 10.0, torch.Generator().manual_seed(1))
    assert all(0.1 <= s <= 10 for s in scales.values()) and len(set(scales.values())) > 1
    assert scales == log_uniform_scales(names, 10.0, torch.Generator().manual_seed(1))
    assert set(log_uniform_scales(names, 1.0, torch.Generator()).values()) == {1.0}
    with pytest.raises(ValueError, match=">= 1"):
        log_uniform_scales(names, 0.5, torch.Generator())
    with pytest.raises(ValueError, match="unknown parameters"):
        reparameterize(run, {"nope": 2.0})
    with pytest.raises(ValueError, match="finite and positive"):
        reparameterize(run, {names[0]: 0.0})
    with pytest.raises(ValueError, match="fresh inner run"):  # scales would stack
        reparameterize(reparameterize(run, scales), scales)
    run.step = 3
    with pytest.raises(ValueError, match="fresh inner run"):
        reparameterize(run, scales)
