"""Meta-training a learned optimizer: the config and the loop (``python -m lopt.meta_train``).

Each outer step is a *truncated step*: every task slot's inner run advances by one
truncation of ``truncation`` inner steps while an :class:`~lopt.estimators.Estimator`
(``--estimator``: truncated backprop, antithetic ES, persistent ES) estimates the meta-
gradient of its meta-loss; the :class:`~lopt.outer.OuterLearner` applies the mean over all
slots (and processes). Inner runs carry their parameters and optimizer state across
truncations until a horizon sampled from ``[horizon/2, horizon]`` (or log-uniformly from
``[truncation, horizon]``), then restart with a new seed (and, for a task family, a newly
sampled task); with ``augment_scale`` every run re-parameterises its tensors by random
scales (:func:`lopt.unroll.reparameterize`). With
``valid_split="resample"`` (the default) every run holds out its own random 20 % of the
task's train set as the meta-objective's valid split, so the learned optimizer cannot
specialise to one fixed set of validation examples. Each slot is a *population* of
``population`` networks of one task (different seeds) trained in one batched computation
(:mod:`lopt.unroll`).

Several processes (``torchrun``): slots are dealt round-robin to the ranks, each seeded by
its global index (the same flags give the same tasks whatever the number of processes);
meta-gradients are summed with one all-reduce and every rank takes the same outer step.
Rank 0 alone writes checkpoints (gathering the other ranks' inner runs) and reads them on
``resume`` (broadcasting the files). A rank that raises, or a non-finite meta-gradient,
stops the whole group with an error naming the rank(s); the last checkpoint stays intact.

The output folder (:mod:`lopt.run_state`): ``config.json`` at the start, then a checkpoint
every ``save_every`` outer steps, written whole; ``meta_loss.png`` at the end. A new run
refuses a folder that holds files (``overwrite`` replaces what meta-training writes there);
``resume`` continues the last complete checkpoint exactly, or starts the configured run
from step 0 if it died before its first checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from common import cli
from common.errors import ConfigError
from common.persistence import (
    PersistenceError,
    prepare_output,
    read_json,
    recover_checkpoint,
    write_checkpoint,
    write_figure,
    write_json,
)
from graphs.params import flatten, numel
from lopt.checkpoint import (
    LearnedOptimizer,
    learned_optimizer_from_files,
    load_learned_optimizer,
)
from lopt.distributed import Group, GroupError, init_group
from lopt.estimators import ESTIMATORS, Estimator
from lopt.nets import NET_KINDS
from lopt.outer import OuterLearner
from lopt.run_state import RUN_FILES, RunState, read_log, read_run_files, restore_run, run_record
from lopt.unroll import InnerRun, log_uniform_scales, new_inner_run, reparameterize
from lopt.update import UpdateConfig
from tasks import FAMILIES, TASKS, TaskFamily, get_task_or_family
from tasks.base import Task, mix_seed

__all__ = ["MetaTrainConfig", "meta_train", "plot_log"]

CONFIG_JSON, PLOT = "config.json", "meta_loss.png"
OUTPUTS = (*RUN_FILES, CONFIG_JSON, PLOT)
"""Every file meta-training writes into its folder."""


def _at_least_one(value: float) -> str | None:
    return None if math.isfinite(value) and value >= 1 else "must be a finite number >= 1"


@dataclass
class MetaTrainConfig:
    """Meta-training settings; every field is a ``--flag`` of ``python -m lopt.meta_train``."""

    task: str = cli.option("digits_mlp32", "inner task or task family",
                           choices=sorted(TASKS) + sorted(FAMILIES))
    steps: int = cli.option(300, "outer (meta) steps in total; with --resume, the target to "
                            "continue up to", check=cli.positive)
    out: str = cli.option("runs/lopt", "output folder (checkpoint, training state, log.csv, "
                          "meta_loss.png); a new run refuses a folder that holds files")
    resume: bool = cli.option(False, "continue the run in --out from its last complete "
                              "checkpoint (outer Adam state, inner runs, counters restored); "
                              "flags left out come from the run's config.json, flags that "
                              "contradict it are an error (but --steps, --save-every, "
                              "--nonfinite, --threads, --device, --dist-timeout may change)")
    overwrite: bool = cli.option(False, "start a new run in an --out folder that holds files, "
                                 "replacing what meta-training writes there")
    tasks_per_step: int = cli.option(2, "task slots per outer step, over all processes (their "
                                     "meta-gradients are averaged; with torchrun they are "
                                     "dealt round-robin to the ranks)", check=cli.positive)
    population: int = cli.option(1, "networks per task slot (same task, different seeds) "
                                 "trained in one batched computation", check=cli.positive)
    truncation: int = cli.option(20, "inner steps per truncation (unroll length "
                                 "backpropagated through)", check=cli.positive)
    horizon: int = cli.option(400, "maximum inner steps of a run before it resets (see "
                              "--horizon-sampling)", check=cli.positive)
    horizon_sampling: str = cli.option(
        "uniform", "each run's horizon: 'uniform' in [horizon/2, horizon] or 'loguniform' in "
        "[truncation, horizon] (short and long runs alike: a learned optimizer for any "
        "training length)", choices=["uniform", "loguniform"])
    augment_scale: float = cli.option(
        1.0, "task augmentation: every run re-parameterises each parameter tensor as "
        "theta = s * phi, s log-uniform in [1/A, A] (Celo: 1000), and the optimizer trains "
        "phi, so it cannot rely on one weight scale; 1 = off", check=_at_least_one)
    model: str = cli.option("gmn", "learned optimizer net: 'neuron' (graphs.NeuronGMN: per-entry "
                            "cost a small constant), 'gmn' (per-edge graph metanetwork) or "
                            "'mlp' (per-parameter MLP, same features, no message passing)",
                            choices=sorted(NET_KINDS))
    hidden: int = cli.option(32, "net width", check=cli.positive)
    entry_hidden: int = cli.option(0, "--model neuron: width of the per-entry hidden layer "
                                   "(0: the write is linear in an entry's features)",
                                   check=cli.nonnegative)
    layers: int = cli.option(2, "net depth (GMN message-passing blocks / MLP hidden layers)",
                             check=cli.positive)
    seed: int = cli.option(0, "seed of the net init, inner runs and ES noise")
    objective: str = cli.option("valid", "meta-objective: 'valid' (held-out batches) or "
                                "'train' (training batches)", choices=["valid", "train"])
    valid_split: str = cli.option(
        "resample", "'resample': every inner run holds out its own random part of the task's "
        "train set as the valid split (the test set is never used); 'fixed': the task's own "
        "valid split", choices=["resample", "fixed"])
    meta_loss: str = cli.option("linear", "'linear' (mean normalised clipped loss) or 'log' "
                                "(mean of its logarithm: late, small improvements weigh as "
                                "much as early, large ones)", choices=["linear", "log"])
    init: str = cli.option("", "start from a learned-optimizer checkpoint ('shipped', a "
                           "shipped name such as 'digits', or a --out folder) instead of a "
                           "fresh net (its net and update rule replace "
                           "--model/--hidden/--layers/--alpha-init)")
    estimator: str = cli.option("tbptt", "meta-gradient estimator: 'tbptt' (truncated "
                                "backprop), 'es' (antithetic evolution strategies) or 'pes' "
                                "(persistent ES: unbiased over the whole unroll)",
                                choices=sorted(ESTIMATORS))
    outer_lr: float = cli.option(1e-3, "outer Adam learning rate for the net",
                                 check=cli.positive)
    scale_lr: float = cli.option(1e-2, "outer Adam learning rate for the log-scales alpha, "
                                 "beta_dir, beta_scale (and omega)", check=cli.nonnegative)
    grad_clip: float = cli.option(1.0, "global norm clip of the meta-gradient",
                                  check=cli.positive)
    es_sigma: float = cli.option(0.01, "ES / PES perturbation scale", check=cli.positive)
    es_pairs: int = cli.option(4, "ES / PES antithetic pairs per inner run",
                               check=cli.positive)
    alpha_init: float = cli.option(3.5e-3, "initial step size alpha (the untrained optimizer "
                                   "is Adam with this lr)", check=cli.positive)
    normalize_update: bool = cli.option(False, "divide each tensor's update direction by its "
                                        "root mean square before scaling it (Celo2's "
                                        "normalised update; the untrained optimizer is then "
                                        "Adam with unit-RMS steps per tensor)")
    tensor_stats: bool = cli.option(False, "feed the net three per-tensor statistics: the "
                                    "Adam direction's RMS, the gradient's cosine with its "
                                    "momentum and the tensor's log scale")
    weight_decay_init: float = cli.option(0.0, "initial learned decoupled weight decay omega "
                                          "(AdamW's, relative to alpha); 0 = none",
                                          check=cli.nonnegative)
    save_every: int = cli.option(10, "outer steps between checkpoints", check=cli.positive)
    nonfinite: str = cli.option("error", "on a non-finite meta-gradient (or one whose norm "
                                "overflows): 'error' (stop every rank; the last checkpoint "
                                "stays intact) or 'skip' (no outer update that step)",
                                choices=["error", "skip"])
    device: str = cli.option("cpu", "torch device, e.g. cpu or cuda (under torchrun each rank "
                             "takes cuda:LOCAL_RANK)")
    threads: int = cli.option(0, "torch CPU threads per process (0 = torch's default)",
                              check=cli.nonnegative)
    dist_timeout: float = cli.option(1800.0, "seconds ranks wait in a collective for a rank "
                                     "that died", check=cli.positive)
    explicit: frozenset = dataclasses.field(default=frozenset(), compare=False, repr=False)

    # fields a resumed run may change; every other one defines the run
    RUN_CONTROL = ("steps", "out", "resume", "overwrite", "save_every", "nonfinite", "device",
                   "threads", "dist_timeout")
    NET_FIELDS = ("model", "hidden", "entry_hidden", "layers", "alpha_init", "normalize_update",
                  "tensor_stats")

    def check(self) -> None:
        if self.resume and self.overwrite:
            raise ConfigError("--resume continues the run in --out and --overwrite replaces "
                              "it: pass one of them")
        if self.init and self.explicit & set(self.NET_FIELDS):
            flags = ", ".join("--" + f.replace("_", "-") for f in sorted(
                self.explicit & set(self.NET_FIELDS)))
            raise ConfigError(f"--init {self.init} brings its own net and update rule; "
                              f"{flags} would be ignored")

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("explicit")
        return out


# ----------------------------------------------------------------------------- inner runs
class TaskSource:
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
                      for m in range(1, cfg.population)]


def new_run(cfg: MetaTrainConfig, source: TaskSource, ucfg: UpdateConfig, slot: int,
            resets: int, device: torch.device) -> InnerRun:
    """Slot ``slot``'s inner run after ``resets`` resets, at inner step 0."""
    seeds = member_seeds(cfg, slot, resets)
    g = torch.Generator().manual_seed(mix_seed(cfg.seed, slot, resets, 1))
    if cfg.horizon_sampling == "loguniform":
        lo, hi = math.log(cfg.truncation), math.log(max(cfg.truncation, cfg.horizon))
        horizon = round(math.exp(lo + (hi - lo) * float(torch.rand((), generator=g))))
    else:
        lo = max(cfg.truncation, cfg.horizon // 2)
        horizon = int(torch.randint(lo, max(lo, cfg.horizon) + 1, (1,), generator=g))
    run = new_inner_run(source.task(seeds[0]), seeds, horizon, ucfg, device)
    if cfg.augment_scale > 1:
        g = torch.Generator().manual_seed(mix_seed(cfg.seed, slot, resets, 4))
        run = reparameterize(run, log_uniform_scales(run.graph.param_names, cfg.augment_scale,
                                                     g))
    return run


def truncated_step(cfg: MetaTrainConfig, estimator: Estimator, lopt: LearnedOptimizer,
                   meta: dict, runs: dict[int, InnerRun], resets: list[int], source: TaskSource,
                   step: int, device: torch.device) -> tuple[float, torch.Tensor]:
    """Advance every local slot's run by one truncation; ``(meta-loss sum, flat meta-gradient
    sum)`` over the slots. A run past its horizon, or diverged, restarts (``resets`` + 1)."""
    total, loss_sum = None, 0.0
    for slot, run in runs.items():
        length = min(cfg.truncation, run.horizon - run.step)
        loss, grads, (p, s) = estimator.estimate(lopt.net, meta, run, length, (step, slot))
        loss_sum += float(loss)
        total = flatten(grads) if total is None else total + flatten(grads)
        run.params, run.state, run.step = p, s, run.step + length
        diverged = not bool(torch.stack([torch.isfinite(v).all() for v in p.values()]).all())
        if run.step >= run.horizon or diverged:
            resets[slot] += 1
            runs[slot] = new_run(cfg, source, lopt.update, slot, resets[slot], device)
    if total is None:  # a rank without slots
        total = torch.zeros(numel(meta), device=device)
    return loss_sum, total


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA allocations on a GPU, else the peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # not a Unix
        return float("nan")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def plot_log(folder: str | Path) -> Path:
    """``meta_loss.png``: meta-loss (and a running mean) against the outer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    log = read_log(folder)
    steps = [r["outer_step"] for r in log]
    losses = [r["meta_loss"] for r in log]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, alpha=0.35, label="meta-loss")
    k = max(1, len(losses) // 20)
    if losses:
        smooth = [sum(losses[max(0, i - k + 1): i + 1]) / len(losses[max(0, i - k + 1): i + 1])
                  for i in range(len(losses))]
        ax.plot(steps, smooth, label=f"running mean ({k})")
    ax.set_xlabel("outer step")
    ax.set_ylabel("meta-loss (clipped loss / clip)")
    ax.legend()
    fig.tight_layout()
    return write_figure(fig, folder / PLOT)


# ----------------------------------------------------------------------------- set-up
def _resume_config(cfg: MetaTrainConfig) -> MetaTrainConfig:
    """The run's saved config with the run-control flags of ``cfg``; a flag given explicitly
    that contradicts the saved config is an error."""
    folder = Path(cfg.out)
    path = folder / CONFIG_JSON
    if not path.is_file():
        held = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        what = f"it holds {held}" if held else "it is empty or missing"
        raise PersistenceError(f"--resume: {folder} was not written by python -m "
                               f"lopt.meta_train (no {CONFIG_JSON}; {what})")
    saved = read_json(path, what="meta-training config")
    names = {f.name for f in dataclasses.fields(MetaTrainConfig)} - {"explicit"}
    unknown = sorted(set(saved) - names) if isinstance(saved, dict) else saved
    if not isinstance(saved, dict) or unknown:
        raise PersistenceError(f"{path}: not a meta-training config (unknown: {unknown})")
    conflicts = [f"--{k.replace('_', '-')} {getattr(cfg, k)} (the run has {saved[k]})"
                 for k in sorted(cfg.explicit) if k in saved and k not in cfg.RUN_CONTROL
                 and getattr(cfg, k) != saved[k]]
    if conflicts:
        raise ConfigError(f"--resume {folder}: {'; '.join(conflicts)} contradict its "
                          f"{CONFIG_JSON}; leave them out or start a new run")
    # run-control flags: the saved value unless given again (device and the group timeout
    # are needed before the folder is read, so they are always this command line's)
    given = {k for k in cfg.RUN_CONTROL if k in cfg.explicit or k not in saved}
    merged = {**saved, **{k: getattr(cfg, k) for k in given | {"out", "resume", "overwrite",
                                                               "device", "dist_timeout"}}}
    out = MetaTrainConfig(**merged, explicit=cfg.explicit)
    try:
        return cli.validate(out)
    except ConfigError as err:
        raise PersistenceError(f"{path}: {err}") from None


def _initial_lopt(cfg: MetaTrainConfig, device: torch.device) -> LearnedOptimizer:
    if cfg.init:
        lopt = load_learned_optimizer(cfg.init, device=device)
        if cfg.weight_decay_init > 0 and lopt.weight_decay == 0:
            lopt.set_weight_decay(cfg.weight_decay_init)  # a checkpoint that had none
        return lopt
    ucfg = UpdateConfig(alpha_init=cfg.alpha_init, weight_decay_init=cfg.weight_decay_init,
                        normalize_update=cfg.normalize_update, tensor_stats=cfg.tensor_stats)
    lopt = LearnedOptimizer.fresh(cfg.model, cfg.hidden, cfg.layers, ucfg, cfg.seed,
                                  cfg.entry_hidden)
    lopt.net.to(device)
    lopt.scales = {k: v.to(device) for k, v in lopt.scales.items()}
    return lopt


def _prepare(cfg: MetaTrainConfig, group: Group) -> tuple[MetaTrainConfig, dict | None]:
    """Validate the folder and read the checkpoint on rank 0, before anything is written;
    every rank gets ``(config, checkpoint files or None)``. Raises a UserError on rank 0."""
    found, failure = None, None
    if group.is_main:
        try:
            if cfg.resume:
                cfg = _resume_config(cfg)
                recover_checkpoint(cfg.out)
                found = read_run_files(cfg.out)
            else:
                get_task_or_family(cfg.task)
                if cfg.init:
                    load_learned_optimizer(cfg.init)  # a bad --init fails before any write
                prepare_output(cfg.out, overwrite=cfg.overwrite, writes=OUTPUTS)
                write_json(Path(cfg.out) / CONFIG_JSON, cfg.to_dict())
        except Exception as err:
            failure = err
    group.agree(failure, "preparing the output folder")
    return group.broadcast_object((cfg, found))


# ----------------------------------------------------------------------------- the loop
def meta_train(cfg: MetaTrainConfig, progress: bool = True) -> LearnedOptimizer:
    """Run (or resume) meta-training as configured; returns the learned optimizer.

    Under ``torchrun`` every rank calls this; see the module docstring.

    Raises:
        ConfigError: a setting the code does not accept (nothing is written).
        PersistenceError: ``out`` holds files of someone else (a new run without
            ``overwrite``) or no run to resume; nothing is written.
    """
    cli.validate(cfg)
    group = init_group(cfg.device, cfg.dist_timeout)
    try:
        return _meta_train(cfg, group, progress)
    finally:
        group.close()


def _meta_train(cfg: MetaTrainConfig, group: Group, progress: bool) -> LearnedOptimizer:
    device = group.device
    cfg, found = _prepare(cfg, group)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    folder = Path(cfg.out)
    my_slots = group.slots(cfg.tasks_per_step)
    source = TaskSource(cfg.task, cfg.valid_split == "resample")
    if found is not None:
        state = RunState.restore(found, str(folder), cfg.tasks_per_step)
        lopt = learned_optimizer_from_files(found, folder, device)
    else:
        state = None
        lopt = _initial_lopt(cfg, device)
    outer = OuterLearner(lopt, cfg.outer_lr, cfg.scale_lr, cfg.grad_clip)
    estimator = ESTIMATORS[cfg.estimator](lopt.update, cfg)
    if state is not None:
        outer.load_state(*state.outer)
        resets, start, log = list(state.resets), state.step, state.log
        runs = {}
        for slot in my_slots:
            info, tensors = state.records[slot]
            fresh = new_inner_run(source.task(info["seeds"][0]), info["seeds"], info["horizon"],
                                  lopt.update, device)
            runs[slot] = restore_run(fresh, info, tensors)
    else:
        resets, start, log = [0] * cfg.tasks_per_step, 0, []
        runs = {slot: new_run(cfg, source, lopt.update, slot, 0, device) for slot in my_slots}
    saved_at = start
    t0 = time.time() - (log[-1]["elapsed_s"] if log else 0.0)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="meta-train",
               disable=not (progress and group.is_main))
    for step in bar:
        meta = outer.meta()
        loss_sum, local, failure = 0.0, None, None
        try:
            loss_sum, local = truncated_step(cfg, estimator, lopt, meta, runs, resets, source,
                                             step, device)
        except Exception as err:  # every rank must reach the collective below
            failure = err
        group.agree(failure, f"meta-training at outer step {step + 1}")
        total, meta_loss, bad_ranks, peak_mb = _reduce(group, outer, local, loss_sum,
                                                       cfg.tasks_per_step, device)
        if bad_ranks and cfg.nonfinite == "error":
            raise GroupError(
                f"non-finite meta-gradient on rank(s) {bad_ranks} at outer step {step + 1}; "
                f"the last checkpoint in {folder} (outer step {saved_at}) is intact. Lower "
                "--outer-lr / --truncation, or pass --nonfinite skip"
            )
        gnorm = float("nan") if bad_ranks else outer.apply(total)  # skip: no outer update
        sc = outer.scales()
        row = {"outer_step": step + 1, "meta_loss": meta_loss, "grad_norm": gnorm,
               "alpha": sc["log_alpha"], "beta_dir": sc["log_beta_dir"],
               "beta_scale": sc["log_beta_scale"], "elapsed_s": time.time() - t0,
               "peak_mem_mb": peak_mb}
        if "log_weight_decay" in sc:
            row["weight_decay"] = sc["log_weight_decay"]
        log.append(row)
        bar.set_postfix(meta_loss=f"{row['meta_loss']:.4f}", alpha=f"{sc['log_alpha']:.2e}")
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            _checkpoint(group, cfg, lopt, outer, runs, resets, step + 1, log)
            saved_at = step + 1
    if group.is_main:
        if cfg.steps <= start:
            tqdm.write(f"{folder} is at outer step {start} already (--steps {cfg.steps}): "
                       "nothing to do")
        plot_log(folder)
    return outer.finish()


def _reduce(group: Group, outer: OuterLearner, local: torch.Tensor, loss_sum: float, slots: int,
            device: torch.device) -> tuple[torch.Tensor, float, list[int], float]:
    """One all-reduce of the meta-gradient sum, meta-loss sum, per-rank non-finite flags and
    peak memory: ``(mean meta-gradient, mean meta-loss, non-finite ranks, largest peak MB)``."""
    flags = torch.zeros(2, group.world, dtype=local.dtype, device=local.device)
    flags[0, group.rank] = 0.0 if outer.finite(local) else 1.0
    flags[1, group.rank] = peak_memory_mb(device)
    reduced = group.all_reduce_sum(torch.cat([local, local.new_tensor([loss_sum]),
                                              flags.flatten()]))
    n = local.numel()
    flags = reduced[n + 1:].view(2, group.world)
    bad_ranks = [r for r in range(group.world) if flags[0, r] > 0]
    return reduced[:n] / slots, float(reduced[n]) / slots, bad_ranks, float(flags[1].max())


def _checkpoint(group: Group, cfg: MetaTrainConfig, lopt: LearnedOptimizer, outer: OuterLearner,
                runs: dict[int, InnerRun], resets: list[int], step: int,
                log: list[dict]) -> None:
    """Gather every rank's inner runs and reset counters; rank 0 writes; all agree on success."""
    with torch.no_grad():
        mine = {slot: run_record(run) for slot, run in runs.items()}
        parts = group.gather_objects((mine, {slot: resets[slot] for slot in runs}))
        failure = None
        if group.is_main:
            try:
                records, all_resets = {}, list(resets)
                for recs, counts in parts:
                    records.update(recs)
                    for slot, count in counts.items():
                        all_resets[slot] = count
                lopt.extra = {"meta_train": cfg.to_dict(), "outer_step": step}
                state = RunState(step, all_resets, records, outer.state_tensors(), log)
                write_checkpoint(cfg.out, state.files(lopt), step=step)
            except Exception as err:
                failure = err
        group.agree(failure, f"writing the checkpoint of outer step {step}")

