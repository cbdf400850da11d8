"""Tiny zoos shared by the predict tests (built once per session in a temporary cache)."""

from __future__ import annotations

import pytest

from predict.zoo import Zoo, ZooConfig, build_zoo

TINY = {"size": 8, "min_steps": 5, "max_steps": 12, "seed": 1}


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory) -> object:
    return tmp_path_factory.mktemp("gmn_cache")


@pytest.fixture(scope="session")
def cnn_zoo(zoo_cache) -> Zoo:
    return build_zoo(ZooConfig(kind="cnn", **TINY), root=zoo_cache, progress=False)


@pytest.fixture(scope="session")
def diverse_zoo(zoo_cache) -> Zoo:
    return build_zoo(ZooConfig(kind="diverse", **TINY), root=zoo_cache, progress=False)
