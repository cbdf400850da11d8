"""Meta-train a learned optimizer: ``python -m lopt.meta_train --task T --steps N --out DIR``.

Each outer step advances ``--tasks-per-step`` inner runs by one truncation of
``--truncation`` inner steps, estimates the meta-gradient of their mean meta-loss
(:mod:`lopt.unroll`) by truncated backprop (``--estimator tbptt``) or antithetic ES
(``--estimator es``), clips it and takes an Adam step. Inner runs carry their parameters and
optimizer state across truncations until a horizon sampled uniformly from
``[horizon/2, horizon]`` inner steps, then restart with a new seed (and, for a task family,
a newly sampled task). With ``--valid-split resample`` (the default) every run also holds out
its own random 20 % of the task's train set as the meta-objective's valid split, so the
learned optimizer cannot specialise to one fixed set of validation examples.

Truncated backprop is biased against what pays off only over hundreds of steps, weight
decay above all; ``python -m lopt.calibrate`` then searches the step-size multiplier and a
weight decay on validation data and folds them into the checkpoint (:mod:`lopt.calibrate`).

Each task slot is a *population* of ``--population`` networks of one architecture (one
task, different seeds) trained in one batched computation (:mod:`lopt.unroll`); the
meta-gradient is the mean over all slots and members.

Several processes: ``torchrun --nproc_per_node=N -m lopt.meta_train ...`` (add ``--nnodes``
and a rendezvous endpoint for several machines). Slots are dealt round-robin to the ranks
(each seeded by its global slot index, so the same flags give the same tasks whatever the
number of processes), meta-gradients are summed with an all-reduce, and every rank takes
the same outer Adam step. Rank 0 alone writes logs and checkpoints (gathering the other
ranks' inner runs) and reads them on ``--resume`` (broadcasting them). A rank that raises,
or a non-finite meta-gradient, stops the whole group with an error naming the rank(s);
the last checkpoint stays intact.

Outputs in ``--out``: ``lopt.safetensors`` + ``lopt.json`` (load with
``GMNOptimizer(model, checkpoint=DIR)``), ``train_state.safetensors`` + ``train_state.json``
(outer optimizer, inner runs, counters: ``--resume`` continues exactly), ``log.csv`` and
``meta_loss.png``. Every file is written atomically.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from lopt.checkpoint import (
    LearnedOptimizer,
    atomic_save_tensors,
    atomic_write_json,
    load_learned_optimizer,
    save_learned_optimizer,
)
from lopt.distributed import Group, GroupError, init_group
from lopt.estimators import es_estimate, tbptt_estimate
from lopt.unroll import InnerRun, new_inner_run
from lopt.update import UpdateConfig
from tasks import FAMILIES, TASKS, TaskFamily, get_task_or_family
from tasks.base import Task, mix_seed

__all__ = ["MetaTrainConfig", "main", "meta_train"]


@dataclass
class MetaTrainConfig:
    """Meta-training settings; every field is a ``--flag`` of the CLI (underscores -> dashes)."""

    task: str = "digits_mlp32"
    steps: int = 300
    out: str = "runs/lopt"
    resume: bool = False
    tasks_per_step: int = 2
    population: int = 1
    truncation: int = 20
    horizon: int = 400
    model: str = "gmn"
    hidden: int = 32
    layers: int = 2
    seed: int = 0
    objective: str = "valid"
    valid_split: str = "resample"
    meta_loss: str = "linear"
    init: str = ""
    estimator: str = "tbptt"
    outer_lr: float = 1e-3
    scale_lr: float = 1e-2
    grad_clip: float = 1.0
    es_sigma: float = 0.01
    es_pairs: int = 4
    alpha_init: float = 3.5e-3
    weight_decay_init: float = 0.0
    save_every: int = 10
    nonfinite: str = "error"
    device: str = "cpu"
    threads: int = 0
    dist_timeout: float = 1800.0


HELP = {
    "task": f"inner task {sorted(TASKS)} or task family {sorted(FAMILIES)}",
    "steps": "outer (meta) steps in total; with --resume, the target to continue up to",
    "out": "output folder (checkpoint, training state, log.csv, meta_loss.png)",
    "resume": "continue from the last checkpoint in --out (outer Adam state, inner runs, "
    "counters restored)",
    "tasks_per_step": "task slots per outer step, over all processes (their meta-gradients "
    "are averaged; with torchrun they are dealt round-robin to the ranks)",
    "population": "networks per task slot (same task, different seeds) trained in one "
    "batched computation",
    "truncation": "inner steps per truncation (unroll length backpropagated through)",
    "horizon": "maximum inner steps of a run before it resets; each run samples its horizon "
    "uniformly in [horizon/2, horizon]",
    "model": "learned optimizer net: 'gmn' (graph metanetwork) or 'mlp' (per-parameter MLP, "
    "same features, no message passing)",
    "hidden": "net width",
    "layers": "net depth (GMN message-passing blocks / MLP hidden layers)",
    "seed": "seed of the net init, inner runs and ES noise",
    "objective": "meta-objective: 'valid' (held-out batches) or 'train' (training batches)",
    "valid_split": "'resample': every inner run holds out its own random part of the task's "
    "train set as the valid split (the learned optimizer cannot fit one fixed validation set; "
    "the test set is never used) or 'fixed': the task's own valid split",
    "meta_loss": "'linear' (mean normalised clipped loss) or 'log' (mean of its logarithm: "
    "late, small improvements weigh as much as early, large ones)",
    "init": "start from a learned-optimizer checkpoint ('shipped' or a --out folder) instead "
    "of a fresh net (its architecture and update rule replace --model/--hidden/--layers)",
    "estimator": "meta-gradient estimator: 'tbptt' (truncated backprop) or 'es' "
    "(antithetic evolution strategies)",
    "outer_lr": "outer Adam learning rate for the net",
    "scale_lr": "outer Adam learning rate for the log-scales alpha, beta_dir, beta_scale "
    "(and omega)",
    "grad_clip": "global norm clip of the meta-gradient",
    "es_sigma": "ES perturbation scale",
    "es_pairs": "ES antithetic pairs per inner run",
    "alpha_init": "initial step size alpha (the untrained optimizer is Adam with this lr)",
    "weight_decay_init": "initial learned decoupled weight decay omega (AdamW's, relative to "
    "alpha); 0 = no learned weight decay",
    "save_every": "outer steps between checkpoints",
    "nonfinite": "on a non-finite meta-gradient (or one whose norm overflows): 'error' (stop "
    "every rank with a clear error; the last checkpoint stays intact) or 'skip' (no outer "
    "update that step)",
    "device": "torch device, e.g. cpu or cuda (under torchrun each rank takes cuda:LOCAL_RANK)",
    "threads": "torch CPU threads per process (0 = torch's default)",
    "dist_timeout": "seconds ranks wait in a collective for a rank that died",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lopt.meta_train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    for f in fields(MetaTrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(flag, action="store_true", help=HELP[f.name])
            continue
        kind = {"int": int, "float": float, "str": str}[f.type]
        choices = {"model": ["gmn", "mlp"], "objective": ["valid", "train"],
                   "estimator": ["tbptt", "es"], "meta_loss": ["linear", "log"],
                   "nonfinite": ["error", "skip"],
                   "valid_split": ["resample", "fixed"]}.get(f.name)  # fmt: skip
        parser.add_argument(flag, type=kind, default=f.default, choices=choices,
                            help=f"{HELP[f.name]} (default: {f.default})")  # fmt: skip
    return parser


# ---------------------------------------------------------------------------- inner runs
class _TaskSource:
    """Tasks by run seed: one fixed task, or samples of a family; with ``resample`` each run's
    train set is re-partitioned into train / valid by its seed (:meth:`Task.resplit`)."""

    def __init__(self, name: str, resample: bool = False):
        self.source = get_task_or_family(name)
        self.resample = resample

    def task(self, seed: int) -> Task:
        task = self.source
        if isinstance(task, TaskFamily):
            task = task.sample(seed)
        return task.resplit(mix_seed(seed, 3) % (2**31)) if self.resample else task


def member_seeds(cfg: MetaTrainConfig, slot: int, resets: int) -> list[int]:
    """Seeds of a slot's population after ``resets`` resets (member 0 picks the task)."""
    first = mix_seed(cfg.seed, slot, resets) % (2**31)
    return [first] + [mix_seed(cfg.seed, slot, resets, 2, m) % (2**31)
                      for m in range(1, cfg.population)]  # fmt: skip


