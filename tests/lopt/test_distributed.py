"""Meta-training under torchrun: 2 gloo processes on loopback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lopt import GMNOptimizer
from tasks import get_task
from tests.lopt.helpers import train

TINY = ["--task", "digits_mlp32", "--truncation", "2", "--horizon", "5", "--hidden", "4",
        "--layers", "1", "--tasks-per-step", "2", "--threads", "1",
        "--save-every", "1"]
WORKER = Path(__file__).with_name("dist_worker.py")


def torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def meta_train_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lopt.meta_train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240)


def log_rows(folder: Path) -> list[list[str]]:
    return [r.split(",") for r in (folder / "log.csv").read_text().splitlines()[1:]]


@pytest.mark.parametrize("estimator", [[], ["--estimator", "pes", "--es-pairs", "1",
                                            "--horizon", "9"]], ids=["tbptt", "pes"])
def test_two_processes_match_one_and_resume_as_a_group(tmp_path, estimator):
    """(PES: each rank keeps its slot's particles; the checkpoint gathers them.)"""
    one, two = tmp_path / "one", tmp_path / "two"
    r = meta_train_cli(*TINY, *estimator, "--steps", "4", "--out", str(one))
    assert r.returncode == 0, r.stderr[-3000:]
    # two ranks, one task slot each: 3 outer steps, then the group resumes to 4
    r = torchrun("-m", "lopt.meta_train", *TINY, *estimator, "--steps", "3", "--out", str(two))
    assert r.returncode == 0, r.stderr[-3000:]
    r = torchrun("-m", "lopt.meta_train", *TINY, *estimator, "--steps", "4", "--out", str(two),
                 "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = log_rows(one), log_rows(two)
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):  # meta-loss and meta-gradient norm of every outer step
        assert float(ra[1]) == pytest.approx(float(rb[1]), rel=1e-5)
        assert float(ra[2]) == pytest.approx(float(rb[2]), rel=1e-4)
    wa = load_file(str(one / "lopt.safetensors"))
    wb = load_file(str(two / "lopt.safetensors"))
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5
    state = json.loads((two / "train_state.json").read_text())
    assert [r["seeds"] for r in state["runs"]] == [
        r["seeds"] for r in json.loads((one / "train_state.json").read_text())["runs"]
    ]
    task = get_task("digits_mlp32")
    model = task.make_model(0)
    train(model, GMNOptimizer(model, checkpoint=two), task, 3)


@pytest.mark.parametrize("mode, message", [
    ("raise", "failed on rank(s) [1] of 2"),
    ("nan", "non-finite meta-gradient on rank(s) [1] at outer step 3"),
])
def test_a_failing_rank_stops_the_group_and_keeps_the_checkpoint(tmp_path, mode, message):
    out = tmp_path / "run"
    r = torchrun(str(WORKER), mode, "1", "3", "--", *TINY, "--steps", "6", "--out", str(out))
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" in r.stderr and "GroupError" in r.stderr
    cfg = json.loads((out / "lopt.json").read_text())
    assert cfg["outer_step"] == 2  # the checkpoint before the failing step, intact
    assert json.loads((out / "train_state.json").read_text())["outer_step"] == 2
    task = get_task("digits_mlp32")
    model = task.make_model(0)
    train(model, GMNOptimizer(model, checkpoint=out), task, 2)
