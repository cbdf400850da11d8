import json

from lopt.throughput import main


def test_throughput_benchmark_writes_its_table(tmp_path):
    rows = main(["--processes", "1", "--populations", "1", "2", "--steps", "2", "--truncations",
                 "1", "--hidden", "4", "--layers", "1", "--out", str(tmp_path)])
    assert [r["population"] for r in rows] == [1, 2]
    for r in rows:
        assert "error" not in r, r
        assert r["inner_steps_per_s"] > 0 and r["peak_mem_mb"] > 0
    assert rows[0]["relative_cost"] == 1.0
    saved = json.loads((tmp_path / "throughput.json").read_text())
    assert len(saved["results"]) == 2
    assert (tmp_path / "throughput.png").exists() and (tmp_path / "throughput.md").exists()
