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

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import cli
from common.errors import ConfigError
from common.persistence import prepare_output, write_figure, write_json, write_text
from lopt.estimators import ESTIMATORS
from lopt.nets import NET_KINDS
from tasks import TASKS

__all__ = ["ThroughputConfig", "main", "measure", "run"]


@dataclass
class ThroughputConfig:
    """Options of ``python -m lopt.throughput`` (each field is a ``--flag``)."""

    processes: list[int] = cli.option([1, 2], "numbers of processes", check=cli.positive)
    populations: list[int] = cli.option([1, 4, 16, 64], "networks per task slot",
                                        check=cli.positive)
    tasks_per_step: int = cli.option(2, "task slots per outer step, over all processes",
                                     check=cli.positive)
    task: str = cli.option("digits_mlp32", "inner task", choices=sorted(TASKS))
    model: str = cli.option("gmn", "learned optimizer net", choices=sorted(NET_KINDS))
    hidden: int = cli.option(32, "net width", check=cli.positive)
    layers: int = cli.option(2, "net depth", check=cli.positive)
    estimator: str = cli.option("tbptt", "meta-gradient estimator", choices=sorted(ESTIMATORS))
    truncations: list[int] = cli.option([5], "inner steps per truncation (several: memory "
                                        "against truncation length)", check=cli.positive)
    steps: int = cli.option(4, "outer steps per measurement", check=cli.positive)
    warmup: int = cli.option(1, "outer steps left out of the timing", check=cli.nonnegative)
    threads: int = cli.option(1, "torch threads per process", check=cli.positive)
    device: str = cli.option("cpu", "cpu or cuda")
    timeout: float = cli.option(1800.0, "seconds per configuration", check=cli.positive)
    out: str = cli.option("runs/lopt_throughput", "output folder (refused when it holds files, "
                          "unless --overwrite)")
    overwrite: bool = cli.option(False, "replace what the benchmark writes in a non-empty --out")

    def check(self) -> None:
        if self.warmup >= self.steps:
            raise ConfigError(f"--warmup ({self.warmup}) must be below --steps ({self.steps})")


OUTPUTS = ("throughput.json", "throughput.md", "throughput.png")


def _command(args: ThroughputConfig, processes: int, population: int, truncation: int,
             out: Path) -> list[str]:
    flags = ["--task", args.task, "--model", args.model, "--hidden", str(args.hidden),
             "--layers", str(args.layers), "--estimator", args.estimator,
             "--tasks-per-step", str(args.tasks_per_step), "--population", str(population),
             "--truncation", str(truncation), "--horizon", str(10**6),
             "--steps", str(args.steps), "--save-every", str(10**6), "--threads",
             str(args.threads), "--device", args.device, "--out", str(out)]
    if processes == 1:
        return [sys.executable, "-m", "lopt.meta_train", *flags]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "lopt.meta_train", *flags]


def measure(args: ThroughputConfig, processes: int, population: int, truncation: int) -> dict:
    """One configuration: run it, return its timings and peak memory (or its error)."""
    row = {"processes": processes, "population": population, "truncation": truncation}
    with tempfile.TemporaryDirectory(prefix="lopt_throughput_") as tmp:
        out = Path(tmp) / "run"
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        start = time.time()
        try:
            proc = subprocess.run(_command(args, processes, population, truncation, out), env=env,
                                  capture_output=True, text=True, timeout=args.timeout)
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
                         f"| failed: {r['error']} | | | | |")
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
                      else "truncation (inner steps)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure(fig, path)


def run(cfg: ThroughputConfig) -> list[dict]:
    """Measure every processes x population x truncation configuration; table and figure."""
    out = prepare_output(cfg.out, overwrite=cfg.overwrite, writes=OUTPUTS)
    rows = []
    for trunc in cfg.truncations:
        for procs in cfg.processes:
            for pop in sorted(cfg.populations):
                row = measure(cfg, procs, pop, trunc)
                rows.append(row)
                print(json.dumps(row), flush=True)
                base = next((r for r in rows if (r["processes"], r["population"],
                             r["truncation"]) == (procs, 1, trunc) and "error" not in r), None)
                if base is not None and "error" not in row:  # population P costs this x one
                    row["relative_cost"] = row["sec_per_outer_step"] / base["sec_per_outer_step"]
                write_json(out / "throughput.json", {"config": asdict(cfg), "results": rows})
    write_text(out / "throughput.md", _table(rows) + "\n")
    _plot(rows, out / "throughput.png")
    print(_table(rows))
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    return cli.run(ThroughputConfig, run, argv, prog="python -m lopt.throughput", doc=__doc__)


if __name__ == "__main__":
    main()
