import json

import pytest

from graphs import ParameterGraph
from lopt import cost
from lopt.nets import NET_KINDS
from tasks.architectures import InvertedResidual, MobileNet, mobilenet_like

TINY = ["--models", "mlp", "--warmup", "1", "--steps", "2", "--min-steps", "1"]


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_tiny_run_writes_json_table_and_figure(tmp_path):
    # the per-edge gmn is over the edge limit: recorded as skipped, not run; the shipped
    # default (a neuron net) runs
    result = cost.main([*TINY, "--nets", "mlp", "gmn", "--max-edge-gmn-params", "1000",
                        "--no-isolate", "--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cost.json", "cost.md", "cost.png"]
    saved = json.loads((tmp_path / "cost.json").read_text())
    assert saved["models"] == result["models"]
    assert {"torch", "device", "threads", "cpu"} <= set(saved["machine"])
    row = saved["models"]["mlp"]
    assert row["params"] == 2410 and row["graph_edges"] == 2410 and row["graph_nodes"] > 0
    assert list(row["optimizers"]) == ["adam", "adamw", "mlp", "gmn", "shipped"]
    for name, rec in row["optimizers"].items():
        assert set(cost.MEASURED) <= set(rec), name
        if name == "gmn":
            assert "--max-edge-gmn-params" in rec["skipped"] and rec["step_ms"] is None
            continue
        assert rec["skipped"] is None and rec["error"] is None
        assert rec["step_ms"] > 0 and rec["iteration_ms"] >= rec["step_ms"]
        assert rec["timed_steps"] == 2 and rec["state_bytes_per_param"] >= 8
    assert row["optimizers"]["adam"]["step_vs_adam"] == 1.0
    assert row["optimizers"]["mlp"]["state_bytes_per_param"] == pytest.approx(16, abs=0.1)
    table = (tmp_path / "cost.md").read_text()
    assert "| MLP 64-32-10 | 2,410 | learned (shipped, neuron) |" in table
    assert "| MLP 64-32-10 | 2,410 | learned (mlp, fresh) |" in table
    assert "skipped: per-edge GMN" in table and "<= 200 B/param" in table
    assert all(c["met"] is None for c in saved["targets"])  # the CNNs were not measured


def test_isolated_measurement_reports_memory():
    spec = {"model": "mlp", "optimizer": "adam", "batch": 16, "warmup": 1, "steps": 2,
            "min_steps": 1, "max_time": 1.0, "threads": 1, "device": "cpu", "seed": 0,
            "exact_memory": True}
    rec = cost.measure_isolated(spec, timeout=120)
    assert "error" not in rec, rec
    assert rec["step_ms"] > 0 and rec["timed_steps"] == 2
    assert rec["state_bytes_per_param"] == pytest.approx(8, abs=0.1)  # exp_avg, exp_avg_sq
    assert rec["peak_extra_bytes_per_param"] is not None
    assert rec["held_bytes_per_param"] is not None


def test_a_folder_that_holds_files_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exc:
        cost.main([*TINY, "--no-isolate", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("argv, flag", [
    (["--steps", "0"], "--steps"),
    (["--nets", "nope"], "--nets"),
    (["--models", "vgg"], "--models"),
    (["--max-time", "-1"], "--max-time"),
    (["--steps", "2", "--min-steps", "5"], "--min-steps"),
    (["--device", "tpu"], "--device"),
    (["--max-edge-gmn-params", "0"], "--max-edge-gmn-params"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, argv, flag):
    with pytest.raises(SystemExit) as exc:
        cost.main([*argv, "--out", str(tmp_path / "c")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err
    assert not (tmp_path / "c").exists()


def test_every_net_kind_is_measured_by_default():
    assert cost.CostConfig().nets == list(NET_KINDS)


def test_models_have_the_sizes_they_claim():
    sizes = {name: _n_params(entry.build()) for name, entry in cost.MODELS.items()}
    assert sizes["mlp"] == 2410
    assert 80_000 <= sizes["cnn"] <= 120_000
    assert 2_800_000 <= sizes["mobilenet"] <= 3_500_000
    assert sizes["resnet18"] == 11_689_512


def test_mobilenet_like_is_mobilenet_v2_shaped_and_builds_a_parameter_graph():
    import torch

    assert _n_params(MobileNet(1.0, 1000)) == 3_504_872  # torchvision's mobilenet_v2
    model = mobilenet_like()
    assert 2_800_000 <= _n_params(model) <= 3_500_000
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels for m in depthwise)
    graph = ParameterGraph.from_module(model)
    assert graph.num_edges >= _n_params(model)
    assert set(graph.param_names) == {n for n, _ in model.named_parameters()}
    assert InvertedResidual(8, 8, 1, 6).residual and not InvertedResidual(8, 16, 1, 6).residual
    assert not InvertedResidual(8, 8, 2, 6).residual
