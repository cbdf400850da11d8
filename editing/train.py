"""Train weight-space INR editors: ``python -m editing.train --edit dilate``.

For every (edit, model, seed) the run folder ``OUT/<edit>/<model>/seed<seed>/`` receives,
all at once when the run ends (one checkpoint, see :mod:`common.persistence`):

* ``config.json``   the full :class:`TrainConfig` and :class:`editing.editor.EditorConfig`;
* ``editor.safetensors`` + ``editor.json``  the best-validation checkpoint (load with
  ``editing.load_editor("OUT/<edit>/<model>/seed<seed>")``);
* ``log.json``      train loss per step, val MSE per evaluation, best step, test MSE at the
  best checkpoint, wall time;
* ``curves.png``    learning curves.

Protocol: digits-INR train split (1400 INRs) for training, val (200) for checkpoint
selection, test (197) for the reported number. Loss and metric: pixel MSE between the
rendering of the edited INR and ``EDITS[edit]`` applied to the *ground-truth image* (not to
the INR's rendering; the INRs reconstruct their images at ~65 dB PSNR, so this changes the
no-edit MSE by < 1e-6). ``--moved-copies k`` adds k copies of the train split with every
digit rotated (up to 15 degrees) and shifted (up to 2 pixels) before fitting
(:func:`editing.data.moved_images`; each copy fitted once and cached), so that the editor
also learns digits that are not upright and centred; validation and test stay the
benchmark's. With several edits / models / seeds, the results table is written to
``OUT/results.json`` and ``OUT/results.md`` (see :mod:`editing.results`).

Never overwrite: a finished run whose saved settings equal the requested ones is skipped, so
an interrupted sweep resumes where it stopped; a finished run with other settings, or an
``--out`` holding files this command did not write, is refused before any training unless
``--overwrite`` (which retrains those runs; files of others are left alone).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from common import cli
from common.cli import nonnegative, option, positive
from common.errors import ConfigError
from common.persistence import (
    COMMIT_DIR,
    STAGING_DIR,
    FolderNotEmptyError,
    checkpoint_file,
    figure_bytes,
    has_checkpoint,
    json_bytes,
    prepare_output,
    read_json,
    recover_checkpoint,
    refuse_foreign,
    write_checkpoint,
)
from editing.data import SPLIT_SIZES, DigitsINRConfig, load_digits_inrs
from editing.editor import (
    GAMMA_PARAMS,
    MODELS,
    OUTPUT_SCALES,
    SKIP_LAYERS,
    Editor,
    EditorConfig,
    count_parameters,
    editor_files,
)
from editing.edits import EDITS
from editing.inr import Params, render
from editing.results import TABLE_FILES, collect, write_table
from editing.symmetry import permute_hidden, random_hidden_permutations
from graphs import params as P

__all__ = ["RUN_FILES", "SweepConfig", "TrainConfig", "evaluate", "main", "moved_train_inrs",
           "run_dir", "sweep", "torch_device", "train_editor"]

SCHEDULES: tuple[str, ...] = ("cosine", "plateau")
"""Learning-rate schedules after the warmup (see :class:`TrainConfig`)."""

RUN_FILES: tuple[str, ...] = ("config.json", "editor.safetensors", "editor.json", "log.json",
                              "curves.png")
"""The files of a finished run folder (written together when the run ends)."""


@dataclass(frozen=True)
class TrainConfig:
    """One editor training run.

    Attributes:
        edit: name in :data:`editing.EDITS`.
        model: ``gmn``, ``np_nfn`` (the NP-NFN neural functional), ``mlp``, ``mlp_aug``
            (MLP + random hidden-neuron permutations of the input INRs as augmentation) or
            ``identity`` (no training, no edit).
        steps: optimizer steps.
        batch_size: INRs per step.
        lr: AdamW learning rate of the metanetwork (after a linear warmup: ``schedule``).
        gamma_lr: AdamW learning rate of the gammas and of the GMN's linear skip (no weight
            decay; gammas have to grow from 0.01 to O(1) for edits like invert).
        weight_decay: AdamW weight decay of the metanetwork.
        warmup: linear warmup steps.
        schedule: ``"cosine"`` decays every learning rate to 0 over the run; ``"plateau"``
            halves them whenever ``patience`` validations in a row did not improve on the
            best validation MSE.
        patience: validations without improvement before a ``"plateau"`` halving.
        grad_clip: max global gradient norm (0: off).
        eval_every: validate (and maybe checkpoint) every this many steps, and at the end.
        seed: seed of the metanetwork init, batch order and augmentation.
        train_limit / val_limit / test_limit: use only the first N INRs of a split (None: all).
        moved_copies: also train on this many copies of the train split (its first
            ``train_limit``) with every digit rotated and shifted before fitting
            (:func:`moved_train_inrs`); 0: the benchmark's train split only.
        eval_batch: INRs per forward pass during evaluation.
        device: torch device.
        threads: CPU intra-op threads (None: leave torch's default).
    """

    edit: str = "dilate"
    model: str = "gmn"
    steps: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    gamma_lr: float = 1e-2
    weight_decay: float = 1e-4
    warmup: int = 20
    schedule: str = "cosine"
    patience: int = 2
    grad_clip: float = 1.0
    eval_every: int = 50
    seed: int = 0
    train_limit: int | None = None
    val_limit: int | None = None
    test_limit: int | None = None
    moved_copies: int = 0
    eval_batch: int = 100
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.edit not in EDITS:
            raise ValueError(f"unknown edit {self.edit!r}; choose from {sorted(EDITS)}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose from {MODELS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.patience < 1:
            raise ValueError(f"patience must be positive, got {self.patience}")
        if self.moved_copies < 0:
            raise ValueError(f"moved_copies must be >= 0, got {self.moved_copies}")


def moved_train_inrs(copies: int, limit: int | None = None, progress: bool = True
                     ) -> tuple[Params, Tensor]:
    """``copies`` (>= 1) rotated-and-shifted copies of the train split's first ``limit``
    digits, fitted as the benchmark's INRs (copy ``k`` is :class:`DigitsINRConfig`
    ``moved=k``; fitted once and cached): ``(params, images)`` of all copies one after the
    other."""
    n = limit or SPLIT_SIZES["train"]
    # a limit makes the cache hold the train split only (not all 1797 digits)
    parts = [load_digits_inrs("train", n, config=DigitsINRConfig(moved=k), progress=progress)
             for k in range(1, copies + 1)]
    return P.cat([p for p, _ in parts]), torch.cat([im for _, im in parts])


def run_dir(out: Path | str, edit: str, model: str, seed: int) -> Path:
    """``OUT/<edit>/<model>/seed<seed>``."""
    return Path(out) / edit / model / f"seed{seed}"


@torch.no_grad()
def evaluate(
    editor: Editor, params: Params, targets: Tensor, batch: int = 100, w0: float | None = None
) -> Tensor:
    """Per-INR MSE ``[n]`` between ``render(editor(params))`` and ``targets [n, H, W]``."""
    w0 = editor.config.w0 if w0 is None else w0
    device = editor.scale.device
    out = []
    for s in range(0, targets.shape[0], batch):
        p = P.to(P.member(params, slice(s, s + batch)), device)
        img = render(editor(p), tuple(targets.shape[1:]), w0).cpu()
        out.append((img - targets[s : s + batch]).pow(2).flatten(1).mean(1))
    return torch.cat(out)


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _curves_png(log: Mapping[str, Any]) -> bytes:
    """The learning curves of one run (train loss, val MSE, no-edit level) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    train = log["train_loss"]
    if train:
        k = max(1, len(train) // 50)
        smooth = [sum(train[i : i + k]) / len(train[i : i + k]) for i in range(0, len(train), k)]
        ax.plot([i + k / 2 for i in range(0, len(train), k)], smooth, label="train (smoothed)")
    ax.plot(log["val_steps"], log["val_mse"], "o-", ms=3, label="val")
    ax.axhline(log["no_edit_val_mse"], color="grey", ls="--", lw=1, label="no edit (val)")
    cfg = log["config"]
    title = f"{cfg['edit']} / {cfg['model']} / seed {cfg['seed']}"
    ax.set(xlabel="step", ylabel="pixel MSE", yscale="log", title=title)
    ax.legend(fontsize=8)
    return figure_bytes(fig, dpi=120)


def train_editor(
    config: TrainConfig,
    editor_config: EditorConfig | None = None,
    out: Path | str | None = None,
    data: Mapping[str, tuple[Params, Tensor]] | None = None,
    progress: bool = True,
    *,
    overwrite: bool = False,
) -> tuple[Editor, dict[str, Any]]:
    """Train one editor; returns the best-validation editor and the log dict.

    Args:
        config: the run (:class:`TrainConfig`); ``config.model`` overrides
            ``editor_config.model``.
        editor_config: architecture (default :class:`EditorConfig` with ``config.model``).
        out: run folder (:data:`RUN_FILES`, written together at the end); None: write
            nothing. A folder that already holds files is refused before training unless
            ``overwrite`` (:func:`common.persistence.prepare_output`).
        data: ``{"train"|"val"|"test": (params, images)}`` (default: the cached digits-INRs),
            and ``"moved"`` for ``config.moved_copies`` (loaded when absent).
        progress: tqdm bar.
        overwrite: replace the files of an earlier run in ``out``.

    Returns:
        ``(editor, log)``; ``log["test_mse"]`` is the mean test MSE at the best checkpoint.
    """
    if out is not None:
        out = prepare_output(out, overwrite=overwrite, writes=RUN_FILES)
    t0 = time.perf_counter()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    ecfg = _run_editor_config(config, editor_config)
    limits = {"train": config.train_limit, "val": config.val_limit, "test": config.test_limit}
    moved = None if data is None else data.get("moved")
    if data is None:
        data = {s: load_digits_inrs(s, limits[s], progress=progress) for s in limits}
    else:
        data = {s: (P.member(p, slice(0, limits[s])), im[: limits[s]])
                for s, (p, im) in data.items() if s in limits}
    if config.moved_copies:
        if moved is None:
            moved = moved_train_inrs(config.moved_copies, config.train_limit, progress)
        (params, images), (more, more_images) = data["train"], moved
        data["train"] = (P.cat([params, more]), torch.cat([images, more_images]))
    edit = EDITS[config.edit]
    targets = {s: edit(im) for s, (_, im) in data.items()}
    device = torch.device(config.device)
    train_params = P.to(data["train"][0], device)
    train_targets = targets["train"].to(device)

    editor = Editor(ecfg)
    editor.set_scale(data["train"][0])
    editor.to(device)
    # scalar gains (gammas, the GMN's affine skip) learn at gamma_lr without weight decay
    names = [n for n, _ in editor.named_parameters()]
    scalar = ["gamma_" in n or n.endswith((".skip", ".shift")) for n in names]
    gammas = [p for p, g in zip(editor.parameters(), scalar, strict=True) if g]
    others = [p for p, g in zip(editor.parameters(), scalar, strict=True) if not g]
    opt = torch.optim.AdamW(
        [
            {"params": others, "lr": config.lr, "weight_decay": config.weight_decay},
            {"params": gammas, "lr": config.gamma_lr, "weight_decay": 0.0},
        ]
    )
    base_lrs = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(config.seed)
    size = tuple(train_targets.shape[1:])

    def validate() -> float:
        editor.eval()
        mse = evaluate(editor, data["val"][0], targets["val"], config.eval_batch)
        editor.train()
        return float(mse.mean())

    no_edit_val = float(
        (render(data["val"][0], size, ecfg.w0) - targets["val"]).pow(2).flatten(1).mean(1).mean()
    )
    log: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "editor": ecfg.to_dict(),
        "trainable_parameters": count_parameters(editor),
        "n_train": int(train_targets.shape[0]),
        "train_loss": [],
        "val_steps": [],
        "val_mse": [],
        "no_edit_val_mse": no_edit_val,
        "lr_halvings": [],  # per validation after step 0 (the plateau schedule's count)
    }
    steps = 0 if config.model == "identity" else config.steps
    best_val, best_step = validate(), 0
    best_state = copy.deepcopy(editor.state_dict())
    log["val_steps"].append(0)
    log["val_mse"].append(best_val)
    n_train = train_targets.shape[0]
    bar = tqdm(range(steps), desc=f"{config.edit}/{config.model}/s{config.seed}",
               disable=not progress)
    halvings, stale = 0, 0  # the plateau schedule's state
    log["val_train_seconds"] = [0.0]  # training time (validation excluded) at each validation
    train_seconds, tick = 0.0, time.perf_counter()
    for step in bar:
        if config.schedule == "plateau":
            factor = min(1.0, (step + 1) / max(1, config.warmup)) * 0.5**halvings
        else:
            factor = _lr_factor(step, steps, config.warmup)
        for g, lr in zip(opt.param_groups, base_lrs, strict=True):
            g["lr"] = lr * factor
        idx = torch.randint(n_train, (config.batch_size,), generator=gen).to(device)
        batch = P.member(train_params, idx)
        if config.model == "mlp_aug":
            batch = permute_hidden(batch, random_hidden_permutations(batch, gen))
        pred = render(editor(batch), size, ecfg.w0)
        loss = (pred - train_targets[idx]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(editor.parameters(), config.grad_clip)
        opt.step()
        log["train_loss"].append(float(loss.detach()))
        if (step + 1) % config.eval_every == 0 or step + 1 == steps:
            train_seconds += time.perf_counter() - tick
            log["val_train_seconds"].append(round(train_seconds, 3))
            val = validate()
            log["val_steps"].append(step + 1)
            log["val_mse"].append(val)
            if val < best_val:
                best_val, best_step, stale = val, step + 1, 0
                best_state = copy.deepcopy(editor.state_dict())
            else:
                stale += 1
                if stale >= config.patience:
                    halvings, stale = halvings + 1, 0
            log["lr_halvings"].append(halvings)
            last = log["train_loss"][-1]
            bar.set_postfix(loss=f"{last:.2e}", val=f"{val:.2e}", best=f"{best_val:.2e}")
            tick = time.perf_counter()
    editor.load_state_dict(best_state)
    editor.eval()
    test = evaluate(editor, data["test"][0], targets["test"], config.eval_batch)
    log.update(
        best_step=best_step,
        best_val_mse=best_val,
        test_mse=float(test.mean()),
        test_mse_std_over_inrs=float(test.std()) if test.numel() > 1 else 0.0,
        n_test=int(test.numel()),
        gammas=editor.gammas().tolist(),
        train_seconds=round(train_seconds, 2),
        seconds_per_step=round(train_seconds / steps, 5) if steps else 0.0,
        wall_seconds=round(time.perf_counter() - t0, 1),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
    )
    if out is not None:
        meta = {k: log[k] for k in ("best_step", "best_val_mse", "test_mse", "wall_seconds")}
        write_checkpoint(out, {
            "config.json": json_bytes(_saved_config(config, ecfg)),
            **editor_files(editor, "editor", {"edit": config.edit, **meta, "train": log["config"]}),
            "curves.png": _curves_png(log),
            "log.json": json_bytes(log),
        })
    return editor, log


def _run_editor_config(config: TrainConfig, editor_config: EditorConfig | None) -> EditorConfig:
    """The editor a run trains: ``editor_config`` with the run's model."""
    return dataclasses.replace(editor_config or EditorConfig(), model=config.model)


def _saved_config(config: TrainConfig, editor_config: EditorConfig) -> dict[str, Any]:
    """What a run folder's ``config.json`` holds."""
    return {"train": dataclasses.asdict(config), "editor": editor_config.to_dict()}


# ----------------------------------------------------------------------------- command line
_T, _E = TrainConfig(), EditorConfig()


def torch_device(value: str) -> str | None:
    """Option check: ``value`` names a torch device."""
    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        return "is not a torch device (e.g. cpu, cuda, cuda:1)"
    return None


@dataclass
class SweepConfig:
    """Options of ``python -m editing.train``: a sweep over edits x models x seeds."""

    edit: list[str] = option([_T.edit], "edit(s) to learn, or 'all'",
                             choices=[*sorted(EDITS), "all"])
    models: list[str] = option([_T.model], "gmn: GMN metanet; np_nfn: the NP-NFN neural "
                               "functional (Zhou et al. 2023); mlp: MLP on flattened weights; "
                               "mlp_aug: the MLP with random hidden-neuron permutations as "
                               "augmentation; identity: no edit", choices=MODELS)
    seeds: list[int] = option([_T.seed], "seeds", check=nonnegative)
    steps: int = option(_T.steps, "training steps", check=positive)
    batch_size: int = option(_T.batch_size, "INRs per step", check=positive)
    lr: float = option(_T.lr, "metanet AdamW learning rate (cosine)", check=positive)
    gamma_lr: float = option(_T.gamma_lr, "learning rate of the gammas", check=positive)
    weight_decay: float = option(_T.weight_decay, "AdamW weight decay", check=nonnegative)
    warmup: int = option(_T.warmup, "linear warmup steps", check=nonnegative)
    schedule: str = option(_T.schedule, "learning rates after the warmup: cosine decay to 0, "
                           "or halved on a validation plateau", choices=SCHEDULES)
    patience: int = option(_T.patience, "--schedule plateau: validations without improvement "
                           "before the learning rates halve", check=positive)
    grad_clip: float = option(_T.grad_clip, "grad-norm clip (0: off)", check=nonnegative)
    eval_every: int = option(_T.eval_every, "validate every N steps", check=positive)
    gmn_hidden: int = option(_E.gmn_hidden, "GMN width", check=positive)
    gmn_layers: int = option(_E.gmn_layers, "GMN blocks", check=positive)
    gmn_heads: int = option(_E.gmn_heads, "GMN output heads: k > 1 widens the final edge "
                            "states k-fold and averages k heads (output-capacity expansion)",
                            check=positive)
    gmn_skip: bool = option(_E.gmn_skip, "add a learned per-tensor affine term a_t * x_t + c_t "
                            "to the GMN output")
    gmn_skip_layers: str = option(_E.gmn_skip_layers, "which tensors get the GMN's affine "
                                  "skip: all, or the last layer's", choices=SKIP_LAYERS)
    gmn_raw_values: bool = option(_E.gmn_raw_values, "give the GMN the raw parameter values "
                                  "as a second input channel")
    gmn_value_freqs: int = option(_E.gmn_value_freqs, "Fourier frequencies pi 2^k (k from "
                                  "-2) of the GMN's value features", check=positive)
    gmn_context: bool = option(_E.gmn_context, "every GMN block also reads graph and "
                               "per-tensor means of its states (NP-NFN's whole-tensor terms)")
    mlp_hidden: int = option(_E.mlp_hidden, "MLP hidden width", check=positive)
    mlp_depth: int = option(_E.mlp_depth, "MLP hidden layers", check=positive)
    nfn_channels: int = option(_E.nfn_channels, "NP-NFN hidden channels", check=positive)
    nfn_layers: int = option(_E.nfn_layers, "NP-NFN hidden layers", check=positive)
    nfn_fourier: int = option(_E.nfn_fourier, "NP-NFN Gaussian Fourier features per value "
                              "(0: the raw value)", check=nonnegative)
    nfn_fourier_scale: float = option(_E.nfn_fourier_scale, "NP-NFN Fourier frequency scale",
                                      check=positive)
    nfn_io: bool = option(_E.nfn_io, "NP-NFN input / output neuron position encoding")
    output_scale: str = option(_E.output_scale, "per-tensor output scale u_t: "
                               "architecture-derived (preact) or the tensor's std over the "
                               "training INRs (std)", choices=OUTPUT_SCALES)
    gamma_param: str = option(_E.gamma_param, "learn gamma directly or its log (gamma = exp(u))",
                              choices=GAMMA_PARAMS)
    gamma_init: float = option(_E.gamma_init, "initial gammas", check=positive)
    train_limit: int = option(0, "use only the first N train INRs (0: all)", check=nonnegative)
    val_limit: int = option(0, "use only the first N val INRs (0: all)", check=nonnegative)
    test_limit: int = option(0, "use only the first N test INRs (0: all)", check=nonnegative)
    moved_copies: int = option(0, "also train on this many copies of the train split with "
                               "every digit rotated (up to 15 degrees) and shifted (up to 2 "
                               "pixels) before fitting (each copy fitted once and cached: "
                               "about 8 minutes on 2 cores)", check=nonnegative)
    device: str = option(_T.device, "torch device, e.g. cpu or cuda", check=torch_device)
    threads: int = option(1, "CPU threads (1 suits shared machines; 0: torch default)",
                          check=nonnegative)
    out: str = option("runs/editing", "output folder of the sweep")
    overwrite: bool = option(False, "retrain runs already in --out (finished, or with other "
                             "settings) and accept an --out holding other files")
    quiet: bool = option(False, "no progress bars")

    def check(self) -> None:
        if "all" in self.edit and len(self.edit) > 1:
            raise ConfigError("--edit all cannot be combined with edit names")

    def edits(self) -> list[str]:
        return sorted(EDITS) if self.edit == ["all"] else list(self.edit)

    def editor_config(self) -> EditorConfig:
        return EditorConfig(
            gmn_hidden=self.gmn_hidden, gmn_layers=self.gmn_layers, gmn_heads=self.gmn_heads,
            mlp_hidden=self.mlp_hidden,
            mlp_depth=self.mlp_depth, nfn_channels=self.nfn_channels,
            nfn_layers=self.nfn_layers, nfn_fourier=self.nfn_fourier,
            nfn_fourier_scale=self.nfn_fourier_scale, nfn_io=self.nfn_io,
            gamma_init=self.gamma_init, gmn_skip=self.gmn_skip,
            gmn_skip_layers=self.gmn_skip_layers, gmn_raw_values=self.gmn_raw_values,
            gmn_value_freqs=self.gmn_value_freqs, gmn_context=self.gmn_context,
            gamma_param=self.gamma_param, output_scale=self.output_scale,
        )

    def limits(self) -> dict[str, int | None]:
        return {"train": self.train_limit or None, "val": self.val_limit or None,
                "test": self.test_limit or None}

    def runs(self) -> list[TrainConfig]:
        """One :class:`TrainConfig` per (edit, seed, model), in training order."""
        limits = self.limits()
        return [
            TrainConfig(
                edit=edit, model=model, steps=self.steps, batch_size=self.batch_size,
                lr=self.lr, gamma_lr=self.gamma_lr, weight_decay=self.weight_decay,
                warmup=self.warmup, schedule=self.schedule, patience=self.patience,
                grad_clip=self.grad_clip, eval_every=self.eval_every,
                seed=seed, train_limit=limits["train"], val_limit=limits["val"],
                test_limit=limits["test"], moved_copies=self.moved_copies,
                device=self.device, threads=self.threads or None,
            )
            for edit in self.edits() for seed in self.seeds for model in self.models
        ]


_RUNTIME_FIELDS = ("device", "threads", "eval_batch")
"""Train settings that do not change what a run computes (beyond float rounding)."""
_ADDED_LATER = {"schedule": "cosine", "patience": 2, "moved_copies": 0}
"""Train settings added after runs were saved, with the behaviour those runs had."""


def _is_sweep_file(rel: Path) -> bool:
    """Whether ``rel`` (relative to ``--out``) is a file that ``editing.train`` or
    ``editing.results`` writes there."""
    parts = rel.parts
    if parts[0] in (STAGING_DIR, COMMIT_DIR):
        return True
    if len(parts) == 1:
        return parts[0] in (*TABLE_FILES, "curves.png")
    if len(parts) < 4 or parts[0] not in EDITS or parts[1] not in MODELS:
        return False
    if not re.fullmatch(r"seed\d+", parts[2]):
        return False
    return parts[3] in (STAGING_DIR, COMMIT_DIR) or (len(parts) == 4 and parts[3] in RUN_FILES)


def _settings_changed(folder: Path, config: TrainConfig, editor_config: EditorConfig) -> list[str]:
    """The ``--flags`` whose values differ from the finished run in ``folder``."""
    saved = read_json(checkpoint_file(folder, "config.json"), what="run config")
    want = _saved_config(config, _run_editor_config(config, editor_config))
    train = {**_ADDED_LATER, **{k: v for k, v in saved.get("train", {}).items()
                                if k not in _RUNTIME_FIELDS}}
    editor = EditorConfig.from_dict(saved.get("editor", {}), str(folder / "config.json"))
    changed = [k for k, v in want["train"].items()
               if k not in _RUNTIME_FIELDS and train.get(k, "?") != v]
    # another model's options (--gmn-* for an NP-NFN run) do not change what a run computes
    wanted = _run_editor_config(config, editor_config).model_fields()
    changed += [k for k, v in wanted.items() if editor.to_dict()[k] != v]
    return ["--" + k.replace("_", "-") for k in changed]


def _plan(cfg: SweepConfig) -> list[tuple[TrainConfig, Path]]:
    """The runs to train, after checking that none would overwrite anything (writes nothing).

    Raises:
        FolderNotEmptyError: ``--out`` holds files this command did not write, a finished run
            has other settings, or a run folder holds an unfinished run's files, and
            ``--overwrite`` was not given.
    """
    refuse_foreign(cfg.out, _is_sweep_file, overwrite=cfg.overwrite)
    ecfg, todo = cfg.editor_config(), []
    for run in cfg.runs():
        folder = run_dir(cfg.out, run.edit, run.model, run.seed)
        if has_checkpoint(folder, ["log.json"]) and not cfg.overwrite:
            changed = _settings_changed(folder, run, ecfg)
            if not changed:
                print(f"skip {folder} (finished; --overwrite to retrain)")
                continue
            raise FolderNotEmptyError(
                f"{folder} holds a finished run with other {', '.join(changed)}; choose another "
                "--out, or pass --overwrite to retrain it"
            )
        held = [p.name for p in folder.iterdir() if p.name not in (STAGING_DIR, COMMIT_DIR)
                ] if folder.is_dir() else []
        if held and not cfg.overwrite:
            shown = ", ".join(sorted(held)[:5])
            raise FolderNotEmptyError(f"{folder} holds files ({shown}) but no finished run; "
                                      "pass --overwrite to replace them")
        todo.append((run, folder))
    return todo


def sweep(cfg: SweepConfig) -> dict[str, Any]:
    """Train every run of ``cfg`` not already finished; returns the results table.

    Everything that could refuse (see :func:`_plan`) is checked before any data is loaded.
    """
    todo = _plan(cfg)
    ecfg, progress = cfg.editor_config(), not cfg.quiet
    if todo:
        data = {s: load_digits_inrs(s, n, progress=progress) for s, n in cfg.limits().items()}
        if cfg.moved_copies:
            data["moved"] = moved_train_inrs(cfg.moved_copies, cfg.limits()["train"], progress)
    for run, folder in todo:
        if folder.is_dir():
            recover_checkpoint(folder)  # finish or drop an interrupted write of this run
        _, log = train_editor(run, ecfg, folder, data, progress, overwrite=cfg.overwrite)
        print(
            f"{run.edit:9s} {run.model:9s} seed {run.seed}: test MSE {log['test_mse']:.5f} "
            f"(best step {log['best_step']}, {log['wall_seconds']:.0f}s) -> {folder}"
        )
        write_table(collect(cfg.out), cfg.out)
    table = collect(cfg.out)
    write_table(table, cfg.out)
    return table


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m editing.train``; returns the results table (:func:`editing.results.collect`)."""
    return cli.run(SweepConfig, sweep, argv, prog="python -m editing.train", doc=__doc__)


if __name__ == "__main__":
    main()
