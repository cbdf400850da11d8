"""Train weight-space INR editors: ``python -m editing.train --edit dilate``.

For every (edit, model, seed) the run folder ``OUT/<edit>/<model>/seed<seed>/`` receives

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
no-edit MSE by < 1e-6). With several edits / models / seeds, the results table is written to
``OUT/results.json`` and ``OUT/results.md`` (see :mod:`editing.results`); finished runs are
skipped, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from editing.data import load_digits_inrs
from editing.editor import MODELS, Editor, EditorConfig, count_parameters, save_editor
from editing.edits import EDITS
from editing.inr import Params, render
from editing.symmetry import permute_hidden, random_hidden_permutations

__all__ = ["TrainConfig", "evaluate", "main", "run_dir", "train_editor"]


@dataclass(frozen=True)
class TrainConfig:
    """One editor training run.

    Attributes:
        edit: name in :data:`editing.EDITS`.
        model: ``gmn``, ``mlp``, ``mlp_aug`` (MLP + random hidden-neuron permutations of
            the input INRs as augmentation) or ``identity`` (no training, no edit).
        steps: optimizer steps.
        batch_size: INRs per step.
        lr: AdamW learning rate of the metanetwork (cosine decay to 0 after a linear warmup).
        gamma_lr: AdamW learning rate of the gammas and of the GMN's linear skip (no weight
            decay; gammas have to grow from 0.01 to O(1) for edits like invert).
        weight_decay: AdamW weight decay of the metanetwork.
        warmup: linear warmup steps.
        grad_clip: max global gradient norm (0: off).
        eval_every: validate (and maybe checkpoint) every this many steps, and at the end.
        seed: seed of the metanetwork init, batch order and augmentation.
        train_limit / val_limit / test_limit: use only the first N INRs of a split (None: all).
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
    grad_clip: float = 1.0
    eval_every: int = 50
    seed: int = 0
    train_limit: int | None = None
    val_limit: int | None = None
    test_limit: int | None = None
    eval_batch: int = 100
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.edit not in EDITS:
            raise ValueError(f"unknown edit {self.edit!r}; choose from {sorted(EDITS)}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose from {MODELS}")


def run_dir(out: Path | str, edit: str, model: str, seed: int) -> Path:
    """``OUT/<edit>/<model>/seed<seed>``."""
    return Path(out) / edit / model / f"seed{seed}"


def _slice(params: Mapping[str, Tensor], idx: Tensor | slice) -> Params:
    return {k: v[idx] for k, v in params.items()}


