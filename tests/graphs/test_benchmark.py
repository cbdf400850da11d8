"""``python -m benchmarks.graph_core``: the graph core's benchmark (outside the library)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import graph_core as bench
from common import persistence
from graphs import ParameterGraph

ROOT = Path(__file__).resolve().parents[2]


def test_models_are_the_ones_behind_the_readme_table():
    recorded = persistence.read_json(ROOT / "docs/results/graphs/results.json")["rows"]
    assert [r["model"] for r in recorded] == list(bench.MODELS)
    for r in recorded:
        pg = ParameterGraph.from_module(bench.MODELS[r["model"]]())
        assert (pg.num_params, pg.num_nodes, pg.num_edges) == (r["params"], r["nodes"],
                                                                r["edges"]), r["model"]


def test_measure_reports_build_encode_and_forward():
    row = bench.measure("mlp_1k", bench.BenchmarkConfig(repeats=1, hidden=4, layers=1))
    assert (row["params"], row["nodes"], row["edges"]) == (1210, 92, 1210)
    for key in ("build_s", "build_median_s", "encode_s", "param_pass_s", "forward_s"):
        assert row[key] > 0, key


def test_writes_its_reports_and_refuses_a_used_folder(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["--models", "mlp_1k", "--repeats", "1", "--no-forward", "--out", str(out)]
    result = bench.main(argv)  # the model is measured in a spawned process
    assert sorted(p.name for p in out.iterdir()) == sorted(bench.OUTPUTS)
    saved = persistence.read_json(out / "results.json")
    assert saved == result and saved["config"]["forward"] is False
    assert "forward_s" not in saved["rows"][0] and saved["rows"][0]["edges"] == 1210
    assert (out / "results.md").read_text().startswith("| model | params |")
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
