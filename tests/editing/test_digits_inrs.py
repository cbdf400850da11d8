"""digits-INR dataset: images, splits, cache and build CLI (editing.data, editing.build_inrs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import editing
import editing.data
from common.persistence import PersistenceError
from editing.build_inrs import main as build_main
from editing.data import DigitsINRConfig, cache_paths, load_digits_inrs
from tests.editing.conftest import snapshot

TINY = DigitsINRConfig(steps=5)


def test_digits_images_and_splits() -> None:
    images, splits = editing.digits_images()
    assert images.shape == (1797, 28, 28) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"all": 1797, "train": 1400, "val": 200, "test": 197}
    union = torch.cat([splits["train"], splits["val"], splits["test"]])
    assert torch.equal(union.sort().values, torch.arange(1797))
    perm = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    assert torch.equal(splits["val"], perm[1400:1600])
    images[0] += 1  # callers get copies
    assert editing.digits_images()[0].max() <= 1


def test_cache_keys_differ_per_config() -> None:
    keys = {
        TINY.key(),
        DigitsINRConfig(steps=6).key(),
        DigitsINRConfig(steps=5, split="val").key(),
        DigitsINRConfig(steps=5, split="val", limit=3).key(),
        DigitsINRConfig(steps=5, split="val", limit=4).key(),
    }
    assert len(keys) == 5
    assert TINY.key() == DigitsINRConfig(steps=5).key()  # deterministic
    with pytest.raises(ValueError):
        DigitsINRConfig(split="training")


def test_load_builds_then_reloads_without_refitting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMN_CACHE", str(tmp_path))
    params, images = load_digits_inrs("val", limit=3, config=TINY, progress=False)
    weights, info_path = cache_paths(DigitsINRConfig(steps=5, split="val", limit=3))
    assert weights.parent == tmp_path and weights.exists() and info_path.exists()
    assert list(params) == list(editing.inr.param_shapes())
    assert params["layers.0.weight"].shape == (3, 32, 2) and images.shape == (3, 28, 28)
    _, splits = editing.digits_images()
    torch.testing.assert_close(images, editing.digits_images()[0][splits["val"][:3]])
    info = json.loads(info_path.read_text())
    assert info["config"]["n_images"] == 3 and info["fit_seconds"] >= 0
    assert info["mean_psnr"] > 0

    def no_fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("cached data must not be refitted")

    monkeypatch.setattr(editing.data, "fit_inrs", no_fit)
    again, images2 = load_digits_inrs("val", limit=3, config=TINY, progress=False)
    for k in params:
        assert torch.equal(params[k], again[k])
    assert torch.equal(images, images2)
    with pytest.raises(FileNotFoundError):
        load_digits_inrs("test", limit=2, config=TINY, build=False)


def test_moved_digits_are_fitted_and_move_the_same_way_in_every_subset(tmp_path: Path) -> None:
    moved = DigitsINRConfig(steps=5, moved=1)
    assert moved.key() != TINY.key() and "moved" not in TINY.to_dict()
    params, images = load_digits_inrs("train", limit=3, config=moved, root=tmp_path,
                                      progress=False)
    assert params["layers.0.weight"].shape == (3, 32, 2) and images.shape == (3, 28, 28)
    upright, splits = editing.digits_images()
    upright = upright[splits["train"][:3]]
    # moved, not upright; the same ink (up to what a rotation moves off the edge or blurs)
    assert float((images - upright).abs().mean()) > 0.05
    assert images.min() >= 0 and images.max() <= 1
    assert torch.allclose(images.sum((1, 2)), upright.sum((1, 2)), rtol=0.25)
    # an image moves by its own seed (seed, index): the same in a smaller subset
    _, two = load_digits_inrs("train", limit=2, config=moved, root=tmp_path, progress=False)
    assert torch.equal(two, images[:2])
    # another seed moves it elsewhere
    _, other = load_digits_inrs("train", limit=2, config=DigitsINRConfig(steps=5, moved=2),
                                root=tmp_path, progress=False)
    assert not torch.equal(other, two)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="moved"):
            DigitsINRConfig(moved=bad)


def test_subset_rows_do_not_depend_on_subset(tmp_path: Path) -> None:
    a, _ = load_digits_inrs("train", limit=2, config=TINY, root=tmp_path, progress=False)
    b, _ = load_digits_inrs("train", limit=4, config=TINY, root=tmp_path, progress=False)
    for k in a:
        torch.testing.assert_close(a[k], b[k][:2], rtol=1e-4, atol=1e-5)


def test_full_cache_is_sliced_per_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fake a full build cheaply: fit only 5 steps for every image would take too long, so
    # write a tiny-steps "full" file directly via a patched fit that returns the init.
    from editing.inr import init_siren_params

    monkeypatch.setattr(
        editing.data,
        "fit_inrs",
        lambda images, *, indices, widths, w0, seed, **kw: init_siren_params(
            indices, widths, w0, seed
        ),
    )
    editing.data.build_digits_inrs(TINY, root=tmp_path, progress=False)
    params, images = load_digits_inrs("test", config=TINY, root=tmp_path, build=False)
    _, splits = editing.digits_images()
    expected = init_siren_params(splits["test"])
    assert images.shape == (197, 28, 28)
    for k in expected:
        assert torch.equal(params[k], expected[k])


def test_build_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--steps", "3", "--split", "test", "--limit", "2", "--cache-dir", str(tmp_path)]
    assert build_main([*args, "--no-progress"]) == 0
    files = sorted(p.suffix for p in tmp_path.iterdir())
    assert files == [".json", ".safetensors"]
    out = capsys.readouterr().out
    assert "2 INRs" in out and "mean PSNR" in out
    assert build_main([*args, "--no-progress"]) == 0
    assert "cached:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_main(["--help"])
    assert "--chunk-size" in capsys.readouterr().out


def test_a_damaged_cache_file_is_a_clear_error(tmp_path: Path) -> None:
    load_digits_inrs("val", limit=2, config=TINY, root=tmp_path, progress=False)
    weights, info_path = cache_paths(DigitsINRConfig(steps=5, split="val", limit=2), tmp_path)
    good = weights.read_bytes()
    weights.write_bytes(good[:100])
    with pytest.raises(PersistenceError, match=f"{weights.name}.*delete it to refit"):
        load_digits_inrs("val", limit=2, config=TINY, root=tmp_path, build=False)
    weights.write_bytes(good)
    info_path.write_text("{broken")
    with pytest.raises(PersistenceError, match=info_path.name):
        load_digits_inrs("val", limit=2, config=TINY, root=tmp_path, build=False)
    info_path.write_text("{}")
    params = editing.data.read_cache(DigitsINRConfig(steps=5, split="val", limit=2), tmp_path)[0]
    save_file({**params, "indices": torch.arange(3), "psnr": torch.zeros(3)}, str(weights))
    with pytest.raises(PersistenceError, match=f"{weights.name}.*'layers.0.weight'.*shape"):
        load_digits_inrs("val", limit=2, config=TINY, root=tmp_path, build=False)


def test_the_benchmark_cache_key_is_pinned() -> None:
    """Cached INR files are named by this key: changing it would orphan every cache."""
    assert DigitsINRConfig().key() == "3950b51a3f938b35"
    assert DigitsINRConfig(steps=5, split="val", limit=3).key() == "d2b087246f8eea64"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--steps", "-1"], "--steps"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "0"], "--lr"),
        (["--seed", "-1"], "--seed"),
        (["--size", "0"], "--size"),
        (["--w0", "-30"], "--w0"),
        (["--widths", "2", "0", "1"], "--widths"),
        (["--widths", "3", "32", "1"], "--widths"),
        (["--split", "training"], "--split"),
        (["--limit", "-1"], "--limit"),
        (["--chunk-size", "0"], "--chunk-size"),
        (["--threads", "-1"], "--threads"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_build_cli_refuses_bad_values(tmp_path: Path, refused, argv, flag) -> None:
    cache = tmp_path / "cache"
    refused(build_main, [*argv, "--cache-dir", str(cache)], flag)
    assert not cache.exists()


def test_build_cli_never_writes_into_a_folder_of_other_files(tmp_path: Path, refused) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("mine")
    args = ["--steps", "3", "--split", "test", "--limit", "2", "--cache-dir", str(folder),
            "--no-progress"]
    refused(build_main, args, "--cache-dir", "thesis.tex", "--overwrite")
    assert snapshot(folder) == {"thesis.tex": b"mine"}
    assert build_main([*args, "--overwrite"]) == 0
    assert (folder / "thesis.tex").read_text() == "mine" and len(list(folder.iterdir())) == 3