@torch.no_grad()
def evaluate(
    editor: Editor, params: Params, targets: Tensor, batch: int = 100, w0: float | None = None
) -> Tensor:
    """Per-INR MSE ``[n]`` between ``render(editor(params))`` and ``targets [n, H, W]``."""
    w0 = editor.config.w0 if w0 is None else w0
    device = editor.scale.device
    out = []
    for s in range(0, targets.shape[0], batch):
        p = {k: v.to(device) for k, v in _slice(params, slice(s, s + batch)).items()}
        img = render(editor(p), tuple(targets.shape[1:]), w0).cpu()
        out.append((img - targets[s : s + batch]).pow(2).flatten(1).mean(1))
    return torch.cat(out)


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _plot_curves(log: Mapping[str, Any], path: Path) -> None:
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train_editor(
    config: TrainConfig,
    editor_config: EditorConfig | None = None,
    out: Path | str | None = None,
    data: Mapping[str, tuple[Params, Tensor]] | None = None,
    progress: bool = True,
) -> tuple[Editor, dict[str, Any]]:
    """Train one editor; returns the best-validation editor and the log dict.

    Args:
        config: the run (:class:`TrainConfig`); ``config.model`` overrides
            ``editor_config.model``.
        editor_config: architecture (default :class:`EditorConfig` with ``config.model``).
        out: run folder (``config.json``, ``editor.safetensors/.json``, ``log.json``,
            ``curves.png``); None: write nothing.
        data: ``{"train"|"val"|"test": (params, images)}`` (default: the cached digits-INRs).
        progress: tqdm bar.

    Returns:
        ``(editor, log)``; ``log["test_mse"]`` is the mean test MSE at the best checkpoint.
    """
    t0 = time.perf_counter()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    ecfg = dataclasses.replace(editor_config or EditorConfig(), model=config.model)
    limits = {"train": config.train_limit, "val": config.val_limit, "test": config.test_limit}
    if data is None:
        data = {s: load_digits_inrs(s, limits[s], progress=progress) for s in limits}
    else:
        data = {s: (_slice(p, slice(0, limits[s])), im[: limits[s]]) for s, (p, im) in data.items()}
    edit = EDITS[config.edit]
    targets = {s: edit(im) for s, (_, im) in data.items()}
    device = torch.device(config.device)
    train_params = {k: v.to(device) for k, v in data["train"][0].items()}
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
        "train_loss": [],
        "val_steps": [],
        "val_mse": [],
        "no_edit_val_mse": no_edit_val,
    }
    steps = 0 if config.model == "identity" else config.steps
    best_val, best_step = validate(), 0
    best_state = copy.deepcopy(editor.state_dict())
    log["val_steps"].append(0)
    log["val_mse"].append(best_val)
    n_train = train_targets.shape[0]
    bar = tqdm(range(steps), desc=f"{config.edit}/{config.model}/s{config.seed}",
               disable=not progress)  # fmt: skip
    for step in bar:
        for g, lr in zip(opt.param_groups, base_lrs, strict=True):
            g["lr"] = lr * _lr_factor(step, steps, config.warmup)
        idx = torch.randint(n_train, (config.batch_size,), generator=gen).to(device)
        batch = _slice(train_params, idx)
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
            val = validate()
            log["val_steps"].append(step + 1)
            log["val_mse"].append(val)
            if val < best_val:
                best_val, best_step = val, step + 1
                best_state = copy.deepcopy(editor.state_dict())
            last = log["train_loss"][-1]
            bar.set_postfix(loss=f"{last:.2e}", val=f"{val:.2e}", best=f"{best_val:.2e}")
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
        wall_seconds=round(time.perf_counter() - t0, 1),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
    )
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(
            json.dumps({"train": dataclasses.asdict(config), "editor": ecfg.to_dict()}, indent=2)
            + "\n"
        )
        meta = {k: log[k] for k in ("best_step", "best_val_mse", "test_mse", "wall_seconds")}
        save_editor(editor, out / "editor", {"edit": config.edit, **meta, "train": log["config"]})
        _plot_curves(log, out / "curves.png")
        (out / "log.json").write_text(json.dumps(log, indent=1) + "\n")
    return editor, log


