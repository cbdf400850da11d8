"""``python -m benchmarks.graph_core``: the graph core's benchmark (outside the library)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from benchmarks import graph_core as bench
from common import persistence
from graphs import ParameterGraph

ROOT = Path(__file__).resolve().parents[2]


RECORDED = ROOT / "docs/results/graphs/results.json"
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


def test_models_are_the_ones_behind_the_readme_table():
    recorded = persistence.read_json(RECORDED)["rows"]
    assert [r["model"] for r in recorded] == list(bench.MODELS)
    for r in recorded:
        entry = bench.MODELS[r["model"]]
        assert r["library"] == (entry.library or "project"), r["model"]
        assert r["build"].startswith("symbolic" if entry.inputs is None else "recorded")
        if entry.library is None:  # the real architectures: one is rebuilt below
            pg = ParameterGraph.from_module(entry.make())
            assert (pg.num_params, pg.num_nodes, pg.num_edges) == (r["params"], r["nodes"],
                                                                    r["edges"]), r["model"]


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")
def test_a_real_architecture_is_recorded_from_its_example_inputs():
    row = bench.measure("transformers.bert_tiny", bench.BenchmarkConfig(repeats=1, forward=False))
    (recorded,) = [r for r in persistence.read_json(RECORDED)["rows"] if r["model"] == row["model"]]
    assert row["build"] == "recorded [1, 16]" and row["library"] == "transformers"
    assert (row["params"], row["nodes"], row["edges"]) == (recorded["params"], recorded["nodes"],
                                                           recorded["edges"])
    assert 20 < row["graph_bytes_per_edge"] < 40 and "forward_s" not in row


def test_a_missing_library_skips_its_models(monkeypatch):
    monkeypatch.setattr(bench.model_libraries, "load", lambda name: None)
    row = bench.measure("torchvision.resnet18", bench.BenchmarkConfig(repeats=1))
    assert row == {"model": "torchvision.resnet18", "skipped": "torchvision is not installed"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert bench.available_models() == [n for n, m in bench.MODELS.items() if m.library is None]


def test_measure_reports_build_encode_and_forward():
    row = bench.measure("mlp_1k", bench.BenchmarkConfig(repeats=1, hidden=4, layers=1))
    assert (row["params"], row["nodes"], row["edges"]) == (1210, 92, 1210)
    assert row["build"] == "symbolic" and row["library"] == "project"
    for key in ("build_s", "build_median_s", "encode_s", "param_pass_s", "forward_s",
                "graph_bytes_per_edge"):
        assert row[key] > 0, key
    assert row["build_peak_bytes_per_edge"] >= 0  # 0 in a process whose freed memory it reuses
    big = bench.measure("mlp_1k", bench.BenchmarkConfig(repeats=1, forward_max_edges=1000))
    assert "forward_s" not in big and "1,210 edges" in big["forward_skipped"]


def test_writes_its_reports_and_refuses_a_used_folder(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["--models", "mlp_1k", "--repeats", "1", "--no-forward", "--out", str(out)]
    result = bench.main(argv)  # the model is measured in a spawned process
    assert sorted(p.name for p in out.iterdir()) == sorted(bench.OUTPUTS)
    saved = persistence.read_json(out / "results.json")
    assert saved == result and saved["config"]["forward"] is False
    assert "forward_s" not in saved["rows"][0] and saved["rows"][0]["edges"] == 1210
    md = (out / "results.md").read_text()
    assert f"Command: `python -m benchmarks.graph_core {' '.join(argv)}`" in md
    assert "\n| model | build | params |" in md and "| mlp_1k | symbolic | 1,210 |" in md
    assert (out / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        bench.main(argv)
    assert exit.value.code == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--repeats", "0"], ["--models", "nope"], ["--threads", "-1"]])
def test_bad_values_are_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        bench.main(argv)
    assert exit.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
