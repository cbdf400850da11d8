"""Editor training, run folders, the results table (editing.train, editing.results)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import editing
from common.persistence import FolderNotEmptyError
from editing.editor import EditorConfig
from editing.inr import init_siren_params
from editing.train import TrainConfig, main, train_editor
from tests.editing.conftest import snapshot

ROOT = Path(__file__).resolve().parents[2]


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


def test_moved_copies_add_their_inrs_to_the_train_split_only() -> None:
    data = _tiny_data()
    moved_params = init_siren_params(torch.arange(12) + 5000)
    data["moved"] = (moved_params, editing.render(moved_params, (12, 12)).clamp(0, 1))
    cfg = TrainConfig(edit="blur", model="mlp", steps=2, batch_size=4, eval_every=1,
                      moved_copies=1, train_limit=6)
    _, log = train_editor(cfg, EditorConfig(mlp_hidden=16), data=data, progress=False)
    assert log["config"]["moved_copies"] == 1 and log["n_test"] == 5
    assert log["n_train"] == 6 + 12
    with pytest.raises(ValueError, match="moved_copies"):
        TrainConfig(moved_copies=-1)


def test_identity_and_mlp_aug_runs() -> None:
    data = _tiny_data()
    _, log = train_editor(TrainConfig(edit="blur", model="identity"), data=data, progress=False)
    assert log["best_step"] == 0 and log["train_loss"] == []
    cfg = TrainConfig(edit="blur", model="mlp_aug", steps=2, batch_size=4, eval_every=1)
    _, log = train_editor(cfg, EditorConfig(mlp_hidden=16), data=data, progress=False)
    assert len(log["val_mse"]) == 3


def test_np_nfn_and_oce_gmn_train_and_the_plateau_schedule_halves_the_lr(tmp_path) -> None:
    data = _tiny_data()
    cfg = TrainConfig(edit="dilate", model="np_nfn", steps=4, batch_size=4, eval_every=1,
                      schedule="plateau", patience=1, warmup=1)
    _, log = train_editor(cfg, EditorConfig(nfn_channels=8, nfn_layers=1), tmp_path / "nfn",
                          data, progress=False)
    # every validation that did not improve on the best halved the learning rates
    best, expected, halvings = log["val_mse"][0], [], 0
    for v in log["val_mse"][1:]:
        if v < best:
            best = v
        else:
            halvings += 1
        expected.append(halvings)
    assert log["lr_halvings"] == expected
    assert editing.load_editor(tmp_path / "nfn").config.model == "np_nfn"
    cfg = TrainConfig(edit="dilate", model="gmn", steps=2, batch_size=4, eval_every=1)
    editor, _ = train_editor(cfg, EditorConfig(gmn_hidden=8, gmn_layers=1, gmn_heads=4),
                             tmp_path / "oce", data, progress=False)
    assert editor.metanet.gmn.edge_heads.abs().sum() > 0  # the heads trained
    assert editing.load_editor(tmp_path / "oce").config.gmn_heads == 4
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")


def test_runs_saved_before_the_schedule_option_are_still_recognised(tmp_path, capsys) -> None:
    argv = ["--edit", "dilate", "--models", "identity", "--steps", "2", "--train-limit", "8",
            "--val-limit", "4", "--test-limit", "4", "--out", str(tmp_path), "--quiet"]
    main(argv)
    path = tmp_path / "dilate" / "identity" / "seed0" / "config.json"
    saved = json.loads(path.read_text())
    for key in ("schedule", "patience", "moved_copies"):  # as written before these options
        del saved["train"][key]
    path.write_text(json.dumps(saved))
    main(argv)
    assert "skip" in capsys.readouterr().out


def test_cli_sweep_writes_table_and_skips_finished(tmp_path, capsys) -> None:
    argv = [
        "--edit", "dilate", "--models", "identity", "mlp", "--seeds", "0", "1", "--steps", "2",
        "--batch-size", "4", "--mlp-hidden", "16", "--train-limit", "8", "--val-limit", "4",
        "--test-limit", "4", "--out", str(tmp_path), "--quiet",
    ]
    results = main(argv)
    table = json.loads((tmp_path / "results.json").read_text())["table"]
    assert set(table["dilate"]) == {"identity", "mlp"} and table["dilate"]["mlp"]["n"] == 2
    assert results["table"]["dilate"]["identity"]["std"] == 0.0
    assert "| no edit |" in (tmp_path / "results.md").read_text()
    main(argv)
    assert "skip" in capsys.readouterr().out


def test_sweep_ignores_other_models_options_but_not_its_own(tmp_path, capsys, refused) -> None:
    argv = ["--edit", "dilate", "--models", "mlp", "--steps", "2", "--batch-size", "4",
            "--mlp-hidden", "16", "--train-limit", "8", "--val-limit", "4", "--test-limit", "4",
            "--out", str(tmp_path), "--quiet"]
    main(argv)
    before = snapshot(tmp_path)
    main([*argv, "--gmn-skip-layers", "all", "--nfn-channels", "7"])  # not the MLP's options
    assert "skip" in capsys.readouterr().out and snapshot(tmp_path) == before
    refused(main, [*argv, "--mlp-depth", "2"], "--mlp-depth", "--overwrite")
    assert snapshot(tmp_path) == before


def test_train_config_rejects_unknown_edit() -> None:
    with pytest.raises(ValueError, match="unknown edit"):
        TrainConfig(edit="recolor")


# ----------------------------------------------------------------------------- command line
SWEEP = ["--edit", "dilate", "--models", "identity", "--train-limit", "8", "--val-limit", "4",
         "--test-limit", "4", "--quiet"]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--steps", "-1"], "--steps"),
        (["--steps", "0"], "--steps"),
        (["--batch-size", "0"], "--batch-size"),
        (["--gamma-lr", "0"], "--gamma-lr"),
        (["--weight-decay", "-1e-4"], "--weight-decay"),
        (["--warmup", "-1"], "--warmup"),
        (["--grad-clip", "-1"], "--grad-clip"),
        (["--eval-every", "0"], "--eval-every"),
        (["--gmn-hidden", "0"], "--gmn-hidden"),
        (["--gmn-layers", "-2"], "--gmn-layers"),
        (["--mlp-hidden", "0"], "--mlp-hidden"),
        (["--mlp-depth", "0"], "--mlp-depth"),
        (["--gamma-init", "0"], "--gamma-init"),
        (["--gamma-init", "nan"], "--gamma-init"),
        (["--train-limit", "-1"], "--train-limit"),
        (["--val-limit", "-1"], "--val-limit"),
        (["--test-limit", "-3"], "--test-limit"),
        (["--seeds", "0", "-1"], "--seeds"),
        (["--threads", "-1"], "--threads"),
        (["--device", "gpu9"], "--device"),
        (["--edit", "recolor"], "--edit"),
        (["--edit", "all", "dilate"], "--edit"),
        (["--models", "transformer"], "--models"),
        (["--output-scale", "max"], "--output-scale"),
        (["--steps", "ten"], "--steps"),
    ],
)
def test_cli_refuses_bad_values_before_any_work(tmp_path, refused, argv, flag) -> None:
    out = tmp_path / "out"
    refused(main, [*argv, "--out", str(out)], flag)
    assert not out.exists()


def test_module_entry_point_refuses_in_one_line(tmp_path) -> None:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "editing.train", "--lr", "nan", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--lr" in done.stderr and "Traceback" not in done.stderr and not out.exists()


def test_cli_refuses_a_folder_with_a_users_file(tmp_path, refused) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "dilate").mkdir()
    (out / "dilate" / "plan.md").write_text("mine too")
    before = snapshot(out)
    refused(main, [*SWEEP, "--out", str(out)], "--out", "notes.txt", "--overwrite")
    assert snapshot(out) == before
    main([*SWEEP, "--out", str(out), "--overwrite"])  # the user asked: their files stay
    assert (out / "notes.txt").read_text() == "my notes"
    assert (out / "dilate" / "identity" / "seed0" / "log.json").exists()
    assert (out / "results.md").exists()


def test_cli_resumes_but_never_mixes_settings(tmp_path, refused, capsys) -> None:
    out = tmp_path / "out"
    main([*SWEEP, "--out", str(out)])
    before = snapshot(out)
    main([*SWEEP, "--out", str(out)])  # same settings: the finished run is skipped
    assert "skip" in capsys.readouterr().out and snapshot(out) == before
    refused(main, [*SWEEP, "--out", str(out), "--warmup", "5"], "--warmup", "--overwrite")
    assert snapshot(out) == before
    main([*SWEEP, "--out", str(out), "--warmup", "5", "--overwrite"])
    saved = json.loads((out / "dilate" / "identity" / "seed0" / "config.json").read_text())
    assert saved["train"]["warmup"] == 5


def test_train_editor_refuses_an_occupied_run_folder(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.json").write_text("{}")
    cfg = TrainConfig(edit="blur", model="identity")
    with pytest.raises(FolderNotEmptyError, match="log.json"):
        train_editor(cfg, data=_tiny_data(), out=run, progress=False)
    assert (run / "log.json").read_text() == "{}"
    train_editor(cfg, data=_tiny_data(), out=run, progress=False, overwrite=True)
    assert json.loads((run / "log.json").read_text())["config"]["edit"] == "blur"
