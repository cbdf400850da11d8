"""The results table command (editing.results): never an empty table, never overwrite."""

from __future__ import annotations

import json
from pathlib import Path

from editing.results import collect, main
from tests.editing.conftest import snapshot


def _fake_sweep(out: Path) -> Path:
    """Two finished runs' ``log.json`` (no training needed: ``results`` only reads logs)."""
    for model, seed, mse in [("identity", 0, 0.02), ("gmn", 0, 0.005)]:
        run = out / "dilate" / model / f"seed{seed}"
        run.mkdir(parents=True)
        log = {
            "config": {"edit": "dilate", "model": model, "seed": seed, "steps": 3,
                       "batch_size": 4},
            "test_mse": mse, "best_val_mse": mse, "best_step": 3, "wall_seconds": 1.0,
            "editor": {"gmn_hidden": 8, "gmn_layers": 1}, "val_steps": [0, 3],
            "val_mse": [0.02, mse],
        }
        (run / "log.json").write_text(json.dumps(log))
    return out


def test_writes_table_and_curves_into_the_sweep(tmp_path, capsys) -> None:
    runs = _fake_sweep(tmp_path / "sweep")
    results = main(["--runs", str(runs)])
    assert results["table"]["dilate"]["gmn"]["mean"] == 0.005
    assert json.loads((runs / "results.json").read_text()) == json.loads(json.dumps(results))
    assert "| GMN editor | 0.00500" in (runs / "results.md").read_text()
    assert (runs / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert "GMN editor" in capsys.readouterr().out
    main(["--runs", str(runs)])  # the sweep's own table is regenerated, no flag needed


def test_equal_training_time_compares_each_model_within_np_nfns_time(tmp_path) -> None:
    out = tmp_path / "sweep"
    curves = {"gmn": ([0.0, 5.0, 10.0], [0.02, 0.010, 0.004]),
              "np_nfn": ([0.0, 2.0, 4.0, 6.0], [0.02, 0.012, 0.006, 0.005]),
              "mlp": ([0.0, 0.5, 1.0], [0.02, 0.011, 0.009])}
    for seed in (0, 1):
        for model, (times, mse) in curves.items():
            run = out / "dilate" / model / f"seed{seed}"
            run.mkdir(parents=True)
            log = {"config": {"edit": "dilate", "model": model, "seed": seed, "steps": 10,
                              "batch_size": 4},
                   "test_mse": mse[-1], "best_val_mse": mse[-1], "best_step": 10,
                   "wall_seconds": times[-1], "editor": {}, "val_steps": [0, 5, 10],
                   "val_mse": mse, "val_train_seconds": times, "seconds_per_step": 0.1}
            (run / "log.json").write_text(json.dumps(log))
    results = main(["--runs", str(out)])
    row = results["equal_time"]["dilate"]
    assert row["seconds"] == 6.0  # NP-NFN's runs trained for 6 s, the GMN's for 10 s
    assert row["models"] == {"mlp": 0.009, "np_nfn": 0.005, "gmn": 0.010}  # the MLP was done
    text = (out / "results.md").read_text()
    assert "At equal training time" in text and "| dilate | 6 |" in text


def test_a_runs_typo_never_replaces_a_table(tmp_path, refused) -> None:
    out = tmp_path / "docs"
    out.mkdir()
    (out / "results.md").write_text("| the committed table |\n")
    before = snapshot(out)
    refused(main, ["--runs", str(tmp_path / "typo"), "--out", str(out)], "--runs", "typo")
    (tmp_path / "empty").mkdir()
    refused(main, ["--runs", str(tmp_path / "empty"), "--out", str(out)], "--runs",
            "no finished run")
    refused(main, ["--runs", str(tmp_path / "empty")], "--runs")
    assert snapshot(out) == before and snapshot(tmp_path / "empty") == {}
    refused(main, [], "--runs", "at least one")


def test_another_out_folder_is_never_overwritten(tmp_path, refused) -> None:
    runs = _fake_sweep(tmp_path / "sweep")
    out = tmp_path / "docs"
    out.mkdir()
    (out / "results.md").write_text("| another sweep's table |\n")
    (out / "README.md").write_text("mine")
    before = snapshot(out)
    refused(main, ["--runs", str(runs), "--out", str(out)], "--out", "--overwrite")
    assert snapshot(out) == before
    main(["--runs", str(runs), "--out", str(out), "--overwrite"])
    assert "GMN editor" in (out / "results.md").read_text()
    assert (out / "README.md").read_text() == "mine"
    assert set(collect(runs)["table"]["dilate"]) == {"identity", "gmn"}
    (out / "README.md").unlink()
    main(["--runs", str(runs), "--out", str(out)])  # only its own table there: a re-run
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "results.json", "results.md"]


def test_other_sweeps_join_the_table_as_variant_rows(tmp_path, refused) -> None:
    main_sweep = _fake_sweep(tmp_path / "sweep")
    oce = tmp_path / "oce"
    run = oce / "dilate" / "gmn" / "seed0"
    run.mkdir(parents=True)
    log = {"config": {"edit": "dilate", "model": "gmn", "seed": 0, "steps": 3, "batch_size": 4},
           "test_mse": 0.004, "best_val_mse": 0.004, "best_step": 3, "wall_seconds": 2.0,
           "editor": {"gmn_hidden": 8, "gmn_layers": 1, "gmn_heads": 8},
           "val_steps": [0, 3], "val_mse": [0.02, 0.004]}
    (run / "log.json").write_text(json.dumps(log))
    out = tmp_path / "table"
    results = main(["--runs", str(main_sweep), f"oce8={oce}", "--out", str(out)])
    assert list(results["table"]["dilate"]) == ["identity", "gmn", "gmn@oce8"]
    assert results["table"]["dilate"]["gmn@oce8"]["mean"] == 0.004
    text = (out / "results.md").read_text()
    assert "| GMN editor [oce8] | 0.00400" in text and "8 output heads" in text
    refused(main, ["--runs", str(main_sweep), f"oce8={oce}"], "--out")
    refused(main, ["--runs", f"oce8={oce}", "--out", str(out)], "--runs", "main sweep")
    refused(main, ["--runs", str(main_sweep), str(oce), "--out", str(out)], "NAME=FOLDER")
    refused(main, ["--runs", str(main_sweep), f"x={tmp_path / 'nope'}", "--out", str(out)],
            "nope", "not a folder")
