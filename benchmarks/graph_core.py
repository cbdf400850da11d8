"""Benchmark of the graph core: build, encode and GMN forward against model size.

``python -m benchmarks.graph_core --out runs/graphs_benchmark`` measures, each in a fresh
process so memory readings are its own,

* the project's architectures (``tasks.architectures``, ~1K to ~11.7M parameters: a
  ResNet-18-shaped CNN and a small ViT among them), and
* real architectures at their real default sizes, built from their library's configs (no
  pretrained weights, no downloads): torchvision resnet18, mobilenet_v2, vit_b_16, swin_t;
  timm convnext_atto, vit_tiny_patch16_224; transformers BERT-tiny (hidden 128, 2 layers,
  2 heads) and GPT-2 small (12 layers, 768 wide, 124M parameters). The CNNs are traced
  symbolically; the others are recorded from one run of ``forward`` on example inputs (an
  image ``[1, 3, 224, 224]``, token ids ``[1, 16]``). A model whose library is not installed
  is skipped with one line; by default only those whose library is installed are listed, and
  the benchmark imports a library only in the process that measures one of its models.

For each model:

* parameters, nodes, edges; how the graph was built (symbolically or recorded);
* build time of ``ParameterGraph.from_module`` (best and median of ``--repeats``), the peak
  memory it adds, against the size of the graph's own tensors (both also per edge);
* encode time of fresh parameter values into the existing graph, against one plain pass
  over the parameters (``torch.cat`` of the flattened tensors);
* forward time and added peak memory of a GMN (``--hidden``, ``--layers``) in inference mode,
  for graphs of at most ``--forward-max-edges`` edges (its memory grows by ~600 B per edge
  at width 16: a larger graph would not fit this machine).

It writes ``results.json`` (the rows, the models skipped and the config), ``results.md`` (the
command, the machine and the table) and ``benchmark.png`` (log-log against parameter count)
into ``--out``.
"""

from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import io
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks import model_libraries
from common import cli, persistence
from common.cli import nonnegative, option, positive
from graphs import GMN, GraphConstructionError, ParameterGraph
from graphs.params import detach, flatten, map_tensors, numel
from tasks import architectures as arch

LIBRARIES = ("torchvision", "timm", "transformers")


class Skipped(Exception):
    """A model that cannot be measured here (its library is missing); the reason is shown."""


def _library(name: str):
    """Import a model library (in the measuring process only), or skip the model."""
    try:
        module = model_libraries.load(name)
    except Exception as e:  # a broken install: say so, measure the other models
        raise Skipped(f"{name} does not import ({type(e).__name__}: {e})") from e
    if module is None:
        raise Skipped(f"{name} is not installed")
    return module


def _image() -> torch.Tensor:
    return torch.randn(1, 3, 224, 224)  # the vision models' default resolution


def _tokens() -> torch.Tensor:
    return torch.randint(0, 1000, (1, 16))


@dataclass(frozen=True)
class Model:
    """A model to measure: ``make()`` builds it; with ``inputs`` (a function returning the
    example inputs) its graph is recorded from one run of ``forward``, else traced
    symbolically. ``library``: the model library it comes from (``None``: this project)."""

    make: Callable[[], nn.Module]
    library: str | None = None
    inputs: Callable[[], Any] | None = None


def _torchvision(name: str) -> Callable[[], nn.Module]:
    return lambda: getattr(_library("torchvision").models, name)()


def _timm(name: str) -> Callable[[], nn.Module]:
    return lambda: _library("timm").create_model(name, pretrained=False)


def _bert_tiny() -> nn.Module:  # the shape of google/bert_uncased_L-2_H-128_A-2 ("bert-tiny")
    hf = _library("transformers")
    return hf.BertModel(hf.BertConfig(hidden_size=128, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=512))


def _gpt2() -> nn.Module:  # GPT-2 small: the library's default config (124M parameters)
    hf = _library("transformers")
    return hf.GPT2Model(hf.GPT2Config())