def _new_run(cfg: MetaTrainConfig, source: _TaskSource, ucfg: UpdateConfig, slot: int,
             resets: int, device: torch.device) -> InnerRun:  # fmt: skip
    seeds = member_seeds(cfg, slot, resets)
    g = torch.Generator().manual_seed(mix_seed(cfg.seed, slot, resets, 1))
    lo = max(cfg.truncation, cfg.horizon // 2)
    horizon = int(torch.randint(lo, max(lo, cfg.horizon) + 1, (1,), generator=g))
    return new_inner_run(source.task(seeds[0]), seeds, horizon, ucfg, device)


# ---------------------------------------------------------------------------- state on disk
TRAIN_STATE_FILES = ("lopt.safetensors", "lopt.json", "train_state.safetensors",
                     "train_state.json", "log.csv")  # fmt: skip


def _run_record(run: InnerRun) -> tuple[dict, dict[str, torch.Tensor]]:
    """An inner run as (JSON info, CPU tensors) for the training state."""
    tensors = {f"params.{n}": p.cpu() for n, p in run.params.items()}
    for k, v in run.state.items():
        if k == "step":
            tensors["state.step"] = v.cpu()
        else:
            tensors.update({f"state.{k}.{n}": t.cpu() for n, t in v.items()})
    return {"seeds": list(run.seeds), "step": run.step, "horizon": run.horizon}, tensors


def _restore_run(info: dict, tensors: dict[str, torch.Tensor], source: _TaskSource,
                 ucfg: UpdateConfig, device: torch.device) -> InnerRun:  # fmt: skip
    seeds = info["seeds"]
    run = new_inner_run(source.task(seeds[0]), seeds, info["horizon"], ucfg, device)
    run.step = info["step"]
    run.params = {n: tensors[f"params.{n}"].to(device) for n in run.params}
    for k in run.state:
        if k == "step":
            run.state[k] = tensors["state.step"].to(device)
        else:
            run.state[k] = {n: tensors[f"state.{k}.{n}"].to(device) for n in run.state[k]}
    return run


def _save(folder: Path, cfg: MetaTrainConfig, lopt: LearnedOptimizer, outer: torch.optim.Optimizer,
          records: dict[int, tuple[dict, dict]], resets: list[int], step: int,
          log: list[dict]) -> None:  # fmt: skip
    """Write the checkpoint (rank 0): ``records`` holds every slot's inner run."""
    lopt.extra = {"meta_train": asdict(cfg), "outer_step": step}
    tensors, meta = {}, {"outer_step": step, "resets": resets, "runs": [], "outer_groups": []}
    sd = outer.state_dict()
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"outer.{idx}.{k}"] = torch.as_tensor(v)
    meta["outer_groups"] = sd["param_groups"]
    for slot in sorted(records):
        info, run_tensors = records[slot]
        meta["runs"].append(info)
        tensors.update({f"run{slot}.{k}": v for k, v in run_tensors.items()})
    _write_log(folder, log)
    atomic_save_tensors(folder / "train_state.safetensors", tensors, {"outer_step": str(step)})
    atomic_write_json(folder / "train_state.json", meta)
    save_learned_optimizer(lopt, folder)  # last: it marks the checkpoint as complete


