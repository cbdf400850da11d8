"""meta_train never loses work: bad values stop before anything is written, folders it did
not write are refused, and a run killed at any moment resumes exactly."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lopt.meta_train import main
from tests.lopt.test_meta_train import TINY, tiny

ROOT = Path(__file__).resolve().parents[2]


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def _exit_2(capsys, argv) -> str:
    capsys.readouterr()  # drop what earlier runs printed
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("flag, value", [
    ("--truncation", "0"), ("--save-every", "0"), ("--hidden", "0"), ("--alpha-init", "0"),
    ("--steps", "-5"), ("--steps", "0"), ("--outer-lr", "-1"), ("--grad-clip", "0"),
    ("--layers", "0"), ("--horizon", "0"), ("--population", "0"), ("--es-pairs", "0"),
    ("--outer-lr", "nan"), ("--alpha-init", "inf"), ("--task", "nope"), ("--model", "lstm"),
    ("--weight-decay-init", "-1"), ("--tasks-per-step", "0"),
])
def test_bad_values_exit_2_in_one_line_and_write_nothing(tmp_path, capsys, flag, value):
    out = tmp_path / "run"
    err = _exit_2(capsys, [*TINY, "--steps", "2", "--out", str(out), flag, value])
    assert flag in err
    assert not out.exists()


def test_a_bad_init_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    (tmp_path / "init").mkdir()
    (tmp_path / "init" / "lopt.json").write_text("{broken")
    (tmp_path / "init" / "lopt.safetensors").write_bytes(b"")
    err = _exit_2(capsys, tiny("--steps", "1", "--out", str(tmp_path / "run"), "--init",
                               str(tmp_path / "init")))
    assert "lopt.json" in err and not (tmp_path / "run").exists()


def test_a_new_run_refuses_a_folder_with_files_and_overwrite_replaces_only_its_own(tmp_path,
                                                                                  capsys):
    out = tmp_path / "run"
    main([*TINY, "--steps", "2", "--out", str(out)])
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    for argv in ([*TINY, "--steps", "2", "--out", str(out)],
                 [*TINY, "--steps", "0", "--out", str(out)]):
        _exit_2(capsys, argv)
        assert _snapshot(out) == before
    main([*TINY, "--steps", "1", "--out", str(out), "--overwrite"])
    assert (out / "notes.txt").read_text() == "mine"
    assert len((out / "log.csv").read_text().splitlines()) == 2  # the new run's one step


def test_resume_refuses_a_folder_without_training_state(tmp_path, capsys):
    from lopt import load_learned_optimizer, save_learned_optimizer

    cal = tmp_path / "calibrated"  # what lopt.calibrate --out writes: weights, no state
    save_learned_optimizer(load_learned_optimizer(), cal)
    before = _snapshot(cal)
    err = _exit_2(capsys, [*TINY, "--steps", "2", "--out", str(cal), "--resume"])
    assert "config.json" in err and "lopt.meta_train" in err
    assert _snapshot(cal) == before
    err = _exit_2(capsys, [*TINY, "--steps", "2", "--out", str(tmp_path / "none"), "--resume"])
    assert not (tmp_path / "none").exists()


def test_resume_refuses_flags_that_contradict_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    main([*TINY, "--steps", "1", "--out", str(out)])
    before = _snapshot(out)
    err = _exit_2(capsys, [*TINY, "--steps", "2", "--out", str(out), "--resume",
                           "--hidden", "8"])
    assert "--hidden 8" in err and "4" in err
    assert _snapshot(out) == before
    # flags left out come from the run's config.json; run-control flags may change
    main(["--steps", "2", "--out", str(out), "--resume", "--save-every", "1"])
    assert load_file(str(out / "lopt.safetensors"))["net.edge_out.weight"].shape[-1] == 4


def test_resume_of_a_finished_run_writes_nothing(tmp_path):
    out = tmp_path / "run"
    main([*TINY, "--steps", "2", "--out", str(out)])
    before = {k: v for k, v in _snapshot(out).items() if k != "meta_loss.png"}
    main([*TINY, "--steps", "1", "--out", str(out), "--resume"])
    assert {k: v for k, v in _snapshot(out).items() if k != "meta_loss.png"} == before


def _rows(out: Path) -> int:
    """Outer steps in the run's last complete checkpoint (as a reader sees it)."""
    from common.persistence import read_checkpoint

    blobs = read_checkpoint(out, ["log.csv"])
    return len(blobs["log.csv"].decode().splitlines()) - 1 if blobs else 0


def _run(out: Path, steps: int, resume: bool = False) -> subprocess.Popen:
    argv = [sys.executable, "-m", "lopt.meta_train", *TINY, "--steps", str(steps), "--out",
            str(out), "--save-every", "1"] + (["--resume"] if resume else [])
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_killed_at_random_moments_then_resumed_equals_the_uninterrupted_run(tmp_path):
    """SIGKILL twice while checkpoints are being written every outer step; --resume then
    continues from the last complete checkpoint and ends bit for bit where an uninterrupted
    run ends."""
    steps = 14
    ref = tmp_path / "ref"
    assert _run(ref, steps).wait(timeout=300) == 0
    out, rng = tmp_path / "killed", random.Random(1)
    for attempt in range(2):
        rows = _rows(out)
        proc = _run(out, steps, resume=attempt > 0)
        # wait until it has written a new checkpoint, then kill it at a random moment
        deadline = time.time() + 120
        while _rows(out) <= rows and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        leftovers = {p.name for p in out.iterdir()} - {"config.json", "lopt.json",
                                                       "lopt.safetensors", "train_state.json",
                                                       "train_state.safetensors", "log.csv",
                                                       "meta_loss.png"}
        assert leftovers <= {".checkpoint.staging", ".checkpoint.commit"}
    assert 0 < _rows(out) < steps  # killed mid-run
    assert _run(out, steps, resume=True).wait(timeout=300) == 0
    for name in ["lopt.safetensors", "train_state.safetensors"]:
        a, b = load_file(str(ref / name)), load_file(str(out / name))
        assert a.keys() == b.keys()
        assert all((a[k] == b[k]).all() for k in a), name
    meta = [r.split(",")[1] for r in (ref / "log.csv").read_text().splitlines()]
    assert meta == [r.split(",")[1] for r in (out / "log.csv").read_text().splitlines()]


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(tmp_path):
    """The folder holds config.json and an unfinished first checkpoint (staging only):
    --resume drops the staging files and runs the configured run from step 0."""
    ref = tmp_path / "ref"
    main([*TINY, "--steps", "2", "--out", str(ref)])
    out = tmp_path / "killed"
    out.mkdir()
    (out / "config.json").write_bytes((ref / "config.json").read_bytes().replace(
        str(ref).encode(), str(out).encode()))
    (out / ".checkpoint.staging").mkdir()
    (out / ".checkpoint.staging" / "lopt.json").write_text("{half")
    main(["--out", str(out), "--resume"])
    assert not (out / ".checkpoint.staging").exists()
    a, b = load_file(str(ref / "lopt.safetensors")), load_file(str(out / "lopt.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)
