import json

import pytest
import torch

from predict import load_predictor, train
from predict.architectures import ZooCNN
from predict.train import kendall_tau, main, r2_score
from tests.predict.conftest import TINY


def test_metrics():
    t = torch.tensor([0.1, 0.5, 0.9, 0.3])
    assert r2_score(t, t) == pytest.approx(1.0)
    assert kendall_tau(t, t) == pytest.approx(1.0)
    assert kendall_tau(-t, t) == pytest.approx(-1.0)
    assert r2_score(torch.full_like(t, t.mean().item()), t) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("held", ["out", "weights"])
def test_refuses_a_folder_holding_files(held, tmp_path, capsys, monkeypatch):
    """A folder with someone's files is refused before any work; the file stays as it was."""
    monkeypatch.setenv("GMN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(train, "build_zoo", lambda *a, **k: pytest.fail("work started"))
    (tmp_path / held).mkdir()
    mine = tmp_path / held / ("results.md" if held == "out" else "cnn.json")  # a name it writes
    mine.write_bytes(b"my own notes\n\x00\xff")
    with pytest.raises(SystemExit) as exit_:
        main(["--zoos", "cnn", "--out", str(tmp_path / "out"), "--save-weights",
              str(tmp_path / "weights")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    flag = "--out" if held == "out" else "--save-weights"
    assert err.count("\n") == 1 and flag in err and "--overwrite" in err, err
    assert mine.read_bytes() == b"my own notes\n\x00\xff"
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted([held, mine.name])


def test_tiny_end_to_end(cnn_zoo, diverse_zoo, zoo_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("GMN_CACHE", str(zoo_cache))  # the session's tiny zoos, already built
    out, weights = tmp_path / "run", tmp_path / "weights"
    # an earlier run's outputs and a user's own files: --overwrite replaces only the former
    out.mkdir()
    (out / "results.md").write_text("stale table")
    (out / "notes.txt").write_bytes(b"mine")
    weights.mkdir()
    (weights / "cnn.json").write_text("{}")
    (weights / "other.safetensors").write_bytes(b"not ours")
    main(["--zoos", "cnn", "diverse", "--zoo-size", str(TINY["size"]), "--zoo-seed",
          str(TINY["seed"]), "--zoo-max-steps", str(TINY["max_steps"]), "--zoo-min-steps",
          str(TINY["min_steps"]), "--steps", "2", "--batch-size", "4", "--hidden", "8",
          "--layers", "1", "--seeds", "0", "--out", str(out), "--save-weights",
          str(weights), "--quiet", "--overwrite"])
    for name in ("results.json", "results.md", "scatter.png", "config.json"):
        assert (out / name).exists()
    assert (out / "notes.txt").read_bytes() == b"mine"
    assert (weights / "other.safetensors").read_bytes() == b"not ours"
    assert sorted(p.name for p in weights.iterdir()) == [
        "cnn.json", "cnn.safetensors", "diverse.json", "diverse.safetensors", "other.safetensors"]
    result = json.loads((out / "results.json").read_text())
    assert len(result["runs"]) == 2 * 3 * 4  # zoos x splits x methods (one seed)
    assert "cnn|50%|GMN" in result["aggregate"] and "diverse|OOD|DMC" in result["aggregate"]
    assert json.loads((out / "config.json").read_text()) == result["config"]
    assert result["config"]["hidden"] == 8 and result["config"]["zoos"] == ["cnn", "diverse"]
    table = (out / "results.md").read_text()
    assert "| 50% | GMN |" in table and "Varying CNNs R2" in table
    predictor = load_predictor("cnn", folder=weights)
    assert predictor.meta["hidden"] == 8 and predictor.meta["zoo"] == "cnn"
    acc = predictor(ZooCNN((3, 5)))  # a width outside the zoo
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0
