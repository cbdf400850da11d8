import json
import math

import pytest
import torch

from lopt import GMNOptimizer
from lopt.calibrate import calibrate, fold, main, valid_curve
from tasks import get_task
from tests.lopt.helpers import max_diff, random_lopt, train


@pytest.fixture(scope="module")
def task():
    return get_task("digits_mlp32")


@pytest.mark.parametrize("learned_wd", [False, True])
def test_fold_bakes_lr_and_weight_decay_into_the_default(task, learned_wd):
    lo = random_lopt()
    if learned_wd:
        lo.scales["log_weight_decay"] = torch.tensor(math.log(0.05), dtype=torch.float64)
        lo.update = type(lo.update)(alpha_init=1e-2, weight_decay_init=0.05)
    folded = fold(lo, 0.6, 0.3)
    m1, m2 = task.make_model(0).double(), task.make_model(0).double()
    train(m1, GMNOptimizer(m1, checkpoint=lo, lr=0.6, weight_decay=0.3), task, 4)
    train(m2, GMNOptimizer(m2, checkpoint=folded), task, 4)
    assert max_diff(dict(m1.named_parameters()), dict(m2.named_parameters())) < 1e-12
    assert ("log_weight_decay" in lo.scales) == learned_wd  # the original is untouched
    with pytest.raises(ValueError, match="lr > 0"):
        fold(lo, 0.0, 0.1)


def test_calibrate_picks_the_lowest_validation_curve(task):
    lo = random_lopt(dtype=torch.float32, alpha=1e-3)
    cal, report = calibrate(lo, task, [0.01, 1.0], [0.0], steps=20, runs=1, eval_every=10,
                            progress=False)
    scores = {g["lr"]: g["score"] for g in report["grid"]}
    assert report["best"]["lr"] == min(scores, key=scores.get) == 1.0  # lr x0.01 barely moves
    assert len(report["grid"][0]["mean_valid_curve"]) == 2
    torch.testing.assert_close(cal.scales["log_alpha"], lo.scales["log_alpha"])
    with pytest.raises(ValueError, match="at least one"):
        calibrate(lo, task, [], [0.0], steps=20)
    with pytest.raises(ValueError, match="weight decays >= 0"):
        calibrate(lo, task, [1.0], [-0.1], steps=20)


def test_valid_curve_measures_the_weight_decay_on_held_out_examples(task):
    lo = random_lopt(dtype=torch.float32, alpha=1e-2)
    plain = valid_curve(lo, task, 1.0, 0.0, run=0, steps=10, eval_every=5)
    decayed = valid_curve(lo, task, 1.0, 5.0, run=0, steps=10, eval_every=5)
    assert len(plain) == 2 and plain != decayed  # the weight decay reaches the optimizer
    assert plain == valid_curve(lo, task, 1.0, 0.0, run=0, steps=10, eval_every=5)
    other_run = valid_curve(lo, task, 1.0, 0.0, run=1, steps=10, eval_every=5)
    assert other_run != plain  # another split and initialisation


def test_set_weight_decay_adds_or_replaces_the_scalar():
    lo = random_lopt()
    assert lo.weight_decay == 0.0 and "log_weight_decay" not in lo.scales
    lo.set_weight_decay(0.2)
    assert lo.weight_decay == pytest.approx(0.2) and lo.update.weight_decay_init == 0.2
    lo.set_weight_decay(0.5)
    assert lo.weight_decay == pytest.approx(0.5) and lo.update.weight_decay_init == 0.2
    assert lo.scales["log_weight_decay"].dtype == lo.scales["log_alpha"].dtype
    with pytest.raises(ValueError, match="positive"):
        lo.set_weight_decay(0.0)


