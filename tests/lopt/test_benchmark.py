import json

import pytest
import torch

from lopt import benchmark, demo, suite
from lopt.baselines import Curve
from tasks import get_task


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


# ----------------------------------------------------------------------------- held-out suite
def _curve(test, valid=(), total=0.03):
    return Curve([0, 10, 20, 30][:len(test)], list(test), 1e-3, total, list(valid))


def test_held_out_suite_lists_registered_tasks_with_validation_examples():
    assert len(set(suite.HELD_OUT_SUITE)) == len(suite.HELD_OUT_SUITE) >= 10
    assert benchmark.IN_DISTRIBUTION not in suite.HELD_OUT_SUITE
    for name in suite.HELD_OUT_SUITE:
        assert get_task(name).valid_fraction > 0
    assert benchmark._config_class(["--suite", "heldout"]) is benchmark.HeldOutConfig
    assert benchmark._config_class(["--steps", "5"]) is benchmark.BenchmarkConfig
    assert benchmark.HeldOutConfig().tasks == suite.HELD_OUT_SUITE


def test_iqm_drops_the_outer_quarters():
    assert suite.iqm([5.0]) == 5.0 and suite.iqm([1.0, 3.0]) == 2.0
    assert suite.iqm([0.0, 2.0, 3.0, 100.0]) == 2.5
    assert suite.iqm([float(v) for v in range(11)]) == 5.0  # drops 0, 1 and 9, 10
    with pytest.raises(ValueError):
        suite.iqm([])


def test_suite_summary_counts_never_as_zero():
    def task(gmn):  # a gmn step takes twice as long as an adam step
        runs = {"adam": [_curve([2.0, 1.0, 0.5, 0.5])], "gmn": [_curve(gmn, total=0.06)]}
        curves = {k: {"lr": 1.0, "weight_decay": 0.0, "runs": []} for k in runs}
        return {"summary": benchmark.summarize(runs), "curves": curves}

    results = {"fast": task([2.0, 0.4, 0.3, 0.3]),          # reaches 0.5 at step 10: 2x
               "same": task([2.0, 1.0, 0.5, 0.5]),          # step 20: 1x
               "never": task([2.0, 1.5, 0.6, 0.58]),        # never; best 0.58 > 1.1 x 0.5
               "diverged": task([2.0, 0.45, float("inf"), float("inf")])}
    s = suite.summarize_suite(results)
    rows = s["per_task"]
    assert rows["fast"]["gmn"]["step_speedup"] == 2.0
    assert rows["fast"]["gmn"]["wallclock_speedup"] == pytest.approx(1.0)  # 2x time per step
    assert rows["fast"]["gmn"]["seconds_to_adam_best"] == pytest.approx(0.02)
    assert rows["never"]["gmn"]["step_speedup"] is None
    assert rows["diverged"]["gmn"]["diverged_runs"] == 1
    over = s["over_tasks"]["gmn"]
    assert over["iqm_step_speedup"] == pytest.approx(suite.iqm([2.0, 1.0, 0.0, 2.0]))
    assert over["iqm_step_speedup"] == 1.5  # never counts 0: the middle of [0, 1, 2, 2]
    assert over["tasks_reaching_adam_best"] == 3
    assert over["tasks_best_worse"] == 1  # never: 0.58 > 1.1 x 0.5
    assert over["tasks_final_worse"] == 2  # never and diverged (inf)
    assert over["diverged_runs"] == 1
    assert s["over_tasks"]["adam"]["iqm_step_speedup"] == 1.0
    table = suite.markdown(s, "# suite")
    assert "| fast | 0.5 (1.00x / 1.00x) | 0.3 (2.00x / 1.00x) |" in table
    assert "| **IQM step speed-up** | 1.00x | 1.50x |" in table
    assert table.count("\n| ") == 2 + 4 + 6 + 8  # headers, tasks, over-task rows, details


def _fake_train_curve(calls):
    """Validation prefers the largest lr, the test set the smallest: which one wins tells
    which data tuned it."""
    def fake(task, kind, lr, seed, steps, eval_every, checkpoint=None, device="cpu",
             weight_decay=0.0, valid_data=None):
        calls.append((kind, lr, weight_decay, seed, valid_data))
        return _curve([1.0, lr], [1.0, 1e-3 / lr] if valid_data is not None else [])
    return fake


def test_suite_tunes_on_validation_and_trains_each_distinct_run_once(monkeypatch):
    calls = []
    monkeypatch.setattr(benchmark, "train_curve", _fake_train_curve(calls))
    task = get_task("diabetes_mlp")
    cfg = benchmark.HeldOutConfig(tasks=["diabetes_mlp"], seeds=3, tune_seeds=2,
                                  adam_grid=[1e-3, 1e-2], adamw_wds=[0.0])
    result = benchmark.benchmark_task(task, benchmark.contenders(cfg, {}), cfg)
    valid_x = task.pool("valid")[0]
    assert all(torch.equal(c[4][0], valid_x) for c in calls)
    assert result["tuned_on"] == "valid"
    scores = result["tuning"]["adam"]
    assert result["curves"]["adam"]["lr"] == 1e-2 == float(min(scores, key=scores.get))
    assert result["curves"]["adam_default"]["lr"] == benchmark.ADAM_DEFAULT_LR
    assert result["curves"]["adam"]["lr_at_grid_edge"]
    # 2 lrs x 2 tuning seeds, then seed 2 of the winner and of adam_default (lr 1e-3)
    assert sorted((c[1], c[3]) for c in calls) == [(1e-3, 0), (1e-3, 1), (1e-3, 2),
                                                   (1e-2, 0), (1e-2, 1), (1e-2, 2)]
    calls.clear()  # without a suite the test loss decides (the published protocol)
    classic = benchmark.BenchmarkConfig(tasks=["diabetes_mlp"], seeds=1, tune_seeds=1,
                                        adam_grid=[1e-3, 1e-2], sgdm_grid=[0.0])
    result = benchmark.benchmark_task(task, benchmark.contenders(classic, {}), classic)
    assert result["curves"]["adam"]["lr"] == 1e-3 and result["tuned_on"] == "test"
    assert all(c[4] is None for c in calls)