MODELS: dict[str, Model] = {
    "mlp_1k": Model(lambda: arch.MLP(64, (16,), 10)),
    "digits_cnn": Model(lambda: arch.DigitsCNN()),
    "digits_vit": Model(lambda: arch.digits_vit()),
    "digits_resnet": Model(lambda: arch.digits_resnet(widths=(16, 32))),
    "mlp_670k": Model(lambda: arch.MLP(784, (512, 512), 10)),
    "small_vit": Model(lambda: arch.small_vit()),
    "resnet_2.8m": Model(lambda: arch.ResNet((2, 2, 2, 2), (32, 64, 128, 256))),
    "resnet18": Model(lambda: arch.resnet18()),
    # real architectures at their default sizes
    "torchvision.resnet18": Model(_torchvision("resnet18"), "torchvision"),
    "torchvision.mobilenet_v2": Model(_torchvision("mobilenet_v2"), "torchvision"),
    "torchvision.vit_b_16": Model(_torchvision("vit_b_16"), "torchvision", _image),
    "torchvision.swin_t": Model(_torchvision("swin_t"), "torchvision", _image),
    "timm.convnext_atto": Model(_timm("convnext_atto"), "timm"),
    "timm.vit_tiny_patch16_224": Model(_timm("vit_tiny_patch16_224"), "timm", _image),
    "transformers.bert_tiny": Model(_bert_tiny, "transformers", _tokens),
    "transformers.gpt2": Model(_gpt2, "transformers", _tokens),
}
OUTPUTS = ["results.json", "results.md", "benchmark.png"]


def available_models() -> list[str]:
    """Every model whose library is installed (looked up, not imported)."""
    return [name for name, m in MODELS.items()
            if m.library is None or importlib.util.find_spec(m.library) is not None]


@dataclass
class BenchmarkConfig:
    out: str = option("runs/graphs_benchmark", "output folder")
    models: list[str] = option(available_models(), "models to measure (the real architectures "
                               "listed: those whose library is installed)", choices=list(MODELS))
    repeats: int = option(5, "builds timed per model", check=positive)
    hidden: int = option(16, "GMN width for the forward pass", check=positive)
    layers: int = option(2, "GMN blocks for the forward pass", check=positive)
    forward: bool = option(True, "time the GMN forward pass (--no-forward skips it)")
    forward_max_edges: int = option(12_000_000, "skip the GMN forward for graphs with more "
                                    "edges (0: no limit)", check=nonnegative)
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


def _build_mode(inputs: Any) -> str:
    if inputs is None:
        return "symbolic"
    return f"recorded {list(inputs.shape)}" if isinstance(inputs, torch.Tensor) else "recorded"


