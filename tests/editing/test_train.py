"""Editor training, run folders, the results table (editing.train, editing.results)."""

from __future__ import annotations

import json

import pytest
import torch

import editing
from editing.editor import EditorConfig
from editing.inr import init_siren_params
from editing.train import TrainConfig, main, train_editor


def _tiny_data() -> dict[str, tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """Random-init SIRENs and their own renders as 'ground-truth' images (no dataset needed)."""
    out = {}
    for i, (split, n) in enumerate({"train": 12, "val": 6, "test": 5}.items()):
        params = init_siren_params(torch.arange(n) + 1000 * i)
        out[split] = (params, editing.render(params, (12, 12)).clamp(0, 1))
    return out


def test_tiny_train_run_writes_outputs_and_loads(tmp_path) -> None:
    cfg = TrainConfig(edit="invert", model="gmn", steps=3, batch_size=4, eval_every=2)
    ecfg = EditorConfig(gmn_hidden=8, gmn_layers=1)
    editor, log = train_editor(cfg, ecfg, tmp_path / "run", _tiny_data(), progress=False)
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "editor.safetensors", "editor.json", "log.json", "curves.png"} <= names
    saved = json.loads((tmp_path / "run" / "log.json").read_text())
    assert len(saved["train_loss"]) == 3 and saved["val_steps"] == [0, 2, 3]
    assert saved["test_mse"] == pytest.approx(log["test_mse"]) and saved["n_test"] == 5
    assert json.loads((tmp_path / "run" / "config.json").read_text())["editor"]["gmn_hidden"] == 8
    loaded = editing.load_editor(tmp_path / "run")
    params = _tiny_data()["test"][0]
    for k, v in editor(params).items():
        torch.testing.assert_close(loaded(params)[k], v)


def test_identity_and_mlp_aug_runs() -> None:
    data = _tiny_data()
    _, log = train_editor(TrainConfig(edit="blur", model="identity"), data=data, progress=False)
    assert log["best_step"] == 0 and log["train_loss"] == []
    cfg = TrainConfig(edit="blur", model="mlp_aug", steps=2, batch_size=4, eval_every=1)
    _, log = train_editor(cfg, EditorConfig(mlp_hidden=16), data=data, progress=False)
    assert len(log["val_mse"]) == 3


def test_cli_sweep_writes_table_and_skips_finished(tmp_path, capsys) -> None:
    argv = [
        "--edit", "dilate", "--models", "identity", "mlp", "--seeds", "0", "1", "--steps", "2",
        "--batch-size", "4", "--mlp-hidden", "16", "--train-limit", "8", "--val-limit", "4",
        "--test-limit", "4", "--out", str(tmp_path), "--quiet",
    ]  # fmt: skip
    results = main(argv)
    table = json.loads((tmp_path / "results.json").read_text())["table"]
    assert set(table["dilate"]) == {"identity", "mlp"} and table["dilate"]["mlp"]["n"] == 2
    assert results["table"]["dilate"]["identity"]["std"] == 0.0
    assert "| no edit |" in (tmp_path / "results.md").read_text()
    main(argv)
    assert "skip" in capsys.readouterr().out


def test_cli_rejects_unknown_edit(tmp_path) -> None:
    with pytest.raises(SystemExit):
        main(["--edit", "recolor", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="unknown edit"):
        TrainConfig(edit="recolor")
