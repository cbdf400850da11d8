"""The state of a meta-training run, and its checkpoint files.

:class:`RunState` is everything ``--resume`` needs beyond the config: the learned
optimizer, the outer learner's Adam state, every task slot's inner run (parameters,
optimizer state, seeds, step, horizon, what an estimator keeps with it), the reset
counters, the outer step and the log.
:meth:`RunState.files` turns it into the checkpoint's files, written as one transaction
(:func:`common.persistence.write_checkpoint`)::

    lopt.safetensors, lopt.json            the learned optimizer (GMNOptimizer loads these)
    train_state.safetensors, .json         outer Adam state, inner runs, counters
    log.csv                                one row per outer step up to this checkpoint

and :func:`read_run_files` / :meth:`RunState.restore` read them back, checked.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from common.persistence import (
    PersistenceError,
    has_checkpoint,
    json_bytes,
    parse_json,
    parse_tensors,
    read_checkpoint,
    require,
    tensor_bytes,
)
from lopt.checkpoint import CONFIG_FILE, WEIGHTS_FILE, checkpoint_files
from lopt.unroll import InnerRun
from lopt.update import UpdateState

__all__ = ["LOG_FIELDS", "RUN_FILES", "RunState", "read_log", "read_run_files"]

STATE_WEIGHTS, STATE_CONFIG, LOG_FILE = "train_state.safetensors", "train_state.json", "log.csv"
RUN_FILES = (WEIGHTS_FILE, CONFIG_FILE, STATE_WEIGHTS, STATE_CONFIG, LOG_FILE)
"""The files of one meta-training checkpoint, all at the same outer step."""

LOG_FIELDS = ["outer_step", "meta_loss", "grad_norm", "alpha", "beta_dir", "beta_scale",
              "weight_decay", "elapsed_s", "peak_mem_mb"]


# ----------------------------------------------------------------------------- inner runs
def run_record(run: InnerRun) -> tuple[dict, dict[str, Tensor]]:
    """An inner run as (JSON info, CPU tensors)."""
    tensors = {f"params.{n}": p.cpu() for n, p in run.params.items()}
    tensors["state.step"] = run.state.step.cpu()
    for k, v in run.state.slots().items():
        tensors.update({f"state.{k}.{n}": t.cpu() for n, t in v.items()})
    tensors.update({f"extra.{k}": t.cpu() for k, t in run.extra.items()})
    info = {"seeds": list(run.seeds), "step": run.step, "horizon": run.horizon}
    if run.reparam:
        info["reparam"] = dict(run.reparam)
    return info, tensors


def restore_run(run: InnerRun, info: dict, tensors: dict[str, Tensor]) -> InnerRun:
    """``run`` (fresh, of the recorded task and seeds) set to the recorded step and tensors."""
    device = next(iter(run.params.values())).device
    run.step = info["step"]
    run.params = {n: tensors[f"params.{n}"].to(device) for n in run.params}
    slots = {k: {n: tensors[f"state.{k}.{n}"].to(device) for n in v}
             for k, v in run.state.slots().items()}
    run.state = UpdateState.from_slots(tensors["state.step"].to(device), slots)
    run.extra = {k[len("extra."):]: t.to(device) for k, t in tensors.items()
                 if k.startswith("extra.")}
    run.reparam = {n: float(s) for n, s in info.get("reparam", {}).items()}
    return run


# ----------------------------------------------------------------------------- the log
def log_bytes(log: list[dict]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, LOG_FIELDS)
    writer.writeheader()
    writer.writerows(log)
    return buf.getvalue().encode()


def parse_log(text: str, upto: int | None = None) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(text)))
    return [{k: float(v) if k != "outer_step" else int(v) for k, v in r.items() if v != ""}
            for r in rows if upto is None or int(r["outer_step"]) <= upto]


def read_log(folder: str | Path) -> list[dict]:
    """The rows of a run folder's ``log.csv`` (``[]`` when there is none yet)."""
    blobs = read_checkpoint(folder, [LOG_FILE])
    return parse_log(blobs[LOG_FILE].decode()) if LOG_FILE in blobs else []


