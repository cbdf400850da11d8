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
                    "0.03", "--adamw-wds", "0.1", "1", "--out", str(tmp_path / "b")])
    data = json.loads((tmp_path / "b" / "benchmark.json").read_text())
    result = data["results"]["digits_mlp32"]
    assert set(result["summary"]) >= {"adam", "sgdm", "adamw", "gmn", "adam_target_loss"}
    assert len(result["tuning"]["adamw"]) == 4  # 2 lrs x 2 weight decays
    assert result["curves"]["adamw"]["weight_decay"] in (0.1, 1.0)
    assert (tmp_path / "b" / "curves.png").exists()
    out = demo.main(["--steps", "4", "--eval-every", "2", "--out", str(tmp_path / "d")])
    assert len(out["summary"]) == 2 and (tmp_path / "d" / "curves.png").exists()


def test_bad_values_and_a_bad_learned_folder_stop_before_any_training(tmp_path, capsys):
    for argv, flag in [(["--steps", "0"], "--steps"), (["--learned", "foo"], "--learned"),
                       (["--tasks", "nope"], "--tasks"), (["--adam-grid", "-1"], "--adam-grid")]:
        try:
            benchmark.main([*argv, "--out", str(tmp_path / "b")])
        except SystemExit as exc:
            assert exc.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and flag in err
    # a learned folder that is no checkpoint is noticed before any baseline is tuned
    (tmp_path / "empty").mkdir()
    try:
        benchmark.main(["--learned", f"x={tmp_path / 'empty'}", "--out", str(tmp_path / "b")])
    except SystemExit as exc:
        assert exc.code == 2
    assert "not a learned-optimizer checkpoint" in capsys.readouterr().err
    for argv in (["--steps", "-1"], ["--eval-every", "0"]):
        try:
            demo.main([*argv, "--out", str(tmp_path / "d")])
        except SystemExit as exc:
            assert exc.code == 2
    assert not (tmp_path / "b").exists() and not (tmp_path / "d").exists()


def test_demo_reruns_into_its_own_folder_but_not_into_someone_elses(tmp_path, capsys):
    demo.main(["--steps", "2", "--eval-every", "2", "--out", str(tmp_path / "d")])
    demo.main(["--steps", "2", "--eval-every", "2", "--out", str(tmp_path / "d")])
    (tmp_path / "d" / "notes.txt").write_text("mine")
    try:
        demo.main(["--steps", "2", "--eval-every", "2", "--out", str(tmp_path / "d")])
        raise AssertionError("a folder with a user's file was not refused")
    except SystemExit as exc:
        assert exc.code == 2
    assert (tmp_path / "d" / "notes.txt").read_text() == "mine"
