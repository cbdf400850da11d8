"""Meta-training throughput against processes and population size.

``python -m lopt.throughput --out docs/results/lopt/throughput`` runs short meta-trainings
(``python -m lopt.meta_train``, or ``torchrun --standalone --nproc_per_node=N`` for N > 1) for
every number of processes x population size and reads their ``log.csv``:

* seconds per outer step (the first ``--warmup`` steps excluded),
* outer steps per minute, and inner steps per second (``tasks_per_step * population *
  truncation`` inner steps per outer step, every one of them differentiated through),
* the cost of a population relative to a single network (same processes),
* peak memory (the largest rank's peak RSS, or CUDA allocation on a GPU).

Writes ``throughput.json``, ``throughput.md`` and ``throughput.png``. Every configuration
runs the same ``--tasks-per-step`` task slots in total, so processes split the same work.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main", "measure"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lopt.throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2],
                   help="numbers of processes (default: 1 2)")
    p.add_argument("--populations", type=int, nargs="+", default=[1, 4, 16, 64],
                   help="networks per task slot (default: 1 4 16 64)")
    p.add_argument("--tasks-per-step", type=int, default=2,
                   help="task slots per outer step, over all processes (default 2)")
    p.add_argument("--task", default="digits_mlp32", help="inner task (default digits_mlp32)")
    p.add_argument("--model", default="gmn", choices=["gmn", "mlp"], help="learned optimizer net")
    p.add_argument("--hidden", type=int, default=32, help="net width (default 32)")
    p.add_argument("--layers", type=int, default=2, help="net depth (default 2)")
    p.add_argument("--estimator", default="tbptt", choices=["tbptt", "es"],
                   help="meta-gradient estimator (default tbptt)")
    p.add_argument("--truncations", type=int, nargs="+", default=[5],
                   help="inner steps per truncation (several: memory against truncation length)")
    p.add_argument("--steps", type=int, default=4, help="outer steps per measurement")
    p.add_argument("--warmup", type=int, default=1, help="outer steps left out of the timing")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    p.add_argument("--out", default="runs/lopt_throughput", help="output folder")
    return p


def _command(args: argparse.Namespace, processes: int, population: int, truncation: int,
             out: Path) -> list[str]:  # fmt: skip
    flags = ["--task", args.task, "--model", args.model, "--hidden", str(args.hidden),
             "--layers", str(args.layers), "--estimator", args.estimator,
             "--tasks-per-step", str(args.tasks_per_step), "--population", str(population),
             "--truncation", str(truncation), "--horizon", str(10**6),
             "--steps", str(args.steps), "--save-every", str(10**6), "--threads",
             str(args.threads), "--device", args.device, "--out", str(out)]  # fmt: skip
    if processes == 1:
        return [sys.executable, "-m", "lopt.meta_train", *flags]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "lopt.meta_train", *flags]  # fmt: skip


def measure(args: argparse.Namespace, processes: int, population: int, truncation: int) -> dict:
    """One configuration: run it, return its timings and peak memory (or its error)."""
    row = {"processes": processes, "population": population, "truncation": truncation}
    with tempfile.TemporaryDirectory(prefix="lopt_throughput_") as tmp:
        out = Path(tmp) / "run"
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        start = time.time()
        try:
            proc = subprocess.run(_command(args, processes, population, truncation, out), env=env,
                                  capture_output=True, text=True, timeout=args.timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            return {**row, "error": f"timed out after {args.timeout:.0f} s"}
        row["wall_s"] = time.time() - start
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-3:]
            return {**row, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
        with (out / "log.csv").open() as fh:
            log = list(csv.DictReader(fh))
    times = [float(r["elapsed_s"]) for r in log]
    timed = len(times) - args.warmup
    sec = (times[-1] - times[args.warmup - 1]) / timed if args.warmup else times[-1] / timed
    inner = args.tasks_per_step * population * truncation
    return {**row, "sec_per_outer_step": sec, "outer_steps_per_min": 60.0 / sec,
            "inner_steps_per_s": inner / sec,
            "peak_mem_mb": max(float(r["peak_mem_mb"]) for r in log)}


def _table(rows: list[dict]) -> str:
    lines = ["| processes | population | truncation | s / outer step | outer steps / min "
             "| inner steps / s | cost vs population 1 | peak memory (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['processes']} | {r['population']} | {r['truncation']} "
                         f"| failed: {r['error']} | | | | |")  # fmt: skip
            continue
        lines.append(
            f"| {r['processes']} | {r['population']} | {r['truncation']} "
            f"| {r['sec_per_outer_step']:.2f} "
            f"| {r['outer_steps_per_min']:.1f} | {r['inner_steps_per_s']:.0f} "
            f"| {r.get('relative_cost', float('nan')):.2f}x | {r['peak_mem_mb']:.0f} |"
        )
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path) -> None:
    """Throughput and peak memory against population size (or truncation, if it varies)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = "population" if len({r["population"] for r in rows}) > 1 else "truncation"
    other = "truncation" if x == "population" else "population"
    lines: dict[tuple[int, int], list[dict]] = {}
    for r in rows:
        if "error" not in r:
            lines.setdefault((r["processes"], r[other]), []).append(r)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for (procs, fixed), ok in sorted(lines.items()):
        label = f"{procs} process(es), {other} {fixed}"
        ax1.plot([r[x] for r in ok], [r["inner_steps_per_s"] for r in ok], "o-", label=label)
        ax2.plot([r[x] for r in ok], [r["peak_mem_mb"] for r in ok], "o-", label=label)
    for ax, label in [(ax1, "inner steps / s"), (ax2, "peak memory per rank (MB)")]:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("population (networks per task slot)" if x == "population"
                      else "truncation (inner steps)")  # fmt: skip
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for trunc in args.truncations:
        for procs in args.processes:
            for pop in sorted(args.populations):
                row = measure(args, procs, pop, trunc)
                rows.append(row)
                print(json.dumps(row), flush=True)
                base = next((r for r in rows if (r["processes"], r["population"],
                             r["truncation"]) == (procs, 1, trunc) and "error" not in r), None)
                if base is not None and "error" not in row:  # population P costs this x one
                    row["relative_cost"] = row["sec_per_outer_step"] / base["sec_per_outer_step"]
                (out / "throughput.json").write_text(json.dumps(
                    {"config": vars(args), "results": rows}, indent=2) + "\n")  # fmt: skip
    (out / "throughput.md").write_text(_table(rows) + "\n")
    _plot(rows, out / "throughput.png")
    print(_table(rows))
    return rows


if __name__ == "__main__":
    main()