# ----------------------------------------------------------------------------- the state
@dataclass
class RunState:
    """A meta-training run at an outer step (rank 0's view: every slot's record).

    Attributes:
        step: outer steps taken.
        resets: per task slot, how many times its inner run was restarted.
        records: per slot, the inner run as :func:`run_record` (info, tensors).
        outer: the outer learner's Adam state: ``(tensors, param_groups)``.
        log: one dict per outer step (:data:`LOG_FIELDS`).
    """

    step: int
    resets: list[int]
    records: dict[int, tuple[dict, dict[str, Tensor]]]
    outer: tuple[dict[str, Tensor], list]
    log: list[dict] = field(default_factory=list)

    def files(self, lopt) -> dict[str, bytes]:
        """The checkpoint's files (see the module docstring)."""
        tensors, groups = dict(self.outer[0]), self.outer[1]
        info = {"outer_step": self.step, "resets": self.resets, "runs": [],
                "outer_groups": groups}
        for slot in sorted(self.records):
            run_info, run_tensors = self.records[slot]
            info["runs"].append(run_info)
            tensors.update({f"run{slot}.{k}": v for k, v in run_tensors.items()})
        return {**checkpoint_files(lopt),
                STATE_WEIGHTS: tensor_bytes(tensors, {"outer_step": str(self.step)}),
                STATE_CONFIG: json_bytes(info), LOG_FILE: log_bytes(self.log)}

    @classmethod
    def restore(cls, blobs: dict[str, bytes], where: str, slots: int) -> RunState:
        """Parse the files of a checkpoint (:func:`read_run_files`), checked against the
        run's ``slots`` task slots; errors name the file and the field."""
        info_where, tensor_where = f"{where}/{STATE_CONFIG}", f"{where}/{STATE_WEIGHTS}"
        info = parse_json(blobs[STATE_CONFIG].decode(), info_where)
        step = require(info, "outer_step", int, info_where, lambda v: v >= 0, ">= 0")
        resets = require(info, "resets", list, info_where)
        runs = require(info, "runs", list, info_where)
        groups = require(info, "outer_groups", list, info_where)
        if len(runs) != slots or len(resets) != slots:
            raise PersistenceError(f"{info_where} holds {len(runs)} task slots; resume with "
                                   f"--tasks-per-step {len(runs)}")
        tensors = parse_tensors(blobs[STATE_WEIGHTS], tensor_where)
        records = {}
        for slot, run in enumerate(runs):
            prefix = f"run{slot}."
            for key in ("seeds", "step", "horizon"):
                require(run, key, list if key == "seeds" else int, f"{info_where} runs[{slot}]")
            records[slot] = (run, {k[len(prefix):]: v for k, v in tensors.items()
                                    if k.startswith(prefix)})
        outer = {k: v for k, v in tensors.items() if k.startswith("outer.")}
        log = parse_log(blobs[LOG_FILE].decode(), upto=step) if LOG_FILE in blobs else []
        return cls(step, [int(r) for r in resets], records, (outer, groups), log)


def read_run_files(folder: str | Path) -> dict[str, bytes] | None:
    """The checkpoint files of a run folder, all at one step; ``None`` before the first
    checkpoint. Raises :class:`PersistenceError` naming what is missing from a folder that
    holds part of a checkpoint (e.g. a calibrated checkpoint has no training state)."""
    folder = Path(folder)
    present = [n for n in RUN_FILES if has_checkpoint(folder, [n])]
    if not present:
        return None
    missing = [n for n in RUN_FILES if n not in present]
    if missing:
        raise PersistenceError(
            f"{folder} holds no complete meta-training checkpoint: {', '.join(missing)} "
            "missing (--resume continues a folder written by python -m lopt.meta_train)"
        )
    return read_checkpoint(folder, RUN_FILES)
