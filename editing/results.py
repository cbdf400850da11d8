"""The editing results table: gather run logs, aggregate over seeds, write JSON + Markdown.

Reads every ``OUT/<edit>/<model>/seed<seed>/log.json`` written by :mod:`editing.train`.
``python -m editing.results --runs OUT [--out DIR]`` rewrites the table and draws the
validation curves (``DIR/results.json``, ``results.md``, ``curves.png``, written together as
one checkpoint). ``--runs`` must hold at least one finished run: an empty result never
replaces a table. The default ``--out`` is the sweep folder itself (whose table
``editing.train`` keeps up to date too); another ``--out`` may hold an earlier table (it is
replaced) but nothing else unless ``--overwrite`` (other files stay).

Variants in one table: ``--runs OUT NAME=OUT2 ...`` adds the runs of other sweeps (say a GMN
with output heads, trained with ``--out OUT2``) as their own rows, ``model@NAME`` (shown as
"GMN editor [NAME]"); ``--out`` is then required.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import cli
from common.cli import option
from common.errors import UserError
from common.persistence import (
    figure_bytes,
    json_bytes,
    prepare_output,
    read_json,
    write_checkpoint,
    write_figure,
)

__all__ = [
    "REFERENCE",
    "TABLE_FILES",
    "ResultsConfig",
    "collect",
    "curves_figure",
    "main",
    "markdown",
    "plot_curves",
    "table_files",
    "write_table",
]

TABLE_FILES: tuple[str, ...] = ("results.json", "results.md")
"""The table files :func:`write_table` writes into a sweep folder."""

REFERENCE: dict[str, dict[str, float]] = {
    "no edit": {"dilate": 0.0210, "invert": 0.576, "blur": 0.00167},
    "MLP (3 x 512)": {"dilate": 0.0093, "invert": 0.134, "blur": 0.00156},
    "NFN-NP": {"dilate": 0.0045, "invert": 0.0103, "blur": 0.00119},
}
"""Reference test MSEs on this benchmark (600 steps, batch 32; from the editing issue)."""

_MODEL_ORDER = ("identity", "mlp", "mlp_aug", "np_nfn", "gmn")
_MODEL_LABEL = {
    "identity": "no edit",
    "mlp": "MLP on flat weights",
    "mlp_aug": "MLP + permutation aug.",
    "np_nfn": "NP-NFN (run here)",
    "gmn": "GMN editor",
}


def _row(key: str) -> tuple[int, str]:
    """Sort key of a table row ``model`` or ``model@variant``: models in their order, each
    model's plain row first."""
    model, _, variant = key.partition("@")
    return _MODEL_ORDER.index(model), variant


def _label(key: str) -> str:
    """``"GMN editor [oce8]"`` for the row ``gmn@oce8``."""
    model, _, variant = key.partition("@")
    return _MODEL_LABEL[model] + (f" [{variant}]" if variant else "")


def collect(out: Path | str, variants: Mapping[str, Path | str] | None = None) -> dict[str, Any]:
    """``{"runs": [...], "table": {edit: {row: {mean, std, min, max, n, seeds, ...}}}}``.

    A row is a model of the sweep in ``out``, or ``model@NAME`` for the runs of the sweep
    ``variants[NAME]``. ``std`` is the sample standard deviation over seeds (0 with one seed).
    """
    runs = []
    sources = [("", Path(out)), *((name, Path(p)) for name, p in (variants or {}).items())]
    logs = [(name, log_path) for name, folder in sources
            for log_path in sorted(folder.glob("*/*/seed*/log.json"))]
    for variant, log_path in logs:
        log = read_json(log_path, what="run log")
        cfg = log["config"]
        runs.append({
            "edit": cfg["edit"], "seed": cfg["seed"],
            "model": cfg["model"] + (f"@{variant}" if variant else ""),
            "steps": cfg["steps"] if cfg["model"] != "identity" else 0,
            "batch_size": cfg["batch_size"], "test_mse": log["test_mse"],
            "best_val_mse": log["best_val_mse"], "best_step": log["best_step"],
            "wall_seconds": log["wall_seconds"], "path": str(log_path.parent),
            "editor": log.get("editor", {}),
            # logs written before per-step timing: None (the table says "—")
            "seconds_per_step": log.get("seconds_per_step"),
            "val_curve": ([log["val_train_seconds"], log["val_mse"]]
                          if "val_train_seconds" in log else None),
        })
    table: dict[str, dict[str, Any]] = {}
    for r in runs:
        table.setdefault(r["edit"], {}).setdefault(r["model"], []).append(r)
    agg: dict[str, dict[str, Any]] = {}
    for edit, models in sorted(table.items()):
        agg[edit] = {}
        for model in sorted(models, key=_row):
            rs = sorted(models[model], key=lambda r: r["seed"])
            vals = [r["test_mse"] for r in rs]
            agg[edit][model] = {
                "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "min": min(vals),
                "max": max(vals),
                "n": len(vals),
                "seeds": {str(r["seed"]): r["test_mse"] for r in rs},
                "steps": rs[0]["steps"],
                "wall_seconds_mean": statistics.fmean(r["wall_seconds"] for r in rs),
            }
    return {"runs": runs, "table": agg, "equal_time": equal_time(runs), "reference": REFERENCE}


