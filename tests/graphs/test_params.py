"""graphs.params: the parameter-dict operations every package uses."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphs import params as P
from tests.graphs import models


def nested(g: torch.Generator) -> dict:
    return {"net": {"w": torch.randn(3, 2, generator=g), "b": torch.randn(3, generator=g)},
            "scale": torch.randn((), generator=g)}


def assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        if isinstance(a[k], dict):
            assert_same(a[k], b[k])
        else:
            assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


def test_flatten_is_dict_order_row_major_and_unflatten_inverts_it(seeded):
    model = models.mlp()
    params = P.detach(dict(model.named_parameters()))
    flat = P.flatten(params)
    assert torch.equal(flat, torch.cat([v.reshape(-1) for v in params.values()]))
    assert P.numel(params) == flat.numel() == sum(p.numel() for p in model.parameters())
    back = P.unflatten(flat, params)
    assert_same(back, params)
    storage = flat.untyped_storage().data_ptr()
    assert all(v.untyped_storage().data_ptr() == storage for v in back.values()), "views"


def test_nested_dicts_round_trip(seeded):
    tree = nested(seeded)
    flat = P.flatten(tree)
    assert flat.numel() == P.numel(tree) == 10
    assert torch.equal(flat[:6], tree["net"]["w"].reshape(-1))
    assert_same(P.unflatten(flat, tree), tree)
    assert_same(P.map_tensors(lambda t: t * 2, tree),
                {"net": {"w": 2 * tree["net"]["w"], "b": 2 * tree["net"]["b"]},
                 "scale": 2 * tree["scale"]})


def test_unflatten_of_the_wrong_size_is_an_error(seeded):
    tree = nested(seeded)
    with pytest.raises(ValueError, match="a vector of 9 entries cannot fill 10"):
        P.unflatten(torch.zeros(9), tree)
    with pytest.raises(ValueError, match="11 entries"):
        P.unflatten(torch.zeros(11), tree)


def test_unflatten_is_differentiable(seeded):
    tree = nested(seeded)
    vector = P.flatten(tree).requires_grad_()
    out = P.unflatten(vector, tree)
    (grad,) = torch.autograd.grad(3 * out["net"]["b"].sum(), vector)
    assert torch.equal(grad, torch.cat([torch.zeros(6), 3 * torch.ones(3), torch.zeros(1)]))


def test_stack_and_member_round_trip(seeded):
    members = [nested(seeded) for _ in range(4)]
    population = P.stack(members)
    assert population["net"]["w"].shape == (4, 3, 2) and population["scale"].shape == (4,)
    for i, m in enumerate(members):
        assert_same(P.member(population, i), m)
    assert_same(P.member(population, slice(1, 3)), P.stack(members[1:3]))


def test_cat_joins_populations_in_order(seeded):
    members = [nested(seeded) for _ in range(5)]
    joined = P.cat([P.stack(members[:2]), P.stack(members[2:])])
    assert_same(joined, P.stack(members))


def test_detach_and_to_keep_structure(seeded):
    tree = P.map_tensors(lambda t: t.requires_grad_(), nested(seeded))
    detached = P.detach(tree)
    assert not detached["net"]["w"].requires_grad
    assert detached["net"]["w"].data_ptr() == tree["net"]["w"].data_ptr(), "no copy"
    cast = P.to(tree, dtype=torch.float64)
    assert cast["net"]["b"].dtype == torch.float64 and list(cast) == list(tree)


@settings(max_examples=20, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(0, 4), max_size=3), min_size=1, max_size=5))
def test_random_shapes_round_trip(shapes):
    g = torch.Generator().manual_seed(len(shapes))
    tree = {f"p{i}": torch.randn(s, generator=g) for i, s in enumerate(shapes)}
    assert_same(P.unflatten(P.flatten(tree), tree), tree)
    assert_same(P.member(P.stack([tree, tree]), 1), tree)
