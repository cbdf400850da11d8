import json

import pytest
import torch
from safetensors.torch import load_file

from lopt import GMNOptimizer, UpdateConfig
from lopt.meta_train import build_parser, main
from tasks import get_task
from tests.lopt.helpers import train

TINY = ["--task", "digits_mlp32", "--truncation", "2", "--horizon", "4", "--hidden", "4",
        "--layers", "1", "--tasks-per-step", "1", "--threads", "1"]


def tiny(*extra: str) -> list[str]:
    """TINY plus ``extra``; ``--init`` brings its own net, so the net flags are left out."""
    if "--init" in extra:
        return [a for i, a in enumerate(TINY) if a not in ("--hidden", "--layers")
                and TINY[i - 1] not in ("--hidden", "--layers")] + list(extra)
    return [*TINY, *extra]


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ["--task", "--steps", "--out", "--resume", "--tasks-per-step", "--truncation",
                 "--horizon", "--hidden", "--layers", "--seed", "--objective", "--estimator",
                 "--model"]:
        assert flag in text


def test_two_outer_steps_give_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "run"
    main([*TINY, "--steps", "2", "--out", str(out)])
    for name in ["lopt.safetensors", "lopt.json", "train_state.json", "log.csv",
                 "meta_loss.png", "config.json"]:
        assert (out / name).exists(), name
    cfg = json.loads((out / "lopt.json").read_text())
    assert cfg["outer_step"] == 2 and cfg["net"]["hidden"] == 4
    assert cfg["meta_train"]["objective"] == "valid"
    fresh_scales = load_file(str(out / "lopt.safetensors"))["scales.log_alpha"]
    assert float(fresh_scales) != pytest.approx(float(torch.tensor(3.5e-3).log()), abs=1e-7)
    task = get_task("digits_mlp32")
    model = task.make_model(0)
    losses = train(model, GMNOptimizer(model, checkpoint=out), task, 5)
    assert all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("extra", [[], ["--estimator", "pes", "--es-pairs", "2",
                                        "--horizon", "12", "--augment-scale", "1000"]])