EQUAL_TIME_MODEL = "np_nfn"
"""Whose training time sets the equal-time budget (when it has runs for the edit)."""


def equal_time(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per edit, the validation MSE every trained model had reached (best so far, mean over
    seeds) within the training time of :data:`EQUAL_TIME_MODEL`'s runs (mean over its seeds;
    without such runs, the fastest model's): ``{edit: {"seconds": T, "models": {model:
    mse}}}``. A model whose runs end sooner gives its final best; models without timed logs
    are left out. (The fastest model is the MLP baseline, done in seconds: its time says
    little about the metanetworks.)"""
    out: dict[str, Any] = {}
    for edit in sorted({r["edit"] for r in runs}):
        timed = [r for r in runs if r["edit"] == edit and r["steps"] and r["val_curve"]]
        by_model: dict[str, list[dict[str, Any]]] = {}
        for r in timed:
            by_model.setdefault(r["model"], []).append(r)
        if not by_model:
            continue
        seconds = {m: statistics.fmean(r["val_curve"][0][-1] for r in rs)
                   for m, rs in by_model.items()}
        budget = seconds.get(EQUAL_TIME_MODEL, min(seconds.values()))
        out[edit] = {"seconds": budget, "models": {
            m: statistics.fmean(_reached(r, budget) for r in rs) for m, rs in sorted(
                by_model.items(), key=lambda kv: _row(kv[0]))}}
    return out


def _reached(run: dict[str, Any], seconds: float) -> float:
    """The best validation MSE of ``run`` within ``seconds`` of training."""
    times, mse = run["val_curve"]
    return min(m for t, m in zip(times, mse, strict=True) if t <= seconds)


def markdown(results: dict[str, Any]) -> str:
    """The table as Markdown: one row per model, one column per edit, ``mean ± std (n)``."""
    table = results["table"]
    edits = list(table)
    if not edits:
        return "(no finished runs)\n"
    lines = [
        "Test MSE at the best-validation checkpoint (mean ± std over seeds, n seeds).",
        "",
        "| model | " + " | ".join(edits) + " |",
        "|---|" + "---|" * len(edits),
    ]
    rows = sorted({r["model"] for r in results["runs"]}, key=_row)
    for model in rows:
        cells = []
        for edit in edits:
            c = table[edit].get(model)
            cells.append(f"{c['mean']:.5f} ± {c['std']:.5f} ({c['n']})" if c else "—")
        if any(c != "—" for c in cells):
            lines.append(f"| {_label(model)} | " + " | ".join(cells) + " |")
    lines += ["", "Training budget per run (from the run logs):", ""]
    lines += ["| model | steps | batch | editor config | mean wall s / run | s / training step |",
              "|---" * 6 + "|"]
    for row in rows:
        runs = [r for r in results["runs"] if r["model"] == row]
        model = row.partition("@")[0]
        ed = runs[0]["editor"]
        if model == "gmn":
            arch = f"GMN hidden {ed.get('gmn_hidden')}, {ed.get('gmn_layers')} layers"
            arch += ", affine skip" if ed.get("gmn_skip") else ""
            arch += " (last layer)" if ed.get("gmn_skip") and ed.get(
                "gmn_skip_layers") == "last" else ""
            arch += f", {ed['gmn_heads']} output heads" if ed.get("gmn_heads", 1) > 1 else ""
            arch += ", raw values" if ed.get("gmn_raw_values") else ""
            freqs = ed.get("gmn_value_freqs", 6)
            arch += f", {freqs} value frequencies" if freqs != 6 else ""
            arch += ", context" if ed.get("gmn_context") else ""
        elif model in ("mlp", "mlp_aug"):
            arch = f"MLP {ed.get('mlp_depth')} x {ed.get('mlp_hidden')}"
        elif model == "np_nfn":
            arch = f"NP-NFN {ed.get('nfn_layers')} x {ed.get('nfn_channels')} channels"
            if ed.get("nfn_fourier"):
                arch += (f", {ed['nfn_fourier']} Fourier features "
                         f"(scale {ed['nfn_fourier_scale']:g})")
            if ed.get("nfn_io"):
                arch += ", I/O encoding"
        else:
            arch = "-"
        if model != "identity":
            arch += f", output_scale {ed.get('output_scale', 'std')}"
        steps = sorted({r["steps"] for r in runs})
        batch = sorted({r["batch_size"] for r in runs})
        wall = statistics.fmean(r["wall_seconds"] for r in runs)
        per_step = [r["seconds_per_step"] for r in runs if r.get("seconds_per_step")]
        step_s = f"{statistics.fmean(per_step):.3f}" if per_step else "—"
        lines.append(
            f"| {_label(row)} | {'/'.join(map(str, steps))} | "
            f"{'/'.join(map(str, batch))} | {arch} | {wall:.0f} | {step_s} |"
        )
    same = results.get("equal_time") or {}
    if same:
        lines += ["", "At equal training time: the best validation MSE each model had reached "
                  f"within the training time of {_label(EQUAL_TIME_MODEL)} (without its runs, "
                  "the fastest model's; mean over seeds; a model done sooner gives its final "
                  "best):", ""]
        trained = [m for m in rows if m != "identity"]
        lines += ["| edit | seconds | " + " | ".join(_label(m) for m in trained) + " |",
                  "|---|---|" + "---|" * len(trained)]
        for edit, row in same.items():
            cells = [f"{row['models'][m]:.5f}" if m in row["models"] else "—" for m in trained]
            lines.append(f"| {edit} | {row['seconds']:.0f} | " + " | ".join(cells) + " |")
    lines += ["", "Reference (issue; 600 steps, batch 32):", ""]
    lines += ["| model | " + " | ".join(edits) + " |", "|---|" + "---|" * len(edits)]
    for name, ref in results["reference"].items():
        cells = [f"{ref[e]:.5f}" if e in ref else "—" for e in edits]
        lines.append(f"| {name} (reference) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_files(results: dict[str, Any]) -> dict[str, bytes]:
    """``{"results.json": ..., "results.md": ...}`` of ``results`` (see :data:`TABLE_FILES`)."""
    return {"results.json": json_bytes(results), "results.md": markdown(results).encode()}


def write_table(results: dict[str, Any], out: Path | str) -> tuple[Path, Path]:
    """Write ``OUT/results.json`` and ``OUT/results.md`` (both at once); returns both paths."""
    out = write_checkpoint(out, table_files(results))
    return out / "results.json", out / "results.md"


def plot_curves(results: dict[str, Any], path: Path | str) -> Path:
    """:func:`curves_figure` saved as a PNG at ``path``; returns it."""
    return write_figure(curves_figure(results), path)


def curves_figure(results: dict[str, Any]):
    """Validation MSE vs step per edit (mean over seeds, band min..max) for every model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edits = list(results["table"])
    cols = min(3, max(1, len(edits)))
    rows = max(1, -(-len(edits) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(edits) :]:
        ax.set_visible(False)
    rows = sorted({r["model"] for r in results["runs"]}, key=_row)
    for ax, edit in zip(axes.flat, edits, strict=False):
        for model in rows:
            runs = [r for r in results["runs"] if r["edit"] == edit and r["model"] == model]
            if not runs:
                continue
            logs = [read_json(Path(r["path"]) / "log.json", what="run log") for r in runs]
            if model == "identity":
                ax.axhline(statistics.fmean(lg["val_mse"][0] for lg in logs), color="grey",
                           ls="--", lw=1, label=_label(model))
                continue
            steps = logs[0]["val_steps"]
            curves = [lg["val_mse"] for lg in logs if lg["val_steps"] == steps]
            mean = [statistics.fmean(c[i] for c in curves) for i in range(len(steps))]
            lo = [min(c[i] for c in curves) for i in range(len(steps))]
            hi = [max(c[i] for c in curves) for i in range(len(steps))]
            label = f"{_label(model)} ({len(curves)})"
            (line,) = ax.plot(steps, mean, "o-", ms=2, label=label)
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
        ref = results.get("reference", {}).get("NFN-NP", {}).get(edit)
        if ref is not None:
            ax.axhline(ref, color="k", ls=":", lw=1, label="NFN-NP (reference, test)")
        ax.set(title=edit, xlabel="step", ylabel="val pixel MSE", yscale="log")
        ax.legend(fontsize=6)
    return fig


def _runs(values: list[str]) -> str | None:
    """What is wrong with ``--runs`` (a folder, then NAME=FOLDER entries), or None."""
    if not values:
        return "is required"
    if "=" in values[0]:
        return f"starts with the main sweep's folder, not NAME=FOLDER ({values[0]!r})"
    names = [v.partition("=")[0] for v in values[1:]]
    bad = [v for v in values[1:] if not re.fullmatch(r"[\w.-]+=.+", v)]
    if bad:
        return f"entries after the first must be NAME=FOLDER ({bad[0]!r} is not)"
    if len(set(names)) < len(names):
        return f"names must be unique ({names})"
    return None


@dataclass
class ResultsConfig:
    """Options of ``python -m editing.results``."""

    runs: list[str] = option([], "the --out folder of python -m editing.train (required), "
                             "then NAME=FOLDER for other sweeps whose runs become rows "
                             "'model [NAME]'", check=_runs)
    out: str = option("", "where to write results.json, results.md and curves.png "
                      "(default: --runs; required with several)")
    overwrite: bool = option(False, "write the table into an --out (other than --runs) that "
                             "holds other files (those stay)")


def write_results(cfg: ResultsConfig) -> dict[str, Any]:
    """Collect the runs of ``cfg.runs`` and write the table and curves (see module docstring).

    Raises:
        UserError: ``--runs`` is missing or holds no finished run (nothing is written), or
            ``--out`` holds files and ``--overwrite`` was not given.
    """
    runs = Path(cfg.runs[0])
    variants = dict(v.split("=", 1) for v in cfg.runs[1:])
    for folder in [runs, *map(Path, variants.values())]:
        if not folder.is_dir():
            raise UserError(f"--runs {folder} is not a folder (the --out of python -m "
                            "editing.train)")
    if variants and not cfg.out:
        raise UserError("--runs with several sweeps needs --out (where the table goes)")
    results = collect(runs, variants)
    if not results["runs"]:
        raise UserError(f"--runs {runs} holds no finished run (<edit>/<model>/seed<s>/log.json); "
                        "nothing written")
    out = Path(cfg.out or runs)
    files = {**table_files(results), "curves.png": figure_bytes(curves_figure(results))}
    if out.resolve() != runs.resolve():
        prepare_output(out, overwrite=cfg.overwrite, writes=list(files), rerun=True)
    write_checkpoint(out, files)
    print(markdown(results))
    print(f"-> {', '.join(str(out / name) for name in files)}")
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m editing.results``; returns the results (see :func:`collect`)."""
    return cli.run(ResultsConfig, write_results, argv, prog="python -m editing.results",
                   doc=__doc__)


if __name__ == "__main__":
    main()
