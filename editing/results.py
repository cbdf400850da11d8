"""The editing results table: gather run logs, aggregate over seeds, write JSON + Markdown.

Reads every ``OUT/<edit>/<model>/seed<seed>/log.json`` written by :mod:`editing.train`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

__all__ = ["REFERENCE", "collect", "markdown", "write_table"]

REFERENCE: dict[str, dict[str, float]] = {
    "no edit": {"dilate": 0.0210, "invert": 0.576, "blur": 0.00167},
    "MLP (3 x 512)": {"dilate": 0.0093, "invert": 0.134, "blur": 0.00156},
    "NFN-NP": {"dilate": 0.0045, "invert": 0.0103, "blur": 0.00119},
}
"""Reference test MSEs on this benchmark (600 steps, batch 32; from the editing issue)."""

_MODEL_ORDER = ("identity", "mlp", "mlp_aug", "gmn")
_MODEL_LABEL = {
    "identity": "no edit",
    "mlp": "MLP on flat weights",
    "mlp_aug": "MLP + permutation aug.",
    "gmn": "GMN editor",
}


def collect(out: Path | str) -> dict[str, Any]:
    """``{"runs": [...], "table": {edit: {model: {mean, std, min, max, n, seeds, ...}}}}``.

    ``std`` is the sample standard deviation over seeds (0 with one seed).
    """
    runs = []
    for log_path in sorted(Path(out).glob("*/*/seed*/log.json")):
        log = json.loads(log_path.read_text())
        cfg = log["config"]
        runs.append({
            "edit": cfg["edit"], "model": cfg["model"], "seed": cfg["seed"],
            "steps": cfg["steps"] if cfg["model"] != "identity" else 0,
            "batch_size": cfg["batch_size"], "test_mse": log["test_mse"],
            "best_val_mse": log["best_val_mse"], "best_step": log["best_step"],
            "wall_seconds": log["wall_seconds"], "path": str(log_path.parent),
            "editor": log.get("editor", {}),
        })  # fmt: skip
    table: dict[str, dict[str, Any]] = {}
    for r in runs:
        table.setdefault(r["edit"], {}).setdefault(r["model"], []).append(r)
    agg: dict[str, dict[str, Any]] = {}
    for edit, models in sorted(table.items()):
        agg[edit] = {}
        for model in sorted(models, key=lambda m: _MODEL_ORDER.index(m)):
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
    return {"runs": runs, "table": agg, "reference": REFERENCE}


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
    for model in _MODEL_ORDER:
        cells = []
        for edit in edits:
            c = table[edit].get(model)
            cells.append(f"{c['mean']:.5f} ± {c['std']:.5f} ({c['n']})" if c else "—")
        if any(c != "—" for c in cells):
            lines.append(f"| {_MODEL_LABEL[model]} | " + " | ".join(cells) + " |")
    lines += ["", "Reference (issue; 600 steps, batch 32):", ""]
    lines += ["| model | " + " | ".join(edits) + " |", "|---|" + "---|" * len(edits)]
    for name, ref in results["reference"].items():
        cells = [f"{ref[e]:.5f}" if e in ref else "—" for e in edits]
        lines.append(f"| {name} (reference) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(results: dict[str, Any], out: Path | str) -> tuple[Path, Path]:
    """Write ``OUT/results.json`` and ``OUT/results.md``; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "results.json", out / "results.md"
    js.write_text(json.dumps(results, indent=2) + "\n")
    md.write_text(markdown(results))
    return js, md