def _parser() -> argparse.ArgumentParser:
    d, e = TrainConfig(), EditorConfig()
    p = argparse.ArgumentParser(
        prog="python -m editing.train",
        description=(
            "Train weight-space INR editors theta' = theta + gamma * s * f(theta / s) on the "
            "digits-INR benchmark (train 1400 / val 200 / test 197 SIRENs). Loss: pixel MSE "
            "between render(theta') and EDITS[edit](ground-truth image). Reports test MSE at "
            "the best-validation checkpoint. Writes OUT/<edit>/<model>/seed<seed>/ "
            "(config.json, editor.safetensors + editor.json, log.json, curves.png) and, "
            "for the sweep, OUT/results.json + OUT/results.md. Finished runs are skipped "
            "unless --force."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--edit", nargs="+", default=[d.edit],
                   help=f"edit(s) to learn, or 'all': {sorted(EDITS)}")  # fmt: skip
    p.add_argument("--models", "--model", nargs="+", default=[d.model], choices=MODELS,
                   help="gmn: GMN metanet; mlp: MLP on flattened weights; mlp_aug: the MLP "
                        "with random hidden-neuron permutations as augmentation; identity: "
                        "no edit")  # fmt: skip
    p.add_argument("--seeds", "--seed", nargs="+", type=int, default=[d.seed], help="seeds")
    p.add_argument("--steps", type=int, default=d.steps, help="training steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="INRs per step")
    p.add_argument("--lr", type=float, default=d.lr, help="metanet AdamW learning rate (cosine)")
    p.add_argument("--gamma-lr", type=float, default=d.gamma_lr, help="learning rate of gammas")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW decay")
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear warmup steps")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="grad-norm clip (0 off)")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="validate every N steps")
    p.add_argument("--gmn-hidden", type=int, default=e.gmn_hidden, help="GMN width")
    p.add_argument("--gmn-layers", type=int, default=e.gmn_layers, help="GMN blocks")
    p.add_argument("--gmn-skip", action=argparse.BooleanOptionalAction, default=e.gmn_skip,
                   help="add a learned per-tensor affine term a_t * x_t + c_t to the GMN output")
    p.add_argument("--mlp-hidden", type=int, default=e.mlp_hidden, help="MLP hidden width")
    p.add_argument("--mlp-depth", type=int, default=e.mlp_depth, help="MLP hidden layers")
    p.add_argument("--output-scale", default=e.output_scale, choices=("preact", "std"),
                   help="per-tensor output scale u_t: architecture-derived (preact) or the "
                        "tensor's std over the training INRs (std)")  # fmt: skip
    p.add_argument("--gamma-param", default=e.gamma_param, choices=("linear", "log"),
                   help="learn gamma directly or its log (gamma = exp(u))")
    p.add_argument("--gamma-init", type=float, default=e.gamma_init, help="initial gammas")
    p.add_argument("--train-limit", type=int, default=None, help="use first N train INRs")
    p.add_argument("--val-limit", type=int, default=None, help="use first N val INRs")
    p.add_argument("--test-limit", type=int, default=None, help="use first N test INRs")
    p.add_argument("--device", default=d.device, help="torch device, e.g. cpu or cuda")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (1 suits shared machines; 0: torch default)")  # fmt: skip
    p.add_argument("--out", default="runs/editing", help="output folder")
    p.add_argument("--force", action="store_true", help="retrain runs that already finished")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry point; returns the results table (see :func:`editing.results.collect`)."""
    from editing.results import collect, write_table

    args = _parser().parse_args(argv)
    edits = sorted(EDITS) if args.edit == ["all"] else args.edit
    unknown = [e for e in edits if e not in EDITS]
    if unknown:
        raise SystemExit(f"unknown edit(s) {unknown}; choose from {sorted(EDITS)} or 'all'")
    ecfg = EditorConfig(
        gmn_hidden=args.gmn_hidden, gmn_layers=args.gmn_layers, mlp_hidden=args.mlp_hidden,
        mlp_depth=args.mlp_depth, gamma_init=args.gamma_init, gmn_skip=args.gmn_skip,
        gamma_param=args.gamma_param, output_scale=args.output_scale,
    )  # fmt: skip
    limits = {"train": args.train_limit, "val": args.val_limit, "test": args.test_limit}
    progress = not args.quiet
    data = {s: load_digits_inrs(s, n, progress=progress) for s, n in limits.items()}
    for edit in edits:
        for seed in args.seeds:
            for model in args.models:
                folder = run_dir(args.out, edit, model, seed)
                if (folder / "log.json").exists() and not args.force:
                    print(f"skip {folder} (done; --force to retrain)")
                    continue
                cfg = TrainConfig(
                    edit=edit, model=model, steps=args.steps, batch_size=args.batch_size,
                    lr=args.lr, gamma_lr=args.gamma_lr, weight_decay=args.weight_decay,
                    warmup=args.warmup, grad_clip=args.grad_clip, eval_every=args.eval_every,
                    seed=seed, train_limit=args.train_limit, val_limit=args.val_limit,
                    test_limit=args.test_limit, device=args.device,
                    threads=args.threads or None,
                )  # fmt: skip
                _, log = train_editor(cfg, ecfg, folder, data, progress)
                print(
                    f"{edit:9s} {model:9s} seed {seed}: test MSE {log['test_mse']:.5f} "
                    f"(best step {log['best_step']}, {log['wall_seconds']:.0f}s) -> {folder}"
                )
                write_table(collect(args.out), args.out)
    table = collect(args.out)
    write_table(table, args.out)
    return table


if __name__ == "__main__":
    main()
