"""Meta-train a learned optimizer: ``python -m lopt.meta_train --task T --steps N --out DIR``.

Each outer step advances ``--tasks-per-step`` inner runs by one truncation of
``--truncation`` inner steps, estimates the meta-gradient of their mean meta-loss
(:mod:`lopt.unroll`) by truncated backprop (``--estimator tbptt``) or antithetic ES
(``--estimator es``), clips it and takes an Adam step. Inner runs carry their parameters and
optimizer state across truncations until a horizon sampled uniformly from
``[horizon/2, horizon]`` inner steps, then restart with a new seed (and, for a task family,
a newly sampled task).

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
from lopt.estimators import es_estimate, tbptt_estimate
from lopt.unroll import InnerRun, new_inner_run
from lopt.update import UpdateConfig
from tasks import FAMILIES, TASKS, get_family, get_task
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
    truncation: int = 20
    horizon: int = 400
    model: str = "gmn"
    hidden: int = 32
    layers: int = 2
    seed: int = 0
    objective: str = "valid"
    estimator: str = "tbptt"
    outer_lr: float = 1e-3
    scale_lr: float = 1e-2
    grad_clip: float = 1.0
    es_sigma: float = 0.01
    es_pairs: int = 4
    alpha_init: float = 3.5e-3
    save_every: int = 10
    device: str = "cpu"
    threads: int = 0


HELP = {
    "task": f"inner task {sorted(TASKS)} or task family {sorted(FAMILIES)}",
    "steps": "outer (meta) steps in total; with --resume, the target to continue up to",
    "out": "output folder (checkpoint, training state, log.csv, meta_loss.png)",
    "resume": "continue from the last checkpoint in --out (outer Adam state, inner runs, "
    "counters restored)",
    "tasks_per_step": "inner runs per outer step (their meta-gradients are averaged)",
    "truncation": "inner steps per truncation (unroll length backpropagated through)",
    "horizon": "maximum inner steps of a run before it resets; each run samples its horizon "
    "uniformly in [horizon/2, horizon]",
    "model": "learned optimizer net: 'gmn' (graph metanetwork) or 'mlp' (per-parameter MLP, "
    "same features, no message passing)",
    "hidden": "net width",
    "layers": "net depth (GMN message-passing blocks / MLP hidden layers)",
    "seed": "seed of the net init, inner runs and ES noise",
    "objective": "meta-objective: 'valid' (held-out batches) or 'train' (training batches)",
    "estimator": "meta-gradient estimator: 'tbptt' (truncated backprop) or 'es' "
    "(antithetic evolution strategies)",
    "outer_lr": "outer Adam learning rate for the net",
    "scale_lr": "outer Adam learning rate for the log-scales alpha, beta_dir, beta_scale",
    "grad_clip": "global norm clip of the meta-gradient",
    "es_sigma": "ES perturbation scale",
    "es_pairs": "ES antithetic pairs per inner run",
    "alpha_init": "initial step size alpha (the untrained optimizer is Adam with this lr)",
    "save_every": "outer steps between checkpoints",
    "device": "torch device, e.g. cpu or cuda",
    "threads": "torch CPU threads (0 = torch's default)",
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
                   "estimator": ["tbptt", "es"]}.get(f.name)  # fmt: skip
        parser.add_argument(flag, type=kind, default=f.default, choices=choices,
                            help=f"{HELP[f.name]} (default: {f.default})")  # fmt: skip
    return parser


# ---------------------------------------------------------------------------- inner runs
class _TaskSource:
    """Tasks by run seed: one fixed task, or samples of a family."""

    def __init__(self, name: str):
        self.fixed = get_task(name) if name in TASKS else None
        self.family = None if self.fixed is not None else get_family(name)

    def task(self, seed: int) -> Task:
        return self.fixed if self.fixed is not None else self.family.sample(seed)


def _new_run(cfg: MetaTrainConfig, source: _TaskSource, ucfg: UpdateConfig, slot: int,
             resets: int) -> InnerRun:  # fmt: skip
    seed = mix_seed(cfg.seed, slot, resets) % (2**31)
    g = torch.Generator().manual_seed(mix_seed(cfg.seed, slot, resets, 1))
    lo = max(cfg.truncation, cfg.horizon // 2)
    horizon = int(torch.randint(lo, max(lo, cfg.horizon) + 1, (1,), generator=g))
    task = source.task(seed)
    return new_inner_run(task, seed, horizon, ucfg, cfg.device)


# ---------------------------------------------------------------------------- state on disk
def _save(folder: Path, cfg: MetaTrainConfig, lopt: LearnedOptimizer, outer: torch.optim.Optimizer,
          runs: list[InnerRun], resets: list[int], step: int, log: list[dict]) -> None:  # fmt: skip
    lopt.extra = {"meta_train": asdict(cfg), "outer_step": step}
    tensors, meta = {}, {"outer_step": step, "resets": resets, "runs": [], "outer_groups": []}
    sd = outer.state_dict()
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"outer.{idx}.{k}"] = torch.as_tensor(v)
    meta["outer_groups"] = sd["param_groups"]
    for i, run in enumerate(runs):
        meta["runs"].append({"seed": run.seed, "step": run.step, "horizon": run.horizon})
        for n, p in run.params.items():
            tensors[f"run{i}.params.{n}"] = p
        for k, v in run.state.items():
            if k == "step":
                tensors[f"run{i}.state.step"] = v
            else:
                for n, t in v.items():
                    tensors[f"run{i}.state.{k}.{n}"] = t
    _write_log(folder, log)
    atomic_save_tensors(folder / "train_state.safetensors", tensors, {"outer_step": str(step)})
    atomic_write_json(folder / "train_state.json", meta)
    save_learned_optimizer(lopt, folder)  # last: it marks the checkpoint as complete


def _load_train_state(folder: Path, cfg: MetaTrainConfig, source: _TaskSource,
                      ucfg: UpdateConfig, outer: torch.optim.Optimizer,
                      ) -> tuple[list[InnerRun], list[int], int]:  # fmt: skip
    meta = json.loads((folder / "train_state.json").read_text())
    tensors = load_file(str(folder / "train_state.safetensors"))
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("outer."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    outer.load_state_dict({"state": state, "param_groups": meta["outer_groups"]})
    runs = []
    for i, r in enumerate(meta["runs"]):
        run = new_inner_run(source.task(r["seed"]), r["seed"], r["horizon"], ucfg, cfg.device)
        run.step = r["step"]
        run.params = {n: tensors[f"run{i}.params.{n}"].to(cfg.device) for n in run.params}
        for k in run.state:
            if k == "step":
                run.state[k] = tensors[f"run{i}.state.step"].to(cfg.device)
            else:
                run.state[k] = {n: tensors[f"run{i}.state.{k}.{n}"].to(cfg.device)
                                for n in run.state[k]}  # fmt: skip
        runs.append(run)
    return runs, list(meta["resets"]), int(meta["outer_step"])


LOG_FIELDS = ["outer_step", "meta_loss", "grad_norm", "alpha", "beta_dir", "beta_scale",
              "elapsed_s"]  # fmt: skip


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
    return [{k: float(v) if k != "outer_step" else int(v) for k, v in r.items()}
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
def meta_train(cfg: MetaTrainConfig, progress: bool = True) -> LearnedOptimizer:
    """Run (or resume) meta-training as configured; returns the learned optimizer."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    folder = Path(cfg.out)
    folder.mkdir(parents=True, exist_ok=True)
    source = _TaskSource(cfg.task)
    resuming = cfg.resume and (folder / "train_state.json").exists()
    if resuming:
        lopt = load_learned_optimizer(folder, device=cfg.device)
        ucfg = lopt.update
    else:
        ucfg = UpdateConfig(alpha_init=cfg.alpha_init)
        lopt = LearnedOptimizer.fresh(cfg.model, cfg.hidden, cfg.layers, ucfg, cfg.seed)
        lopt.net.to(cfg.device)
        lopt.scales = {k: v.to(cfg.device) for k, v in lopt.scales.items()}
    net = lopt.net
    net_params = dict(net.named_parameters())
    for v in lopt.scales.values():
        v.requires_grad_(True)
    outer = torch.optim.Adam([
        {"params": list(net_params.values()), "lr": cfg.outer_lr},
        {"params": list(lopt.scales.values()), "lr": cfg.scale_lr},
    ])  # fmt: skip
    if resuming:
        runs, resets, start = _load_train_state(folder, cfg, source, ucfg, outer)
        log = _read_log(folder, start)
    else:
        resets = [0] * cfg.tasks_per_step
        runs = [_new_run(cfg, source, ucfg, i, 0) for i in range(cfg.tasks_per_step)]
        start, log = 0, []
        atomic_write_json(folder / "config.json", asdict(cfg))
    t0 = time.time() - (log[-1]["elapsed_s"] if log else 0.0)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress,
               desc="meta-train")  # fmt: skip
    for step in bar:
        meta = {"net": {k: v.detach() for k, v in net_params.items()},
                "scales": {k: v.detach() for k, v in lopt.scales.items()}}  # fmt: skip
        total = {g: {k: torch.zeros_like(v) for k, v in d.items()} for g, d in meta.items()}
        losses = []
        for i, run in enumerate(runs):
            length = min(cfg.truncation, run.horizon - run.step)
            if cfg.estimator == "tbptt":
                loss, grads, (p, s) = tbptt_estimate(net, meta, run, length, ucfg, cfg.objective)
            else:
                gen = torch.Generator().manual_seed(mix_seed(cfg.seed, step, i, 7))
                loss, grads, (p, s) = es_estimate(net, meta, run, length, ucfg, cfg.objective,
                                                  cfg.es_sigma, cfg.es_pairs, gen)  # fmt: skip
            losses.append(float(loss))
            for g in total:
                for k in total[g]:
                    total[g][k] += torch.nan_to_num(grads[g][k]) / len(runs)
            run.params, run.state, run.step = p, s, run.step + length
            if run.step >= run.horizon:
                resets[i] += 1
                runs[i] = _new_run(cfg, source, ucfg, i, resets[i])
        for k, v in net_params.items():
            v.grad = total["net"][k]
        for k, v in lopt.scales.items():
            v.grad = total["scales"][k]
        leaves = list(net_params.values()) + list(lopt.scales.values())
        gnorm = float(torch.nn.utils.clip_grad_norm_(leaves, cfg.grad_clip))
        outer.step()
        outer.zero_grad(set_to_none=True)
        sc = {k: math.exp(float(v.detach())) for k, v in lopt.scales.items()}
        row = {"outer_step": step + 1, "meta_loss": sum(losses) / len(losses), "grad_norm": gnorm,
               "alpha": sc["log_alpha"], "beta_dir": sc["log_beta_dir"],
               "beta_scale": sc["log_beta_scale"], "elapsed_s": time.time() - t0}  # fmt: skip
        log.append(row)
        bar.set_postfix(meta_loss=f"{row['meta_loss']:.4f}", alpha=f"{sc['log_alpha']:.2e}")
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            with torch.no_grad():
                _save(folder, cfg, lopt, outer, runs, resets, step + 1, log)
    if not log or not (folder / "log.csv").exists():
        _save(folder, cfg, lopt, outer, runs, resets, start, log)
    plot_log(folder)
    for v in lopt.scales.values():
        v.requires_grad_(False)
    return lopt


def main(argv: list[str] | None = None) -> LearnedOptimizer:
    args = build_parser().parse_args(argv)
    return meta_train(MetaTrainConfig(**vars(args)))


if __name__ == "__main__":
    main()
