"""Vectorized populations: P networks in one batched unroll equal P separate unrolls."""

import pytest
import torch

from lopt.estimators import es_estimate, tbptt_estimate
from lopt.unroll import new_inner_run, unroll
from tasks import get_task
from tests.lopt.helpers import max_diff, random_lopt


@pytest.fixture(scope="module")
def task():
    return get_task("digits_mlp32")


def meta_of(lo):
    return {"net": {k: v.detach() for k, v in lo.net.named_parameters()},
            "scales": dict(lo.scales)}


@pytest.mark.parametrize("kind", ["gmn", "mlp"])
def test_population_unroll_equals_separate_unrolls(task, kind):
    lo = random_lopt(hidden=8, layers=1, kind=kind)
    seeds = [3, 11, 5]
    pop = new_inner_run(task, seeds, 100, lo.update, dtype=torch.float64)
    assert pop.population == 3 and all(v.shape[0] == 3 for v in pop.params.values())
    loss, grads, (params, state) = tbptt_estimate(lo.net, meta_of(lo), pop, 3, lo.update)
    singles = [new_inner_run(task, s, 100, lo.update, dtype=torch.float64) for s in seeds]
    results = [tbptt_estimate(lo.net, meta_of(lo), r, 3, lo.update) for r in singles]
    assert torch.isclose(loss, sum(r[0] for r in results) / 3, rtol=1e-12)
    for g in grads:
        mean = {k: sum(r[1][g][k] for r in results) / 3 for k in grads[g]}
        assert max_diff(grads[g], mean) < 1e-12
    for i, r in enumerate(results):
        assert max_diff({k: v[i] for k, v in params.items()}, {k: v[0] for k, v in
                        r[2][0].items()}) < 1e-12
    # members differ (different seeds): the population is not one network repeated
    assert max_diff(pop.member(0), pop.member(1)) > 1e-3


def test_vectorized_es_equals_the_looped_estimate(task):
    lo = random_lopt(hidden=4, layers=1, kind="gmn")
    meta = meta_of(lo)
    pop = new_inner_run(task, [1, 2], 100, lo.update, dtype=torch.float64)
    sigma, pairs = 1e-2, 3
    loss, grads, _ = es_estimate(lo.net, meta, pop, 2, lo.update, sigma=sigma, pairs=pairs,
                                 generator=torch.Generator().manual_seed(7))
    # the same noise, drawn in the same order, then one unroll per perturbation
    gen = torch.Generator().manual_seed(7)
    z = {g: {k: torch.randn((pairs, *v.shape), generator=gen, dtype=v.dtype) for k, v in d.items()}
         for g, d in meta.items()}
    expected = {g: {k: torch.zeros_like(v) for k, v in d.items()} for g, d in meta.items()}
    for i in range(pairs):
        plus = {g: {k: v + sigma * z[g][k][i] for k, v in d.items()} for g, d in meta.items()}
        minus = {g: {k: v - sigma * z[g][k][i] for k, v in d.items()} for g, d in meta.items()}
        coef = (unroll(lo.net, plus, pop, 2, lo.update)[0]
                - unroll(lo.net, minus, pop, 2, lo.update)[0]) / (2 * sigma * pairs)
        for g in expected:
            for k in expected[g]:
                expected[g][k] += coef * z[g][k][i]
    for g in grads:
        assert max_diff(grads[g], expected[g]) < 1e-9
    assert torch.isclose(loss, unroll(lo.net, meta, pop, 2, lo.update)[0])
    assert sum(v.abs().sum() for v in grads["net"].values()) > 0
