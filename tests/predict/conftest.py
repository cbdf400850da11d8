"""Tiny zoos shared by the predict tests (built once per session in a temporary cache)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from common.persistence import PersistenceError
from predict.zoo import Zoo, ZooConfig, build_zoo

TINY = {"size": 8, "min_steps": 5, "max_steps": 12, "seed": 1}


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory) -> object:
    return tmp_path_factory.mktemp("gmn_cache")


@pytest.fixture(scope="session")
def cnn_zoo(zoo_cache) -> Zoo:
    return build_zoo(ZooConfig(kind="cnn", **TINY), root=zoo_cache, progress=False)


def assert_damage_named(folder: Path, damage: Callable[[Path], object],
                        load: Callable[[], object], named: Iterable[str]) -> None:
    """After ``damage(folder)``, ``load()`` raises a PersistenceError whose message names the
    folder and every string of ``named`` (the file, the field or tensor)."""
    damage(folder)
    with pytest.raises(PersistenceError) as err:
        load()
    for part in [str(folder), *named]:
        assert part in str(err.value), str(err.value)


@pytest.fixture(scope="session")
def diverse_zoo(zoo_cache) -> Zoo:
    return build_zoo(ZooConfig(kind="diverse", **TINY), root=zoo_cache, progress=False)