@pytest.mark.parametrize("argv, flag", [
    (["--task", "nope"], "--task"), (["--lrs", "0"], "--lrs"), (["--steps", "0"], "--steps"),
    (["--weight-decays", "-1"], "--weight-decays"), (["--runs", "0"], "--runs"),
    (["--checkpoint", ""], "--checkpoint"), (["--eval-every", "0"], "--eval-every"),
])
def test_cli_rejects_bad_values_before_writing_anything(tmp_path, capsys, argv, flag):
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", "shipped", "--out", str(tmp_path / "cal"), *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and flag in err
    assert not (tmp_path / "cal").exists()


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_cli_never_overwrites_the_checkpoint_or_a_folder_with_files(tmp_path, capsys):
    from lopt import load_learned_optimizer, save_learned_optimizer

    ckpt = save_learned_optimizer(load_learned_optimizer(), tmp_path / "ckpt")
    before = _snapshot(ckpt)
    for source, out in ((ckpt, ckpt), (ckpt / "lopt.json", ckpt),
                        (ckpt, tmp_path / "ckpt" / ".." / "ckpt")):
        with pytest.raises(SystemExit):
            main(["--checkpoint", str(source), "--out", str(out), "--steps", "20"])
        assert "--checkpoint folder" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("x")
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "other"), "--steps", "20"])
    assert "--overwrite" in capsys.readouterr().err
    assert _snapshot(ckpt) == before and _snapshot(tmp_path / "other") == {"mine.txt": b"x"}


def test_cli_writes_a_loadable_checkpoint_and_report(tmp_path, task):
    from lopt.meta_train import main as meta_main

    meta_main(["--task", "digits_mlp32", "--truncation", "2", "--horizon", "4", "--hidden", "4",
               "--layers", "1", "--tasks-per-step", "1", "--threads", "1", "--steps", "1",
               "--out", str(tmp_path / "raw")])
    main(["--checkpoint", str(tmp_path / "raw"), "--out", str(tmp_path / "cal"), "--lrs", "1",
          "--weight-decays", "0", "0.5", "--steps", "10", "--runs", "1", "--eval-every", "5"])
    report = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert len(report["grid"]) == 2 and (tmp_path / "cal" / "calibration.png").exists()
    cfg = json.loads((tmp_path / "cal" / "lopt.json").read_text())
    assert cfg["calibration"] == report["best"]
    model = task.make_model(0)
    losses = train(model, GMNOptimizer(model, checkpoint=tmp_path / "cal"), task, 3)
    assert all(math.isfinite(v) for v in losses)


def test_calibrating_on_a_family_weighs_every_run_by_its_own_best():
    from tasks.families import MixtureFamily, MLPFamily, TransformerFamily

    family = MixtureFamily("m", (MLPFamily("a", widths=(8,), depths=(1,)),
                                 TransformerFamily("b", dims=(8,), depths=(1,))))
    lo = random_lopt(dtype=torch.float32, alpha=1e-3)
    _, report = calibrate(lo, family, [0.01, 1.0], [0.0], steps=10, runs=4, eval_every=5,
                          progress=False)
    assert report["normalized"] and len(set(report["run_tasks"])) >= 2
    assert {n.split("/")[1] for n in report["run_tasks"]} == {"a", "b"}
    raw = {(g["lr"], g["weight_decay"]): [valid_curve(lo, t, g["lr"], g["weight_decay"], r, 10, 5)
                                          for r, t in enumerate(family.sample_many(4, 0))]
           for g in report["grid"]}
    best_per_run = [min(min(c[r]) for c in raw.values()) for r in range(4)]
    for g in report["grid"]:  # each run's curve over its best anywhere on the grid
        runs = raw[g["lr"], g["weight_decay"]]
        assert g["run_best"] == [min(c) for c in runs]
        expected = [sum(c[i] / best_per_run[r] for r, c in enumerate(runs)) / 4 for i in range(2)]
        assert g["mean_valid_curve"] == pytest.approx(expected, rel=1e-12)
        assert g["score"] == min(g["mean_valid_curve"])
    top = min(report["grid"], key=lambda g: g["score"])
    assert report["best"]["lr"] == top["lr"] == 1.0  # lr x0.01 barely moves
