"""Meta-gradient estimators: persistent ES is unbiased over the whole unroll where truncated
backprop and ES are not; PES keeps its particles with the run."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest
import torch

from lopt.estimators import ESTIMATORS, PES, es_estimate, pes_estimate, tbptt_estimate
from lopt.unroll import new_inner_run, unroll
from tasks.architectures import MLP
from tasks.base import SupervisedTask
from tasks.data import DataSplit
from tests.lopt.helpers import random_lopt

TRUNCATIONS, LENGTH = 4, 2


@pytest.fixture(scope="module")
def setup():
    """A tiny regression, a learned optimizer whose meta-parameters are its three scalars."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = torch.tanh(x @ torch.randn(4, 1, generator=g)) + 0.1 * torch.randn(256, 1, generator=g)
    data = DataSplit(x[:192], y[:192], x[192:], y[192:])
    task = SupervisedTask("tiny", partial(MLP, 4, (8,), 1, "tanh"), lambda: data,
                          batch_size=16, num_classes=None, regression_loss_clip=4.0)
    lo = random_lopt(hidden=4, layers=1, kind="mlp", head_std=0.3, alpha=0.05)
    meta = {"net": {}, "scales": dict(lo.scales)}  # a 3-dim problem: low estimator variance
    return task, lo, meta


def _fresh(task, lo):
    return new_inner_run(task, [0], TRUNCATIONS * LENGTH, lo.update, dtype=torch.float64)


def _full_loss(task, lo, meta) -> float:
    """The meta-loss of the whole unroll: the sum of its truncations' meta-losses."""
    run, total = _fresh(task, lo), 0.0
    for _ in range(TRUNCATIONS):
        loss, (p, s) = unroll(lo.net, meta, run, LENGTH, lo.update)
        total += float(loss)
        run = replace(run, params=p, state=s, step=run.step + LENGTH)
    return total


def _summed_estimate(task, lo, meta, estimate, **kwargs) -> torch.Tensor:
    """An estimator's meta-gradients summed over the run's truncations, as meta-training
    applies them (the run advanced by the unperturbed optimizer in between)."""
    run, total = _fresh(task, lo), torch.zeros(len(meta["scales"]), dtype=torch.float64)
    for _ in range(TRUNCATIONS):
        _, grads, (p, s) = estimate(lo.net, meta, run, LENGTH, lo.update, **kwargs)
        run.params, run.state, run.step = p, s, run.step + LENGTH
        total += torch.stack([grads["scales"][k] for k in meta["scales"]])
    return total


def test_pes_is_unbiased_for_the_whole_unroll_where_truncated_estimators_are_not(setup):
    task, lo, meta = setup
    h = 1e-5  # central finite differences of the full-unroll meta-loss, per scalar
    fd = []
    for name, value in meta["scales"].items():
        def at(shift, name=name, value=value):
            return _full_loss(task, lo, {"net": {}, "scales": {**meta["scales"],
                                                                name: value + shift}})
        fd.append((at(h) - at(-h)) / (2 * h))
    fd = torch.tensor(fd, dtype=torch.float64)
    samples = torch.stack([
        _summed_estimate(task, lo, meta, pes_estimate, sigma=1e-2, pairs=64,
                         generator=torch.Generator().manual_seed(r)) for r in range(16)])
    mean, stderr = samples.mean(0), samples.std(0) / 16**0.5
    assert ((mean - fd).abs() <= 4 * stderr + 1e-3).all(), (mean, stderr, fd)
    # truncated backprop and ES miss how earlier truncations shaped the state: biased
    tbptt = _summed_estimate(task, lo, meta, tbptt_estimate)
    es = _summed_estimate(task, lo, meta, es_estimate, sigma=1e-2, pairs=256,
                          generator=torch.Generator().manual_seed(0))
    big = fd.abs().argmax()  # the scalar with the largest gradient (log_alpha here)
    assert abs(float(fd[big])) > 0.1
    for biased in (tbptt, es):
        assert abs(float(biased[big] - fd[big])) > 10 * float(stderr[big]), (biased, fd)


def test_pes_keeps_its_particles_with_the_run_and_starts_afresh_on_a_new_one(setup):
    task, lo, meta = setup
    run = _fresh(task, lo)
    est = ESTIMATORS["pes"](lo.update, type("Cfg", (), {
        "objective": "valid", "meta_loss": "linear", "es_sigma": 0.01, "es_pairs": 2,
        "seed": 3})())
    assert isinstance(est, PES) and not run.extra
    est.estimate(lo.net, meta, run, LENGTH, (0, 0))
    first = {k: v.clone() for k, v in run.extra.items()}
    assert first["pes.params." + next(iter(run.params))].shape[0] == 4  # 2 pairs: 4 particles
    assert float(first["pes.xi.scales.log_alpha"].abs().sum()) > 0
    est.estimate(lo.net, meta, run, LENGTH, (1, 0))
    assert all(k in run.extra for k in first)
    assert not torch.equal(first["pes.state.step"], run.extra["pes.state.step"])
    assert (run.extra["pes.state.step"] == 2 * LENGTH).all()  # the particles trained on
    # a copy of the run at the same point continues identically (what a resume restores)
    twin = replace(run, extra={k: v.clone() for k, v in run.extra.items()})
    a = est.estimate(lo.net, meta, run, LENGTH, (2, 0))[1]
    b = est.estimate(lo.net, meta, twin, LENGTH, (2, 0))[1]
    assert all(torch.equal(a["scales"][k], b["scales"][k]) for k in a["scales"])


def test_a_pes_pair_with_a_diverged_particle_restarts_from_the_unperturbed_run(setup):
    task, lo, meta = setup
    run = _fresh(task, lo)
    pes_estimate(lo.net, meta, run, LENGTH, lo.update, pairs=3,
                 generator=torch.Generator().manual_seed(0))
    name = next(iter(run.params))
    run.extra[f"pes.params.{name}"][4] = float("nan")  # particle 4: the "-" side of pair 1
    _, grads, (params, _) = pes_estimate(lo.net, meta, run, LENGTH, lo.update, pairs=3,
                                         generator=torch.Generator().manual_seed(1))
    assert all(bool(torch.isfinite(g).all()) for d in grads.values() for g in d.values())
    particles = run.extra[f"pes.params.{name}"]
    assert bool(torch.isfinite(particles).all())
    for i in (1, 4):  # both particles of pair 1 restart where the unperturbed run is
        torch.testing.assert_close(particles[i], params[name], rtol=0, atol=0)
    xi = run.extra["pes.xi.scales.log_alpha"]
    assert float(xi[1]) == 0 and float(xi[0]) != 0 and float(xi[2]) != 0
    assert not torch.equal(particles[0], params[name])  # the other pairs keep their runs