def test_tiny_suite_run_writes_its_files_and_resumes(tmp_path, monkeypatch, capsys):
    argv = ["--suite", "heldout", "--tasks", "breast_cancer_mlp", "diabetes_mlp",
            "--steps", "4", "--eval-every", "2", "--seeds", "1", "--tune-seeds", "1",
            "--adam-grid", "1e-3", "1e-2", "--adamw-wds", "0.1", "--learned-grid", "0.5", "1",
            "--out", str(tmp_path / "s")]
    benchmark.main(argv)
    out = tmp_path / "s"
    data = json.loads((out / "benchmark.json").read_text())
    assert set(data["results"]) == {"breast_cancer_mlp", "diabetes_mlp"}
    over = data["suite"]["over_tasks"]
    assert set(over) == {"adam", "adam_default", "adamw", "gmn", "gmn_tuned"}
    assert over["adam"]["tasks_reaching_adam_best"] == 2
    for result in data["results"].values():
        assert result["tuned_on"] == "valid"
        for name, scores in result["tuning"].items():  # the winner has the lowest score
            curves = result["curves"][name]
            best = min(scores, key=scores.get)
            assert float(best.split(",")[0]) == curves["lr"]
            assert len(curves["runs"][0]["valid_loss"]) == len(curves["runs"][0]["steps"])
        assert result["curves"]["gmn"]["lr"] == 1.0
    table = (out / "heldout.md").read_text()
    assert "| diabetes_mlp |" in table and "**IQM wall-clock speed-up**" in table
    assert (out / "curves.png").exists()
    # a run killed after its first task: --resume trains only the missing one
    del data["results"]["diabetes_mlp"]
    (out / "benchmark.json").write_text(json.dumps(data))
    trained = []
    real = benchmark.benchmark_task
    monkeypatch.setattr(benchmark, "benchmark_task",
                        lambda task, *a, **k: trained.append(task.name) or real(task, *a, **k))
    benchmark.main([*argv, "--resume"])
    assert trained == ["diabetes_mlp"]
    again = json.loads((out / "benchmark.json").read_text())
    assert again["results"]["breast_cancer_mlp"] == data["results"]["breast_cancer_mlp"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # other options than the run's are refused
        benchmark.main([*argv[:-2], "--steps", "6", "--out", str(out), "--resume"])
    assert exc.value.code == 2 and "--steps 6" in capsys.readouterr().err


def test_a_new_learned_optimizer_reuses_the_baselines_of_an_earlier_run(tmp_path, monkeypatch,
                                                                         capsys):
    calls = []
    monkeypatch.setattr(benchmark, "train_curve", _fake_train_curve(calls))
    argv = ["--suite", "heldout", "--tasks", "diabetes_mlp", "--seeds", "2", "--tune-seeds",
            "1", "--adam-grid", "1e-3", "1e-2", "--adamw-wds", "0.1", "--learned-grid", "1"]
    benchmark.main([*argv, "--out", str(tmp_path / "first")])
    first = json.loads((tmp_path / "first" / "benchmark.json").read_text())
    calls.clear()
    source = str(tmp_path / "first" / "benchmark.json")
    benchmark.main([*argv, "--learned", "other=shipped", "--baselines-from", source,
                    "--out", str(tmp_path / "second")])
    assert {c[0] for c in calls} == {"learned"} and len(calls) == 2  # only the new one trains
    second = json.loads((tmp_path / "second" / "benchmark.json").read_text())
    old, new = first["results"]["diabetes_mlp"], second["results"]["diabetes_mlp"]
    for name in ("adam", "adam_default", "adamw"):
        assert new["curves"][name] == old["curves"][name]
        assert new["summary"][name] == old["summary"][name]
    assert new["tuning"] == old["tuning"]
    assert new["summary"]["other"] == old["summary"]["gmn"]  # same weights, same fake runs
    # another protocol, or a baseline the earlier run lacks, stops before any training
    calls.clear()
    for extra, words in [(["--steps", "400"], ["--steps 400", "another protocol"]),
                         (["--adamw-wds", "0.1", "1"], ["--adamw-wds"]),
                         (["--tasks", "diabetes_mlp", "teacher_student"],
                          ["lacks", "teacher_student/adam"])]:
        with pytest.raises(SystemExit) as exc:
            benchmark.main([*argv, *extra, "--baselines-from", source,
                            "--out", str(tmp_path / "third")])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and all(w in err for w in words), err
    assert not calls and not (tmp_path / "third").exists()
