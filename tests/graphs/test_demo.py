"""``python -m graphs.demo``: what ``make demo`` runs, its options and its output folder."""

from __future__ import annotations

import pytest

from common import persistence
from graphs import demo


def test_demo_shows_every_model_and_its_symmetries(capsys):
    rows = demo.main([])
    out = capsys.readouterr().out
    assert "ResNet-18" in out and "11,689,512" in out
    assert [r["model"] for r in rows] == [label for label, _, _ in demo.MODELS.values()]
    checked = [r for r in rows if "net_diff" in r]
    assert len(checked) == len(rows) - 1  # all but ResNet-18
    for r in checked:  # float64: true symmetries and equivariance hold to round-off
        assert max(r["net_diff"], r["gmn_diff"], r["embed_diff"]) < 1e-9, r


def test_demo_writes_results_and_refuses_a_used_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["--models", "mlp", "--hidden", "8", "--layers", "1", "--out", str(out)]
    rows = demo.main(argv)
    saved = persistence.read_json(out / "results.json")
    assert saved["rows"] == rows and saved["config"]["models"] == ["mlp"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        demo.main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    again = demo.main([*argv, "--overwrite"])  # the same numbers (build time aside)
    assert [r | {"build_s": 0} for r in again] == [r | {"build_s": 0} for r in rows]


@pytest.mark.parametrize("argv", [["--hidden", "0"], ["--models", "nope"], ["--layers", "x"]])
def test_demo_bad_values_are_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        demo.main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m graphs.demo: error:")