def _load_train_state(folder: Path, outer: torch.optim.Optimizer,
                      ) -> tuple[dict, dict[str, torch.Tensor]]:  # fmt: skip
    """Restore the outer optimizer; returns the run records' JSON and tensors."""
    meta = json.loads((folder / "train_state.json").read_text())
    tensors = load_file(str(folder / "train_state.safetensors"))
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("outer."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    outer.load_state_dict({"state": state, "param_groups": meta["outer_groups"]})
    return meta, tensors


def _slot_tensors(tensors: dict[str, torch.Tensor], slot: int, info: dict) -> dict:
    prefix = f"run{slot}."
    out = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if "seeds" not in info:  # a single-run state from before populations: add the member dim
        info["seeds"] = [info["seed"]]
        out = {k: v if k == "state.step" else v[None] for k, v in out.items()}
    return out


LOG_FIELDS = ["outer_step", "meta_loss", "grad_norm", "alpha", "beta_dir", "beta_scale",
              "weight_decay", "elapsed_s", "peak_mem_mb"]  # fmt: skip


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA allocations on a GPU, else the peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # not a Unix
        return float("nan")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _write_log(folder: Path, log: list[dict]) -> None:
    tmp = folder / "log.csv.tmp"
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, LOG_FIELDS)
        w.writeheader()
        w.writerows(log)
    tmp.replace(folder / "log.csv")


