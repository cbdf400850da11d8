"""Shipping trained editors into a package folder (editing.ship)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import editing
from editing.editor import Editor, EditorConfig, load_editor_file, save_editor
from editing.inr import init_siren_params
from editing.ship import _pick_run, main
from tests.editing.conftest import same_state, snapshot


def _run(folder: Path, val_mse: float, seed: int = 0) -> Editor:
    """A finished run folder: a small editor with non-trivial weights and its log."""
    torch.manual_seed(seed)
    editor = Editor(EditorConfig(gmn_hidden=8, gmn_layers=1))
    editor.set_scale(init_siren_params(range(4)))
    with torch.no_grad():
        editor.gamma_bias.fill_(0.1 + seed)
    save_editor(editor, folder / "editor", {"edit": "dilate"})
    (folder / "log.json").write_text(json.dumps({"best_val_mse": val_mse, "test_mse": 0.0}))
    return editor


def test_ship_picks_run_by_validation_mse(tmp_path) -> None:
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


def test_ship_writes_loadable_editors_and_never_overwrites(tmp_path, refused) -> None:
    sweep, target = tmp_path / "sweep", tmp_path / "weights"
    first = _run(sweep / "dilate" / "gmn" / "seed0", 0.2, seed=0)
    second = _run(sweep / "dilate" / "gmn" / "seed1", 0.1, seed=1)
    argv = ["--runs", str(sweep), "--edit", "dilate", "--target", str(target)]
    assert main(argv) == {"dilate": sweep / "dilate" / "gmn" / "seed0"}
    assert sorted(p.name for p in target.iterdir()) == ["dilate.json", "dilate.safetensors"]
    assert same_state(editing.load_editor(target / "dilate"), first)
    info = json.loads((target / "dilate.json").read_text())
    assert info["source_run"] == str(sweep / "dilate" / "gmn" / "seed0")
    before = snapshot(target)
    refused(main, [*argv, "--seed", "best"], "--target", "--overwrite")
    assert snapshot(target) == before
    main([*argv, "--seed", "best", "--overwrite"])
    assert same_state(load_editor_file(target / "dilate"), second)


def test_ship_refuses_a_damaged_editor_and_bad_options(tmp_path, refused) -> None:
    sweep, target = tmp_path / "sweep", tmp_path / "weights"
    run = sweep / "blur" / "gmn" / "seed0"
    _run(run, 0.1)
    (run / "editor.safetensors").write_bytes(b"not a safetensors file")
    refused(main, ["--runs", str(sweep), "--edit", "blur", "--target", str(target)],
            "editor.safetensors")
    refused(main, ["--runs", str(tmp_path / "typo"), "--target", str(target)], "--runs")
    refused(main, ["--target", str(target)], "--runs")
    refused(main, ["--runs", str(sweep), "--seed", "last", "--target", str(target)], "--seed")
    refused(main, ["--runs", str(sweep), "--edit", "recolor", "--target", str(target)], "--edit")
    assert not target.exists()
