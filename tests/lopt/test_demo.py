"""``python -m lopt.demo``: every learned optimizer and Adam on every task, from the same
initialisation; a bad command line is refused before anything is written."""

import json

import pytest

from lopt import save_learned_optimizer
from lopt.demo import main
from tests.lopt.helpers import random_lopt


def test_demo_trains_each_optimizer_on_each_task_and_writes_table_and_figure(tmp_path):
    save_learned_optimizer(random_lopt(), tmp_path / "mine")
    out = tmp_path / "demo"
    payload = main(["--tasks", "digits_mlp32", "digits_cnn", "--adam-lrs", "3.5e-3", "1e-2",
                    "--learned", "digits", str(tmp_path / "mine"), "--steps", "6",
                    "--eval-every", "3", "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "demo.json"]
    saved = json.loads((out / "demo.json").read_text())
    assert saved["summary"] == payload["summary"]
    for task in ("digits_mlp32", "digits_cnn"):
        rows = saved["summary"][task]
        assert len(rows) == 3 and any(name.startswith("Adam") for name in rows)
        curves = saved["curves"][task]
        assert all(c["steps"] == [0, 3, 6] for c in curves.values())
        # same initialisation: every optimizer starts from the same test loss
        assert len({c["test_loss"][0] for c in curves.values()}) == 1


@pytest.mark.parametrize("argv, message", [
    (["--adam-lrs", "0.01"], "one lr per task"),
    (["--adam-lrs", "0.01", "-1"], "must be positive"),
    (["--learned", "no/such/folder"], "not a learned-optimizer checkpoint"),
])
def test_bad_options_are_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "demo"
    with pytest.raises(SystemExit):
        main([*argv, "--steps", "3", "--eval-every", "3", "--out", str(out)])
    assert message in capsys.readouterr().err
    assert not out.exists()