def _read_log(folder: Path, upto: int) -> list[dict]:
    path = folder / "log.csv"
    if not path.exists():
        return []
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    return [{k: float(v) if k != "outer_step" else int(v) for k, v in r.items() if v != ""}
            for r in rows if int(r["outer_step"]) <= upto]  # fmt: skip


def plot_log(folder: str | Path) -> Path:
    """``meta_loss.png``: meta-loss (and a running mean) against the outer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    log = _read_log(folder, 10**12)
    steps = [r["outer_step"] for r in log]
    losses = [r["meta_loss"] for r in log]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, alpha=0.35, label="meta-loss")
    k = max(1, len(losses) // 20)
    if len(losses) >= k:
        smooth = [sum(losses[max(0, i - k + 1): i + 1]) / len(losses[max(0, i - k + 1): i + 1])
                  for i in range(len(losses))]  # fmt: skip
        ax.plot(steps, smooth, label=f"running mean ({k})")
    ax.set_xlabel("outer step")
    ax.set_ylabel("meta-loss (clipped loss / clip)")
    ax.legend()
    fig.tight_layout()
    path = folder / "meta_loss.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- main loop
def _flat(tree: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for d in tree.values() for v in d.values()])


def _unflat(vec: torch.Tensor, like: dict[str, dict[str, torch.Tensor]]) -> dict:
    out, i = {}, 0
    for g, d in like.items():
        out[g] = {}
        for k, v in d.items():
            out[g][k] = vec[i: i + v.numel()].view_as(v)
            i += v.numel()
    return out


def _shared_files(group: Group, folder: Path) -> Path:
    """The checkpoint folder as rank 0 sees it; other ranks get a broadcast private copy."""
    if not group.distributed:
        return folder
    blobs = None
    if group.is_main:
        blobs = {n: (folder / n).read_bytes() for n in TRAIN_STATE_FILES if (folder / n).exists()}
    blobs = group.broadcast_object(blobs)
    if group.is_main:
        return folder
    copy = Path(tempfile.mkdtemp(prefix=f"lopt_rank{group.rank}_"))
    for name, data in blobs.items():
        (copy / name).write_bytes(data)
    return copy


def meta_train(cfg: MetaTrainConfig, progress: bool = True) -> LearnedOptimizer:
    """Run (or resume) meta-training as configured; returns the learned optimizer.

    Under ``torchrun`` every rank calls this; see the module docstring.
    """
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.population < 1:
        raise ValueError(f"--population must be at least 1, got {cfg.population}")
    group = init_group(cfg.device, cfg.dist_timeout)
    try:
        return _meta_train(cfg, group, progress)
    finally:
        group.close()


def _meta_train(cfg: MetaTrainConfig, group: Group, progress: bool) -> LearnedOptimizer:
    device = group.device
    folder = Path(cfg.out)
    my_slots = group.slots(cfg.tasks_per_step)
    source = _TaskSource(cfg.task, cfg.valid_split == "resample")
    resuming = cfg.resume and (folder / "train_state.json").exists()
    resuming = bool(group.broadcast_object(resuming))  # rank 0's folder decides
    if group.is_main:
        folder.mkdir(parents=True, exist_ok=True)
    state_folder = _shared_files(group, folder) if resuming else folder
    if resuming:
        lopt = load_learned_optimizer(state_folder, device=device)
        ucfg = lopt.update
    elif cfg.init:
        lopt = load_learned_optimizer(None if cfg.init == "shipped" else cfg.init, device=device)
        if cfg.weight_decay_init > 0 and lopt.weight_decay == 0:
            lopt.set_weight_decay(cfg.weight_decay_init)  # a checkpoint that had none
        ucfg = lopt.update
    else:
        ucfg = UpdateConfig(alpha_init=cfg.alpha_init, weight_decay_init=cfg.weight_decay_init)
        lopt = LearnedOptimizer.fresh(cfg.model, cfg.hidden, cfg.layers, ucfg, cfg.seed)
        lopt.net.to(device)
        lopt.scales = {k: v.to(device) for k, v in lopt.scales.items()}
    net = lopt.net
    net_params = dict(net.named_parameters())
    for v in lopt.scales.values():
        v.requires_grad_(True)
    outer = torch.optim.Adam([
        {"params": list(net_params.values()), "lr": cfg.outer_lr},
        {"params": list(lopt.scales.values()), "lr": cfg.scale_lr},
    ])  # fmt: skip
    runs: dict[int, InnerRun] = {}
    if resuming:
        meta, tensors = _load_train_state(state_folder, outer)
        resets, start = list(meta["resets"]), int(meta["outer_step"])
        if len(meta["runs"]) != cfg.tasks_per_step:
            raise ValueError(f"{folder} holds {len(meta['runs'])} task slots; resume with "
                             f"--tasks-per-step {len(meta['runs'])}")  # fmt: skip
        for slot in my_slots:
            info = meta["runs"][slot]
            runs[slot] = _restore_run(info, _slot_tensors(tensors, slot, info), source, ucfg,
                                      device)  # fmt: skip
        log = _read_log(state_folder, start)
        if state_folder != folder:
            shutil.rmtree(state_folder, ignore_errors=True)
    else:
        resets = [0] * cfg.tasks_per_step
        runs = {slot: _new_run(cfg, source, ucfg, slot, 0, device) for slot in my_slots}
        start, log = 0, []
        if group.is_main:
            atomic_write_json(folder / "config.json", asdict(cfg))
    saved_at = start
    num_meta = sum(v.numel() for v in net_params.values()) + len(lopt.scales)
    t0 = time.time() - (log[-1]["elapsed_s"] if log else 0.0)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="meta-train",
               disable=not (progress and group.is_main))  # fmt: skip
    for step in bar:
        meta = {"net": {k: v.detach() for k, v in net_params.items()},
                "scales": {k: v.detach() for k, v in lopt.scales.items()}}  # fmt: skip
        local = torch.zeros(num_meta, dtype=lopt.scales["log_alpha"].dtype, device=device)
        loss_sum, failure = 0.0, None
        try:
            for slot, run in runs.items():
                length = min(cfg.truncation, run.horizon - run.step)
                if cfg.estimator == "tbptt":
                    loss, grads, (p, s) = tbptt_estimate(net, meta, run, length, ucfg,
                                                         cfg.objective, cfg.meta_loss)  # fmt: skip
                else:
                    gen = torch.Generator().manual_seed(mix_seed(cfg.seed, step, slot, 7))
                    loss, grads, (p, s) = es_estimate(net, meta, run, length, ucfg, cfg.objective,
                                                      cfg.es_sigma, cfg.es_pairs, gen,
                                                      cfg.meta_loss)  # fmt: skip
                loss_sum += float(loss)
                local += _flat(grads)
                run.params, run.state, run.step = p, s, run.step + length
                finite = torch.stack([torch.isfinite(v).all() for v in p.values()])
                diverged = not bool(finite.all())
                if run.step >= run.horizon or diverged:
                    resets[slot] += 1
                    runs[slot] = _new_run(cfg, source, ucfg, slot, resets[slot], device)
        except Exception as err:  # every rank must reach the collective below
            failure = err
        group.agree(failure, f"meta-training at outer step {step + 1}")
        # one all-reduce: meta-gradient sum, meta-loss sum, per-rank non-finite flags and peaks
        flags = torch.zeros(2, group.world, dtype=local.dtype, device=local.device)
        # a norm that overflows counts too: clipping would scale such a gradient to nothing
        flags[0, group.rank] = 0.0 if bool(torch.isfinite(torch.linalg.vector_norm(local))) else 1.0
        flags[1, group.rank] = peak_memory_mb(device)
        reduced = group.all_reduce_sum(
            torch.cat([local, local.new_tensor([loss_sum]), flags.flatten()])
        )
        total = reduced[: local.numel()] / cfg.tasks_per_step
        meta_loss = float(reduced[local.numel()]) / cfg.tasks_per_step
        flags = reduced[local.numel() + 1:].view(2, group.world)
        bad_ranks = [r for r in range(group.world) if flags[0, r] > 0]
        if bad_ranks and cfg.nonfinite == "error":
            raise GroupError(
                f"non-finite meta-gradient on rank(s) {bad_ranks} at outer step {step + 1}; "
                f"the last checkpoint in {folder} (outer step {saved_at}) is intact. Lower "
                "--outer-lr / --truncation, or pass --nonfinite skip"
            )
        grads = _unflat(total, meta)
        for k, v in net_params.items():
            v.grad = grads["net"][k].clone()
        for k, v in lopt.scales.items():
            v.grad = grads["scales"][k].clone()
        leaves = list(net_params.values()) + list(lopt.scales.values())
        if bad_ranks:  # --nonfinite skip: no outer update this step
            gnorm = float("nan")
        else:
            gnorm = float(torch.nn.utils.clip_grad_norm_(leaves, cfg.grad_clip))
            outer.step()
        outer.zero_grad(set_to_none=True)
        sc = {k: math.exp(float(v.detach())) for k, v in lopt.scales.items()}
        row = {"outer_step": step + 1, "meta_loss": meta_loss, "grad_norm": gnorm,
               "alpha": sc["log_alpha"], "beta_dir": sc["log_beta_dir"],
               "beta_scale": sc["log_beta_scale"], "elapsed_s": time.time() - t0,
               "peak_mem_mb": float(flags[1].max())}  # fmt: skip
        if "log_weight_decay" in sc:
            row["weight_decay"] = sc["log_weight_decay"]
        log.append(row)
        bar.set_postfix(meta_loss=f"{row['meta_loss']:.4f}", alpha=f"{sc['log_alpha']:.2e}")
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            _checkpoint(group, folder, cfg, lopt, outer, runs, resets, step + 1, log)
            saved_at = step + 1
    if not log or not (folder / "log.csv").exists():
        _checkpoint(group, folder, cfg, lopt, outer, runs, resets, start, log)
    if group.is_main:
        plot_log(folder)
    for v in lopt.scales.values():
        v.requires_grad_(False)
    return lopt


def _checkpoint(group: Group, folder: Path, cfg: MetaTrainConfig, lopt: LearnedOptimizer,
                outer: torch.optim.Optimizer, runs: dict[int, InnerRun], resets: list[int],
                step: int, log: list[dict]) -> None:  # fmt: skip
    """Gather every rank's inner runs and reset counters; rank 0 writes; all agree on success."""
    with torch.no_grad():
        mine = {slot: _run_record(run) for slot, run in runs.items()}
        parts = group.gather_objects((mine, {slot: resets[slot] for slot in runs}))
        failure = None
        if group.is_main:
            try:
                records, all_resets = {}, list(resets)
                for recs, counts in parts:
                    records.update(recs)
                    for slot, count in counts.items():
                        all_resets[slot] = count
                _save(folder, cfg, lopt, outer, records, all_resets, step, log)
            except Exception as err:
                failure = err
        group.agree(failure, f"writing the checkpoint of outer step {step}")


def main(argv: list[str] | None = None) -> LearnedOptimizer:
    args = build_parser().parse_args(argv)
    return meta_train(MetaTrainConfig(**vars(args)))


if __name__ == "__main__":
    main()
