"""Benchmark of the graph core: build, encode and GMN forward against model size.

``python -m benchmarks.graph_core --out runs/graphs_benchmark`` measures, for models from ~1K
to ~11.7M parameters (the project's architectures from ``tasks.architectures``: a
ResNet-18-shaped CNN and a small ViT among them), each in a fresh process so memory readings
are its own:

* build time of ``ParameterGraph.from_module`` (best and median of ``--repeats``), the peak
  memory it adds, against the size of the graph's own tensors;
* encode time of fresh parameter values into the existing graph, against one plain pass
  over the parameters (``torch.cat`` of the flattened tensors);
* forward time and added peak memory of a GMN (``--hidden``, ``--layers``) in inference mode.

It writes ``results.json`` (the rows and the config), ``results.md`` and ``benchmark.png``
(log-log against parameter count) into ``--out``.
"""

from __future__ import annotations

import gc
import io
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import torch
from torch import nn

from common import cli, persistence
from common.cli import nonnegative, option, positive
from graphs import GMN, ParameterGraph
from graphs.params import detach, flatten, map_tensors, numel
from tasks import architectures as arch

MODELS: dict[str, Callable[[], nn.Module]] = {
    "mlp_1k": lambda: arch.MLP(64, (16,), 10),
    "digits_cnn": lambda: arch.DigitsCNN(),
    "digits_vit": lambda: arch.digits_vit(),
    "digits_resnet": lambda: arch.digits_resnet(widths=(16, 32)),
    "mlp_670k": lambda: arch.MLP(784, (512, 512), 10),
    "small_vit": lambda: arch.small_vit(),
    "resnet_2.8m": lambda: arch.ResNet((2, 2, 2, 2), (32, 64, 128, 256)),
    "resnet18": lambda: arch.resnet18(),
}
OUTPUTS = ["results.json", "results.md", "benchmark.png"]


@dataclass
class BenchmarkConfig:
    out: str = option("runs/graphs_benchmark", "output folder")
    models: list[str] = option(list(MODELS), "models to measure", choices=list(MODELS))
    repeats: int = option(5, "builds timed per model", check=positive)
    hidden: int = option(16, "GMN width for the forward pass", check=positive)
    layers: int = option(2, "GMN blocks for the forward pass", check=positive)
    forward: bool = option(True, "time the GMN forward pass (--no-forward skips it)")
    threads: int = option(0, "torch threads (0: torch's default)", check=nonnegative)
    overwrite: bool = option(False, "replace the files an earlier run wrote in --out")


# ----------------------------------------------------------------------------- one model
def _status_mb(field: str) -> float:
    """A memory line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MB (Linux only)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:  # Linux: writing 5 resets the peak-RSS watermark (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _best_of(fn: Callable[[], object], n: int = 5) -> float:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def measure(name: str, cfg: BenchmarkConfig) -> dict:
    """One model's numbers; run in a fresh process (see :func:`benchmark`)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    model = MODELS[name]()
    params = detach(dict(model.named_parameters()))

    gc.collect()
    base = _status_mb("VmRSS")
    _reset_peak()
    pg = ParameterGraph.from_module(model)
    build_peak = _status_mb("VmHWM") - base
    times = []
    for _ in range(cfg.repeats):
        del pg
        gc.collect()
        t = time.perf_counter()
        pg = ParameterGraph.from_module(model)
        times.append(time.perf_counter() - t)

    fresh = map_tensors(torch.randn_like, params)
    row = dict(
        model=name, params=numel(params), nodes=pg.num_nodes, edges=pg.num_edges,
        graph_mb=pg.nbytes() / 2**20, build_s=min(times), build_median_s=statistics.median(times),
        build_peak_mb=build_peak,
        encode_s=_best_of(lambda: pg.encode(fresh)), param_pass_s=_best_of(lambda: flatten(fresh)),
    )
    if cfg.forward:
        gmn = GMN(1, 1, hidden=cfg.hidden, layers=cfg.layers).eval()
        tiny = nn.Linear(3, 2)  # warm-up: first-call costs are not per-model costs
        with torch.inference_mode():
            gmn.forward_data(ParameterGraph.from_module(tiny).encode(dict(tiny.named_parameters())))
        data = pg.encode(fresh)
        gc.collect()
        base = _status_mb("VmRSS")
        _reset_peak()
        with torch.inference_mode():
            t = time.perf_counter()
            gmn.forward_data(data)
            row["forward_s"] = time.perf_counter() - t
        row["forward_peak_mb"] = _status_mb("VmHWM") - base
    return row


# ----------------------------------------------------------------------------- reports
def plot_png(rows: list[dict]) -> bytes:
    """The three log-log panels (time, memory, graph size against parameters) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["params"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [
        ("time (s)", [("build_s", "build"), ("encode_s", "encode"), ("forward_s", "GMN forward")]),
        ("peak memory added (MB)", [("build_peak_mb", "build"), ("forward_peak_mb", "forward"),
                                    ("graph_mb", "graph tensors")]),
        ("graph size", [("nodes", "nodes"), ("edges", "edges")]),
    ]
    for ax, (ylabel, series) in zip(axes, panels):
        for key, label in series:
            pts = [(xi, r[key]) for xi, r in zip(x, rows) if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), "o-", label=label)
        ax.plot(x, [xi * (ax.get_ylim()[1] / max(x)) for xi in x], ":", color="grey", lw=0.8,
                label="linear")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.suptitle("graph-metanetworks core: cost against model size (CPU)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def markdown_table(rows: list[dict]) -> str:
    head = ("| model | params | nodes | edges | graph MB | build s | build peak MB | encode ms "
            "| param pass ms | GMN forward s | forward peak MB |")
    lines = [head, "|" + "---|" * 11]
    nan = float("nan")
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['nodes']:,} | {r['edges']:,} "
            f"| {r['graph_mb']:.1f} | {r['build_s']:.3f} | {r['build_peak_mb']:.0f} "
            f"| {1e3 * r['encode_s']:.2f} | {1e3 * r['param_pass_s']:.2f} "
            f"| {r.get('forward_s', nan):.2f} | {r.get('forward_peak_mb', nan):.0f} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the run
def benchmark(cfg: BenchmarkConfig) -> dict:
    """Measure every model of ``cfg.models``, each in a fresh process; write the reports."""
    out = persistence.prepare_output(cfg.out, overwrite=cfg.overwrite, writes=OUTPUTS)
    rows = []
    for name in cfg.models:
        # a spawned interpreter per model: its peak memory is this model's alone
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            row = pool.submit(measure, name, cfg).result()
        rows.append(row)
        print(f"{name:>14}: {row['params']:>10,} params  build {row['build_s']:.3f} s  "
              f"peak +{row['build_peak_mb']:.0f} MB (graph {row['graph_mb']:.0f} MB)  "
              f"forward {row.get('forward_s', float('nan')):.2f} s", flush=True)
    machine = {"torch": torch.__version__, "cpu_count": os.cpu_count(),
               "machine": platform.machine()}
    result = {"config": asdict(cfg) | machine, "rows": rows}
    persistence.write_json(out / "results.json", result)
    persistence.write_text(out / "results.md", markdown_table(rows) + "\n")
    persistence.write_bytes(out / "benchmark.png", plot_png(rows))
    print(markdown_table(rows))
    print(f"wrote {', '.join(str(Path(out, name)) for name in OUTPUTS)}")
    return result


def main(argv: list[str] | None = None) -> dict:
    return cli.run(BenchmarkConfig, benchmark, argv, prog="python -m benchmarks.graph_core",
                   doc=__doc__)


if __name__ == "__main__":
    main()