def measure(name: str, cfg: BenchmarkConfig) -> dict:
    """One model's numbers, or ``{"model", "skipped"}`` (the reason) when it cannot be built
    here; run in a fresh process (see :func:`benchmark`)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    entry = MODELS[name]
    try:
        with warnings.catch_warnings():  # the libraries' notices about configs
            warnings.simplefilter("ignore")
            model = entry.make()
    except Skipped as e:
        return {"model": name, "skipped": str(e)}
    if entry.library is not None:
        model.eval()  # no dropout in the recorded run
    inputs = entry.inputs() if entry.inputs is not None else None
    params = detach(dict(model.named_parameters()))

    def build() -> ParameterGraph:
        return ParameterGraph.from_module(model, example_inputs=inputs)

    gc.collect()
    base = _status_mb("VmRSS")
    _reset_peak()
    try:
        pg = build()
    except GraphConstructionError as e:
        if entry.library is None:  # the project's own models must build
            raise
        return {"model": name, "skipped": f"refused by the graph builder: "
                                          f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    build_peak = _status_mb("VmHWM") - base
    times = []
    for _ in range(cfg.repeats):
        del pg
        gc.collect()
        t = time.perf_counter()
        pg = build()
        times.append(time.perf_counter() - t)

    fresh = map_tensors(torch.randn_like, params)
    graph_bytes = pg.nbytes()
    row = dict(
        model=name, library=entry.library or "project", build=_build_mode(inputs),
        params=numel(params), nodes=pg.num_nodes, edges=pg.num_edges,
        graph_mb=graph_bytes / 2**20, graph_bytes_per_edge=graph_bytes / pg.num_edges,
        build_s=min(times), build_median_s=statistics.median(times),
        build_peak_mb=build_peak, build_peak_bytes_per_edge=build_peak * 2**20 / pg.num_edges,
        encode_s=_best_of(lambda: pg.encode(fresh)), param_pass_s=_best_of(lambda: flatten(fresh)),
    )
    if cfg.forward and cfg.forward_max_edges and pg.num_edges > cfg.forward_max_edges:
        row["forward_skipped"] = f"{pg.num_edges:,} edges > --forward-max-edges"
    elif cfg.forward:
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
    """Log-log panels against parameters (time, memory, graph size, bytes per edge) as PNG
    bytes; squares mark the real architectures, circles the project's models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = sorted(rows, key=lambda r: r["params"])
    x = [r["params"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    panels = [
        ("time (s)", [("build_s", "build"), ("encode_s", "encode"), ("forward_s", "GMN forward")]),
        ("peak memory added (MB)", [("build_peak_mb", "build"), ("forward_peak_mb", "forward"),
                                    ("graph_mb", "graph tensors")]),
        ("graph size", [("nodes", "nodes"), ("edges", "edges")]),
        ("bytes per edge", [("graph_bytes_per_edge", "graph tensors"),
                            ("build_peak_bytes_per_edge", "build peak")]),
    ]
    for i, (ax, (ylabel, series)) in enumerate(zip(axes, panels)):
        for key, label in series:
            pts = [(r["params"], r[key], r.get("library", "project") != "project")
                   for r in rows if r.get(key) is not None]
            if not pts:
                continue
            (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", label=label)
            for real, marker in ((False, "o"), (True, "s")):
                sel = [p for p in pts if p[2] == real]
                if sel:
                    ax.plot([p[0] for p in sel], [p[1] for p in sel], marker, ls="",
                            color=line.get_color(), mfc="none" if real else line.get_color())
        if i < 3:
            ax.plot(x, [xi * (ax.get_ylim()[1] / max(x)) for xi in x], ":", color="grey",
                    lw=0.8, label="linear")
        ax.set_yscale("log")  # bytes per edge: a small model's fixed cost spread over few
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel(ylabel)
        handles, _ = ax.get_legend_handles_labels()
        if i == 0:
            handles += [Line2D([], [], marker="o", ls="", color="k", label="project model"),
                        Line2D([], [], marker="s", ls="", color="k", mfc="none",
                               label="real architecture")]
        ax.legend(handles=handles, fontsize=8)
    fig.suptitle("graph-metanetworks core: cost against model size (CPU)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def markdown_table(rows: list[dict]) -> str:
    head = ("| model | build | params | nodes | edges | build s (best / median) | build peak MB "
            "| graph MB | graph B/edge | build peak B/edge | encode ms | param pass ms "
            "| GMN forward s | forward peak MB |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        if "forward_s" in r:
            forward = f"{r['forward_s']:.2f} | {r['forward_peak_mb']:.0f}"
        else:
            forward = "skipped | skipped" if "forward_skipped" in r else "- | -"
        lines.append(
            f"| {r['model']} | {r.get('build', 'symbolic')} | {r['params']:,} | {r['nodes']:,} "
            f"| {r['edges']:,} | {r['build_s']:.3f} / {r['build_median_s']:.3f} "
            f"| {r['build_peak_mb']:.0f} | {r['graph_mb']:.1f} "
            f"| {r['graph_bytes_per_edge']:.1f} | {r['build_peak_bytes_per_edge']:.1f} "
            f"| {1e3 * r['encode_s']:.2f} | {1e3 * r['param_pass_s']:.2f} | {forward} |"
        )
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    """torch's and the installed model libraries' versions (read, not imported)."""
    out = {"torch": torch.__version__}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _command(cfg: BenchmarkConfig) -> str:
    """A command line equivalent to ``cfg`` (when the benchmark is not run from one)."""
    args = []
    for key, value in asdict(cfg).items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            args += [flag, *map(str, value)]
        else:
            args += [flag, str(value)]
    return shlex.join(["python", "-m", "benchmarks.graph_core", *args])


def report(result: dict) -> str:
    """``results.md``: the command, the machine, how to read the table, the table."""
    cfg, rows, skipped = result["config"], result["rows"], result["skipped"]
    libraries = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    threads = cfg["threads"] or "torch's default"
    forward = (f"hidden {cfg['hidden']}, layers {cfg['layers']}, inference mode"
               + (f", skipped for graphs above {cfg['forward_max_edges']:,} edges"
                  if cfg["forward_max_edges"] else "")
               if cfg["forward"] else "not measured (--no-forward)")
    text = [
        "# Graph core benchmark", "",
        f"Command: `{result['command']}`", "",
        f"Machine: {cfg['cpu_count']} CPUs ({cfg['machine']}), torch threads: {threads}; "
        f"{libraries}.", "",
        f"Each model in a fresh process. build: `symbolic` (traced with torch.fx) or "
        f"`recorded [shape]` (one run of `forward` on example inputs of that shape); "
        f"build time: best / median of {cfg['repeats']}; peak MB: what the step adds to the "
        f"process's resident set; B/edge: bytes per graph edge; encode: new values into the "
        f"existing graph, beside one plain concatenation of the parameters (param pass); "
        f"GMN forward: {forward}.", "",
    ]
    if skipped:
        text += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + ".", ""]
    return "\n".join(text) + "\n" + markdown_table(rows) + "\n"


# ----------------------------------------------------------------------------- the run
def benchmark(cfg: BenchmarkConfig, command: str | None = None) -> dict:
    """Measure every model of ``cfg.models``, each in a fresh process; write the reports."""
    out = persistence.prepare_output(cfg.out, overwrite=cfg.overwrite, writes=OUTPUTS)
    rows, skipped = [], {}
    for name in cfg.models:
        library = MODELS[name].library
        if library is not None and importlib.util.find_spec(library) is None:
            row = {"model": name, "skipped": f"{library} is not installed"}
        else:
            # a spawned interpreter per model: its peak memory is this model's alone
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                row = pool.submit(measure, name, cfg).result()
        if "skipped" in row:
            skipped[name] = row["skipped"]
            print(f"{name:>26}: skipped: {row['skipped']}", flush=True)
            continue
        rows.append(row)
        print(f"{name:>26}: {row['params']:>11,} params  {row['edges']:>11,} edges  "
              f"build {row['build_s']:.3f} s ({row['build']})  "
              f"peak +{row['build_peak_mb']:.0f} MB (graph {row['graph_mb']:.0f} MB, "
              f"{row['graph_bytes_per_edge']:.1f} B/edge)  "
              + (f"forward {row['forward_s']:.2f} s" if "forward_s" in row else
                 "forward skipped" if "forward_skipped" in row else ""), flush=True)
    machine = {"torch": torch.__version__, "cpu_count": os.cpu_count(),
               "machine": platform.machine()}
    result = {"config": asdict(cfg) | machine, "command": command or _command(cfg),
              "versions": _versions(), "rows": rows, "skipped": skipped}
    persistence.write_json(out / "results.json", result)
    persistence.write_text(out / "results.md", report(result))
    persistence.write_bytes(out / "benchmark.png", plot_png(rows))
    print(markdown_table(rows))
    print(f"wrote {', '.join(str(Path(out, name)) for name in OUTPUTS)}")
    return result


def main(argv: list[str] | None = None) -> dict:
    args = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "-m", "benchmarks.graph_core", *args])
    return cli.run(BenchmarkConfig, lambda cfg: benchmark(cfg, command), args,
                   prog="python -m benchmarks.graph_core", doc=__doc__)


if __name__ == "__main__":
    main()
