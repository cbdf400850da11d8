"""Shipped editors (editing.shipped, editing.demo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import editing
from common.errors import UserError
from editing.demo import main as demo_main
from editing.editor import Editor, EditorConfig, save_editor
from tests.editing.conftest import same_state, snapshot


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
            "--table", str(tmp_path / "sweep.json")]
    summary = demo_main(argv)
    assert (tmp_path / "demo" / "edits.png").exists() and (tmp_path / "demo" / "demo.json").exists()
    mse = summary["mse"]["invert"]
    assert mse["editor_mse"] < mse["no_edit_mse"] and mse["exact_mse"] < 1e-6
    out = capsys.readouterr().out
    assert "invert" in out and "0.12346" in out and "0.09877" in out and "NFN-NP" in out
    demo_main(argv)  # a re-run replaces its own files
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["demo.json", "edits.png"]


def test_a_bare_edit_name_always_means_the_shipped_editor(tmp_path, monkeypatch) -> None:
    """A run folder called like an edit is loaded only when given as a path."""
    shipped = editing.load_editor("dilate")
    monkeypatch.chdir(tmp_path)
    run = Editor(EditorConfig(gmn_hidden=8, gmn_layers=1))
    save_editor(run, tmp_path / "dilate" / "editor")
    with pytest.warns(UserWarning, match=r"not ./dilate in the current folder"):
        assert same_state(editing.load_editor("dilate"), shipped)
    for as_path in (Path("dilate"), "./dilate", "dilate/", tmp_path / "dilate"):
        assert same_state(editing.load_editor(as_path), run), as_path
    assert same_state(editing.load_editor(Path("dilate") / "editor.safetensors"), run)
    with pytest.raises(UserError, match="bare name 'blur' loads the shipped editor"):
        editing.load_editor(Path("blur"))


def test_demo_refuses_bad_values_and_an_occupied_folder(tmp_path, refused) -> None:
    out = tmp_path / "demo"
    refused(demo_main, ["--limit", "-1", "--out", str(out)], "--limit")
    refused(demo_main, ["--threads", "-2", "--out", str(out)], "--threads")
    refused(demo_main, ["--edits", "recolor", "--out", str(out)], "--edits")
    refused(demo_main, ["--edits", "all", "blur", "--out", str(out)], "--edits")
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused(demo_main, ["--edits", "invert", "--limit", "2", "--out", str(out)], "--out",
            "--overwrite")
    assert snapshot(out) == {"notes.txt": b"mine"}