def test_resume_continues_exactly(tmp_path, extra):
    """(PES: the particles' inner runs are checkpointed with the run, mid-run at step 2, and
    so are the augmented runs' scales.)"""
    main([*TINY, *extra, "--steps", "3", "--out", str(tmp_path / "a")])
    main([*TINY, *extra, "--steps", "2", "--out", str(tmp_path / "b"), "--save-every", "1"])
    if extra:
        assert any(k.startswith("run0.extra.pes.") for k in
                   load_file(str(tmp_path / "b" / "train_state.safetensors")))
        runs = json.loads((tmp_path / "b" / "train_state.json").read_text())["runs"]
        assert len(runs[0]["reparam"]) == 4
    main([*TINY, *extra, "--steps", "3", "--out", str(tmp_path / "b"), "--resume"])
    a = load_file(str(tmp_path / "a" / "lopt.safetensors"))
    b = load_file(str(tmp_path / "b" / "lopt.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    log_a = (tmp_path / "a" / "log.csv").read_text().splitlines()
    log_b = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert len(log_a) == len(log_b) == 4
    assert [r.split(",")[1] for r in log_a] == [r.split(",")[1] for r in log_b]  # meta-losses


@pytest.mark.parametrize("extra", [
    ["--estimator", "es", "--es-pairs", "1"],
    ["--estimator", "pes", "--es-pairs", "1", "--population", "2", "--normalize-update"],
    ["--model", "mlp"],
    ["--model", "neuron", "--entry-hidden", "4", "--population", "2"],
    ["--estimator", "pes", "--es-pairs", "1", "--model", "neuron", "--tensor-stats",
     "--augment-scale", "10"],
    ["--task", "digits_mlp_family", "--objective", "train", "--population", "2"],
    ["--meta-loss", "log", "--init", "shipped"],
    ["--init", "shipped", "--valid-split", "fixed"],
    ["--weight-decay-init", "0.01"],
    ["--task", "seq_transformer_family"],  # attention needs a twice-differentiable kernel
])
def test_variants_run(tmp_path, extra):
    main(tiny("--steps", "1", "--out", str(tmp_path), *extra))
    cfg = json.loads((tmp_path / "lopt.json").read_text())
    assert cfg["outer_step"] == 1
    if "--init" in extra:  # fine-tuning the shipped optimizer keeps its architecture
        assert cfg["net"]["hidden"] == GMNOptimizer(torch.nn.Linear(2, 2)).learned.net.config.hidden
    if "--weight-decay-init" in extra:  # a learned weight decay
        assert cfg["update"]["weight_decay_init"] == 0.01
        assert "scales.log_weight_decay" in load_file(str(tmp_path / "lopt.safetensors"))
        assert float((tmp_path / "log.csv").read_text().splitlines()[1].split(",")[6]) > 0
    if "--normalize-update" in extra:
        assert cfg["update"]["normalize_update"] is True
    if "--tensor-stats" in extra:
        assert cfg["update"]["tensor_stats"] is True
        assert cfg["net"]["in_channels"] == UpdateConfig().entry_channels + 3
    if "log" in extra:
        assert float((tmp_path / "log.csv").read_text().splitlines()[1].split(",")[1]) < 0


def test_init_adds_a_learned_weight_decay_to_a_checkpoint_without_one(tmp_path):
    main([*TINY, "--steps", "1", "--out", str(tmp_path / "a")])
    assert "scales.log_weight_decay" not in load_file(str(tmp_path / "a" / "lopt.safetensors"))
    main(tiny("--steps", "1", "--out", str(tmp_path / "b"), "--init", str(tmp_path / "a"),
              "--weight-decay-init", "0.02"))
    tensors = load_file(str(tmp_path / "b" / "lopt.safetensors"))
    assert float(tensors["scales.log_weight_decay"].exp()) == pytest.approx(0.02, rel=0.05)
    # a checkpoint that has one keeps its own value
    main(tiny("--steps", "1", "--out", str(tmp_path / "c"), "--init", str(tmp_path / "b"),
              "--weight-decay-init", "5"))
    tensors = load_file(str(tmp_path / "c" / "lopt.safetensors"))
    assert float(tensors["scales.log_weight_decay"].exp()) == pytest.approx(0.02, rel=0.1)


def test_resampled_valid_splits_differ_between_runs():
    from lopt.trainer import TaskSource

    fixed, resampled = TaskSource("digits_mlp32"), TaskSource("digits_mlp32", True)
    assert fixed.task(1) is fixed.task(2) and fixed.task(1).split_seed is None
    a, b = resampled.task(1), resampled.task(2)
    assert a.split_seed != b.split_seed and a == resampled.task(1)
    assert not torch.equal(a.batch(0, 0, "valid")[0], b.batch(0, 0, "valid")[0])


def test_single_process_failure_propagates_unchanged(tmp_path, monkeypatch):
    import lopt.estimators as mt

    def boom(*args, **kwargs):
        raise RuntimeError("boom in the inner task")

    monkeypatch.setattr(mt, "tbptt_estimate", boom)
    with pytest.raises(RuntimeError, match="boom in the inner task") as err:
        main([*TINY, "--steps", "2", "--out", str(tmp_path)])
    assert type(err.value) is RuntimeError  # the user's own error, not a group wrapper
    assert not (tmp_path / "lopt.safetensors").exists()  # nothing half-written


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_a_meta_gradient_whose_norm_overflows_counts_as_non_finite(tmp_path, monkeypatch, mode):
    import lopt.estimators as mt

    original, calls = mt.tbptt_estimate, {"n": 0}

    def huge_at_step_2(*args, **kwargs):  # finite entries, but the float32 norm is inf
        calls["n"] += 1
        loss, grads, state = original(*args, **kwargs)
        if calls["n"] == 2:
            grads = {g: {k: torch.full_like(v, 1e30) for k, v in d.items()}
                     for g, d in grads.items()}
        return loss, grads, state

    monkeypatch.setattr(mt, "tbptt_estimate", huge_at_step_2)
    args = [*TINY, "--steps", "3", "--out", str(tmp_path), "--save-every", "1",
            "--nonfinite", mode]
    if mode == "error":
        with pytest.raises(Exception, match="non-finite meta-gradient .* at outer step 2"):
            main(args)
        assert json.loads((tmp_path / "lopt.json").read_text())["outer_step"] == 1
        return
    main(args)
    rows = (tmp_path / "log.csv").read_text().splitlines()[1:]
    norms = [float(r.split(",")[2]) for r in rows]
    assert len(norms) == 3 and norms[1] != norms[1] and all(n == n for n in norms[::2])


def test_new_runs_sample_log_uniform_horizons_and_scales():
    from lopt.trainer import MetaTrainConfig, TaskSource, new_run
    from lopt.update import UpdateConfig

    cfg = MetaTrainConfig(task="digits_mlp32", truncation=10, horizon=2000,
                          horizon_sampling="loguniform", augment_scale=1000.0)
    source = TaskSource(cfg.task)
    runs = [new_run(cfg, source, UpdateConfig(), 0, r, torch.device("cpu")) for r in range(40)]
    horizons = [r.horizon for r in runs]
    assert all(10 <= h <= 2000 for h in horizons)
    assert min(horizons) < 60 and max(horizons) > 600  # short and long runs alike
    scales = [s for r in runs for s in r.reparam.values()]
    assert all(1e-3 <= s <= 1e3 for s in scales) and min(scales) < 0.01 and max(scales) > 100
    again = new_run(cfg, source, UpdateConfig(), 0, 7, torch.device("cpu"))
    assert again.reparam == runs[7].reparam and again.horizon == runs[7].horizon
    with pytest.raises(SystemExit):
        main([*TINY, "--augment-scale", "0.5", "--out", "unused"])
