"""``python -m predict.zoo`` / ``predict.train``: every bad value is refused before any work,
in one line on stderr with exit status 2, and nothing is written."""

import pytest

from common.errors import ConfigError
from predict import train, zoo
from predict.zoo import ZooConfig, build_zoo

ZOO_BAD = [
    (["--batch-size", "0"], ["--batch-size"]),
    (["--min-steps", "50", "--max-steps", "10"], ["--min-steps", "--max-steps"]),
    (["--size", "-5"], ["--size"]),
    (["--min-steps", "0"], ["--min-steps"]),
    (["--max-steps", "-1"], ["--max-steps"]),
    (["--seed", "-1"], ["--seed"]),
    (["--data-seed", "-3"], ["--data-seed"]),
    (["--threads", "-1"], ["--threads"]),
    (["--kind", "imagenet"], ["--kind"]),
    (["--size", "ten"], ["--size"]),
]

TRAIN_BAD = [
    (["--hidden", "0"], ["--hidden"]),
    (["--layers", "0"], ["--layers"]),
    (["--steps", "0"], ["--steps"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--lr", "0"], ["--lr"]),
    (["--lr", "nan"], ["--lr"]),
    (["--gmn-lr", "-1e-3"], ["--gmn-lr"]),
    (["--gmn-lr", "inf"], ["--gmn-lr"]),
    (["--weight-decay", "-1"], ["--weight-decay"]),
    (["--zoo-size", "-5"], ["--zoo-size"]),
    (["--zoo-min-steps", "0"], ["--zoo-min-steps"]),
    (["--zoo-min-steps", "30", "--zoo-max-steps", "10"], ["--zoo-min-steps", "--zoo-max-steps"]),
    (["--zoo-seed", "-1"], ["--zoo-seed"]),
    (["--seeds", "0", "-1"], ["--seeds"]),
    (["--threads", "-2"], ["--threads"]),
    (["--device", "gpu0"], ["--device"]),
    (["--zoos", "imagenet"], ["--zoos"]),
    (["--methods", "XGBoost"], ["--methods"]),
    (["--splits", "7%"], ["--splits"]),
    (["--readout", "attention"], ["--readout"]),
    (["--ood-hparam", "seed"], ["--ood-hparam"]),
]


@pytest.fixture(autouse=True)
def _no_work(monkeypatch):
    """Fail fast (instead of building a 2000-network zoo) if work starts before validation."""

    def started(*args, **kwargs):
        raise AssertionError("the command started working before refusing a bad value")

    monkeypatch.setattr(zoo, "build_zoo", started)
    monkeypatch.setattr(train, "build_zoo", started)


def _refused(main, argv, flags, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for flag in flags:
        assert flag in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a refused command wrote files"


@pytest.mark.parametrize("argv, flags", ZOO_BAD)
def test_zoo_refuses_bad_values(argv, flags, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GMN_CACHE", str(tmp_path / "cache"))
    _refused(zoo.main, [*argv, "--cache", str(tmp_path / "cache")], flags, capsys, tmp_path)


@pytest.mark.parametrize("argv, flags", TRAIN_BAD)
def test_train_refuses_bad_values(argv, flags, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GMN_CACHE", str(tmp_path / "cache"))
    argv = [*argv, "--out", str(tmp_path / "out"), "--save-weights", str(tmp_path / "weights")]
    _refused(train.main, argv, flags, capsys, tmp_path)


def test_zoo_cache_that_is_a_file_is_refused(capsys, tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_:
        zoo.main(["--cache", str(tmp_path / "cache")])
    assert exit_.value.code == 2 and "--cache" in capsys.readouterr().err
    assert (tmp_path / "cache").read_text() == "not a folder"


def test_library_refuses_what_the_command_line_refuses(tmp_path):
    # ``build_zoo`` here is the real one (imported before the fixture patches the module)
    with pytest.raises(ConfigError, match="--size"):
        build_zoo(ZooConfig(size=-5), root=tmp_path)
    with pytest.raises(ConfigError, match="--min-steps"):
        build_zoo(ZooConfig(min_steps=9, max_steps=3), root=tmp_path)
    with pytest.raises(ConfigError, match="--hidden"):
        train.run(train.TrainConfig(hidden=0), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
