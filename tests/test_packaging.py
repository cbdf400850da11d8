"""Shipped weights are package data: a wheel built from the repository carries and loads them."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["lopt/weights/generalist.safetensors", "lopt/weights/generalist.json",
           "lopt/weights/digits.safetensors", "lopt/weights/digits.json",
           "predict/weights/cnn.safetensors", "predict/weights/diverse.safetensors"]

CHECK = """
import lopt, predict, editing, torch
from lopt import GMNOptimizer
assert lopt.__file__.startswith({site!r}), lopt.__file__
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
for name in (None, *lopt.SHIPPED_WEIGHTS):  # the default, then every shipped name
    opt = GMNOptimizer(model, checkpoint=name)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
predict.load_predictor("cnn")
for name in editing.EDITS:
    editing.load_editor(name)
print("ok")
"""


def test_wheel_contains_and_loads_the_shipped_weights(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("graph_metanetworks-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in SHIPPED:
        assert path in names, path
    assert any(n.startswith("editing/weights/") and n.endswith(".safetensors") for n in names)
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)], capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-c", CHECK.format(site=str(site))], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith("ok")
