import json

import pytest
import torch

from predict import load_predictor
from predict.architectures import ZooCNN
from predict.train import kendall_tau, main, r2_score
from tests.predict.conftest import TINY


def test_metrics():
    t = torch.tensor([0.1, 0.5, 0.9, 0.3])
    assert r2_score(t, t) == pytest.approx(1.0)
    assert kendall_tau(t, t) == pytest.approx(1.0)
    assert kendall_tau(-t, t) == pytest.approx(-1.0)
    assert r2_score(torch.full_like(t, t.mean().item()), t) == pytest.approx(0.0, abs=1e-6)


def test_tiny_end_to_end(cnn_zoo, diverse_zoo, zoo_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("GMN_CACHE", str(zoo_cache))  # the session's tiny zoos, already built
    out, weights = tmp_path / "run", tmp_path / "weights"
    main(["--zoos", "cnn", "diverse", "--zoo-size", str(TINY["size"]), "--zoo-seed",
          str(TINY["seed"]), "--zoo-max-steps", str(TINY["max_steps"]), "--zoo-min-steps",
          str(TINY["min_steps"]), "--steps", "2", "--batch-size", "4", "--hidden", "8",
          "--layers", "1", "--seeds", "0", "--out", str(out), "--save-weights",
          str(weights), "--quiet"])  # fmt: skip
    for name in ("results.json", "results.md", "scatter.png", "config.json"):
        assert (out / name).exists()
    result = json.loads((out / "results.json").read_text())
    assert len(result["runs"]) == 2 * 3 * 4  # zoos x splits x methods (one seed)
    assert "cnn|50%|GMN" in result["aggregate"] and "diverse|OOD|DMC" in result["aggregate"]
    table = (out / "results.md").read_text()
    assert "| 50% | GMN |" in table and "Varying CNNs R2" in table
    predictor = load_predictor("cnn", folder=weights)
    acc = predictor(ZooCNN((3, 5)))  # a width outside the zoo
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0
