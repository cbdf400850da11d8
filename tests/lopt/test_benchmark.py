import json

from lopt import benchmark, demo
from lopt.baselines import Curve


def test_summary_step_reduction():
    adam = [Curve([0, 10, 20, 30], [2.0, 1.0, 0.5, 0.6], 1e-3, 0.03)]
    fast = [Curve([0, 10, 20, 30], [2.0, 0.4, 0.3, 0.3], 2e-3, 0.06)]
    slow = [Curve([0, 10, 20, 30], [2.0, 1.5, 1.0, 0.9], 1e-3, 0.03)]
    s = benchmark.summarize({"adam": adam, "fast": fast, "slow": slow})
    assert s["adam_target_loss"] == 0.5
    assert s["adam"]["steps_to_adam_best"] == 20
    assert s["fast"]["steps_to_adam_best"] == 10 and s["fast"]["step_reduction_vs_adam"] == 2.0
    assert s["fast"]["wallclock_reduction_vs_adam"] == 1.0  # twice the time per step
    assert s["fast"]["optimizer_step_time_vs_adam"] == 2.0
    assert s["slow"]["step_reduction_vs_adam"] is None


def test_benchmark_and_demo_cli_smoke(tmp_path):
    benchmark.main(["--tasks", "digits_mlp32", "--steps", "6", "--seeds", "1", "--tune-seeds",
                    "1", "--eval-every", "3", "--adam-grid", "1e-3", "3e-3", "--sgdm-grid",
                    "0.03", "--adamw-wds", "0.1", "1", "--out", str(tmp_path / "b")])  # fmt: skip
    data = json.loads((tmp_path / "b" / "benchmark.json").read_text())
    result = data["results"]["digits_mlp32"]
    assert set(result["summary"]) >= {"adam", "sgdm", "adamw", "gmn", "adam_target_loss"}
    assert len(result["tuning"]["adamw"]) == 4  # 2 lrs x 2 weight decays
    assert result["curves"]["adamw"]["weight_decay"] in (0.1, 1.0)
    assert (tmp_path / "b" / "curves.png").exists()
    out = demo.main(["--steps", "4", "--eval-every", "2", "--out", str(tmp_path / "d")])
    assert len(out["summary"]) == 2 and (tmp_path / "d" / "curves.png").exists()
