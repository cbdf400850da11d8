"""editing.heldout: editors scored on moved digits the benchmark never had."""

from __future__ import annotations

import json

import numpy as np
import pytest

from editing.editor import Editor, EditorConfig, save_editor
from editing.heldout import main, moved_digits


def test_moved_digits_are_reproducible_and_new() -> None:
    moved = moved_digits(4, seed=0)
    assert moved.shape == (4, 28, 28) and moved.dtype == np.float64
    assert 0 <= moved.min() and moved.max() <= 1
    np.testing.assert_array_equal(moved, moved_digits(4, seed=0))
    assert not np.array_equal(moved, moved_digits(4, seed=1))


def test_heldout_scores_shipped_and_sweep_editors(tmp_path, capsys) -> None:
    sweep = tmp_path / "sweep"
    for seed in (0, 1):  # an untrained editor's output layer is zero: it does not edit
        save_editor(Editor(EditorConfig(gmn_hidden=8, gmn_layers=1)),
                    sweep / "invert" / "untrained" / f"seed{seed}" / "editor")
    out = tmp_path / "out"
    argv = ["--edits", "invert", "--models", "shipped", "untrained", "--runs", str(sweep),
            "--seeds", "0", "1", "--n", "3", "--fit-steps", "300", "--out", str(out)]
    summary = main(argv)
    table = summary["table"]
    assert table["shipped"]["invert"]["ratio_mean"] < 0.01
    assert table["untrained"]["invert"]["ratios"] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert json.loads((out / "heldout.json").read_text())["table"] == table
    assert "untrained" in capsys.readouterr().out
    main(argv)  # a re-run replaces its own file
    assert [p.name for p in out.iterdir()] == ["heldout.json"]


def test_heldout_refuses_bad_input(tmp_path, refused) -> None:
    out = tmp_path / "out"
    refused(main, ["--models", "gmn", "--out", str(out)], "--runs")
    refused(main, ["--models", "gmn", "--runs", str(tmp_path), "--out", str(out)],
            "no finished editor run", "dilate")
    refused(main, ["--n", "0", "--out", str(out)], "--n")
    refused(main, ["--n", "500", "--out", str(out)], "n must be in")
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused(main, ["--edits", "invert", "--n", "2", "--out", str(out)], "--overwrite")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
