import json
import os

import pytest
import torch

from common import persistence as P


def _files(step: int) -> dict[str, bytes]:
    return {"w.safetensors": P.tensor_bytes({"x": torch.full((3,), float(step))}),
            "w.json": P.json_bytes({"step": step}), "log.csv": f"step,{step}\n".encode()}


def _read(folder) -> set:
    """The step each file of the checkpoint holds (read as a loader would)."""
    got = P.read_checkpoint(folder, ["w.safetensors", "w.json", "log.csv"])
    return {int(P.parse_tensors(got["w.safetensors"], "w")["x"][0]),
            P.parse_json(got["w.json"].decode(), "w.json")["step"],
            int(got["log.csv"].decode().split(",")[1])}


def test_checkpoint_round_trip_and_no_leftovers(tmp_path):
    P.write_checkpoint(tmp_path, _files(1), step=1)
    P.write_checkpoint(tmp_path, _files(2), step=2)
    assert sorted(os.listdir(tmp_path)) == ["log.csv", "w.json", "w.safetensors"]
    assert _read(tmp_path) == {2}


@pytest.mark.parametrize("crash_at", range(12))
def test_a_crash_at_any_point_leaves_one_complete_checkpoint(tmp_path, monkeypatch, crash_at):
    """Die at the k-th file-system call of a write: the folder reads as step 1 or step 2
    (never a mix), before and after recovery, and the next write succeeds."""
    P.write_checkpoint(tmp_path, _files(1), step=1)
    calls = {"n": 0}

    class Killed(BaseException):
        pass

    def dying(real):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > crash_at:
                raise Killed
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(P.os, "replace", dying(os.replace))
    monkeypatch.setattr(P.os, "rename", dying(os.rename))
    monkeypatch.setattr(P.os, "fsync", dying(os.fsync))
    try:
        P.write_checkpoint(tmp_path, _files(2), step=2)
        finished = True
    except Killed:
        finished = False
    monkeypatch.undo()
    before = _read(tmp_path)
    assert len(before) == 1 and before <= {1, 2}
    P.recover_checkpoint(tmp_path)
    assert _read(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["log.csv", "w.json", "w.safetensors"]
    if finished:
        assert before == {2}
    P.write_checkpoint(tmp_path, _files(3), step=3)
    assert _read(tmp_path) == {3}


def test_crash_during_the_first_write_leaves_no_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(P.os, "rename", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        P.write_checkpoint(tmp_path, _files(1), step=1)
    monkeypatch.undo()
    assert not P.has_checkpoint(tmp_path, ["w.json"])
    P.recover_checkpoint(tmp_path)
    assert os.listdir(tmp_path) == []


def test_prepare_output_refuses_a_folder_with_files_and_leaves_it_untouched(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(P.FolderNotEmptyError, match="mine.txt.*--overwrite"):
        P.prepare_output(tmp_path, writes=["mine.txt"])
    assert (tmp_path / "mine.txt").read_text() == "precious"
    assert P.prepare_output(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "log.csv").write_text("old")
    P.prepare_output(tmp_path, overwrite=True, writes=["log.csv", "*.png"])
    assert not (tmp_path / "log.csv").exists()
    assert (tmp_path / "mine.txt").read_text() == "precious"  # not ours: kept
    (tmp_path / "f").write_text("")
    with pytest.raises(P.PersistenceError, match="is a file"):
        P.prepare_output(tmp_path / "f")


def test_reads_name_the_file_and_the_problem(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(P.PersistenceError, match="bad.json"):
        P.read_json(tmp_path / "bad.json")
    with pytest.raises(P.PersistenceError, match="missing.json does not exist"):
        P.read_json(tmp_path / "missing.json")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(P.PersistenceError, match="bad.safetensors"):
        P.load_tensors(tmp_path / "bad.safetensors")
    P.save_tensors(tmp_path / "inf.safetensors", {"w": torch.tensor([1.0, float("inf")])})
    with pytest.raises(P.PersistenceError, match="inf.safetensors.*'w'.*non-finite"):
        P.load_tensors(tmp_path / "inf.safetensors")
    assert P.load_tensors(tmp_path / "inf.safetensors", finite=False)["w"][1] == float("inf")


def test_require_names_the_field():
    cfg = {"hidden": 0, "name": "gmn", "lr": float("nan")}
    assert P.require(cfg, "name", str, "c.json") == "gmn"
    with pytest.raises(P.PersistenceError, match="c.json: field 'hidden' = 0 is not positive"):
        P.require(cfg, "hidden", int, "c.json", lambda v: v > 0, "positive")
    with pytest.raises(P.PersistenceError, match="'depth' is missing"):
        P.require(cfg, "depth", int, "c.json")
    with pytest.raises(P.PersistenceError, match="'lr'"):
        P.require(cfg, "lr", float, "c.json")
    with pytest.raises(P.PersistenceError, match="'name'"):
        P.require({"name": True}, "name", int, "c.json")


def test_atomic_write_replaces_whole_files(tmp_path):
    P.write_json(tmp_path / "a.json", {"x": 1})
    P.write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert os.listdir(tmp_path) == ["a.json"]


def test_shipped_weights_are_read_and_a_missing_name_lists_the_available():
    config, tensors = P.read_shipped("lopt.weights", "digits")
    assert "net" in config and any(k.startswith("net.") for k in tensors)
    with pytest.raises(P.PersistenceError, match="available: \\['digits', 'generalist'\\]"):
        P.read_shipped("lopt.weights", "nope")
