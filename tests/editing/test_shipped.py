"""Shipped editors (editing.shipped, editing.demo)."""

from __future__ import annotations

import json

import pytest
import torch

import editing
from editing.demo import main as demo_main


@pytest.fixture(scope="module")
def test_inrs():
    return editing.load_digits_inrs("test", limit=8, progress=False)


def test_every_edit_is_shipped() -> None:
    assert editing.available_editors() == sorted(editing.EDITS)


@pytest.mark.parametrize("name", sorted(editing.EDITS))
def test_shipped_editor_beats_identity(name: str, test_inrs) -> None:
    params, images = test_inrs
    editor = editing.load_editor(name)
    assert editor.config.model == "gmn"
    with torch.no_grad():
        edited = editor(params)
    assert list(edited) == list(params)
    target = editing.EDITS[name](images)
    mse = (editing.render(edited, (28, 28)) - target).pow(2).mean()
    no_edit = (editing.render(params, (28, 28)) - target).pow(2).mean()
    assert mse < 0.9 * no_edit


def test_shipped_invert_editor_is_close_to_exact_solution(test_inrs) -> None:
    """The learned invert editor renders (nearly) what the exact weight-space solution does."""
    params, images = test_inrs
    with torch.no_grad():
        edited = editing.render(editing.load_editor("invert")(params), (28, 28))
    exact = editing.render(editing.invert_params(params), (28, 28))
    assert (edited - exact).pow(2).mean() <= 1e-3


def test_load_editor_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown editor"):
        editing.load_editor("recolor")
    with pytest.raises(ValueError, match="unknown editor"):
        editing.load_editor(tmp_path / "nothing")


def test_demo_runs(tmp_path, capsys) -> None:
    table = {"table": {"invert": {"mlp": {"mean": 0.123456}, "mlp_aug": {"mean": 0.0987654}}}}
    (tmp_path / "sweep.json").write_text(json.dumps(table))
    argv = ["--edits", "invert", "--limit", "2", "--out", str(tmp_path / "demo"),
            "--table", str(tmp_path / "sweep.json")]  # fmt: skip
    summary = demo_main(argv)
    assert (tmp_path / "demo" / "edits.png").exists() and (tmp_path / "demo" / "demo.json").exists()
    mse = summary["mse"]["invert"]
    assert mse["editor_mse"] < mse["no_edit_mse"] and mse["exact_mse"] < 1e-6
    out = capsys.readouterr().out
    assert "invert" in out and "0.12346" in out and "0.09877" in out and "NFN-NP" in out


def test_ship_picks_run_by_validation_mse(tmp_path) -> None:
    from editing.ship import _pick_run

    for seed, val, test in [(0, 0.3, 0.1), (1, 0.2, 0.5), (2, 0.4, 0.0)]:
        run = tmp_path / f"seed{seed}"
        run.mkdir()
        (run / "log.json").write_text(json.dumps({"best_val_mse": val, "test_mse": test}))
    assert _pick_run(tmp_path, "best") == tmp_path / "seed1"  # lowest val, not lowest test
    assert _pick_run(tmp_path, "2") == tmp_path / "seed2"
    assert _pick_run(tmp_path / "missing", "best") is None
    other = tmp_path / "other" / "seed7"
    other.mkdir(parents=True)
    (other / "log.json").write_text(json.dumps({"best_val_mse": 0.1, "test_mse": 0.9}))
    assert _pick_run([tmp_path, tmp_path / "other"], "best") == other
