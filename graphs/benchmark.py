"""Benchmark of the graph core: build, encode and GMN forward against model size.

``python -m graphs.benchmark --out runs/graphs_benchmark`` measures, for models from ~1K to
~11.7M parameters (a ResNet-18-shaped CNN and a small ViT among them), each in a fresh
subprocess so memory readings are its own:

* build time of ``ParameterGraph.from_module`` (best and median of ``--repeats``), the peak
  memory it adds, against the size of the graph's own tensors;
* encode time of fresh parameter values into the existing graph, against one plain pass
  over the parameters (``torch.cat`` of the flattened tensors);
* forward time and added peak memory of a GMN (``--hidden``, ``--layers``) in inference mode.

It writes ``results.json`` and ``benchmark.png`` (log-log against parameter count).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODELS = {
    "mlp_1k": "tasks.architectures:MLP(64, (16,), 10)",
    "digits_cnn": "tasks.architectures:DigitsCNN()",
    "digits_vit": "tasks.architectures:digits_vit()",
    "digits_resnet": "tasks.architectures:digits_resnet(widths=(16, 32))",
    "mlp_670k": "tasks.architectures:MLP(784, (512, 512), 10)",
    "small_vit": "tasks.architectures:small_vit()",
    "resnet_2.8m": "tasks.architectures:ResNet((2, 2, 2, 2), (32, 64, 128, 256))",
    "resnet18": "tasks.architectures:resnet18()",
}


def _rss_peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_now_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:  # Linux: writing 5 resets the peak-RSS watermark (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def measure(name: str, repeats: int, hidden: int, layers: int, forward: bool) -> dict:
    """Run inside a fresh process: one model's numbers."""
    import gc

    import torch

    from graphs import GMN, ParameterGraph

    torch.manual_seed(0)
    module, expr = MODELS[name].split(":")
    model = eval(expr, vars(__import__(module, fromlist=["_"])))  # noqa: S307 - fixed table
    params = {k: v.detach() for k, v in model.named_parameters()}
    num_params = sum(p.numel() for p in params.values())

    gc.collect()
    base = _rss_now_mb()
    _reset_peak()
    pg = ParameterGraph.from_module(model)
    build_peak = _rss_peak_mb() - base
    times = []
    for _ in range(repeats):
        del pg
        gc.collect()
        t = time.perf_counter()
        pg = ParameterGraph.from_module(model)
        times.append(time.perf_counter() - t)

    def best_of(fn, n=5):
        out = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return min(out)

    fresh = {k: torch.randn_like(v) for k, v in params.items()}
    encode_s = best_of(lambda: pg.encode(fresh))
    one_pass_s = best_of(lambda: torch.cat([v.reshape(-1) for v in fresh.values()]))
    row = dict(
        model=name, params=num_params, nodes=pg.num_nodes, edges=pg.num_edges,
        graph_mb=pg.nbytes() / 2**20, build_s=min(times), build_median_s=statistics.median(times),
        build_peak_mb=build_peak,
        encode_s=encode_s, param_pass_s=one_pass_s,
    )  # fmt: skip
    if forward:
        gmn = GMN(1, 1, hidden=hidden, layers=layers).eval()
        tiny = torch.nn.Linear(3, 2)  # warm-up: first-call costs are not per-model costs
        with torch.inference_mode():
            gmn.forward_data(ParameterGraph.from_module(tiny).encode(dict(tiny.named_parameters())))
        data = pg.encode(fresh)
        gc.collect()
        base = _rss_now_mb()
        _reset_peak()
        with torch.inference_mode():
            t = time.perf_counter()
            gmn.forward_data(data)
            row["forward_s"] = time.perf_counter() - t
        row["forward_peak_mb"] = _rss_peak_mb() - base
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["params"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [
        ("time (s)", [("build_s", "build"), ("encode_s", "encode"), ("forward_s", "GMN forward")]),
        ("peak memory added (MB)", [("build_peak_mb", "build"), ("forward_peak_mb", "forward"),
                                    ("graph_mb", "graph tensors")]),  # fmt: skip
        ("graph size", [("nodes", "nodes"), ("edges", "edges")]),
    ]
    for ax, (ylabel, series) in zip(axes, panels):
        for key, label in series:
            pts = [(xi, r[key]) for xi, r in zip(x, rows) if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), "o-", label=label)
        ax.plot(x, [xi * (ax.get_ylim()[1] / max(x)) for xi in x], ":", color="grey", lw=0.8,
                label="linear")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.suptitle("graph-metanetworks core: cost against model size (CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_table(rows: list[dict]) -> str:
    head = ("| model | params | nodes | edges | graph MB | build s | build peak MB | encode ms "
            "| param pass ms | GMN forward s | forward peak MB |")  # fmt: skip
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/graphs_benchmark", help="output folder")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS),
                        help="models to measure (default: all)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="builds timed per model")
    parser.add_argument("--hidden", type=int, default=16, help="GMN width for the forward pass")
    parser.add_argument("--layers", type=int, default=2, help="GMN blocks for the forward pass")
    parser.add_argument("--no-forward", action="store_true", help="skip the GMN forward pass")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # inside the per-model subprocess
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        row = measure(args.worker, args.repeats, args.hidden, args.layers, not args.no_forward)
        print("RESULT " + json.dumps(row))
        return row

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        cmd = [sys.executable, "-m", "graphs.benchmark", "--worker", name,
               "--repeats", str(args.repeats), "--hidden", str(args.hidden),
               "--layers", str(args.layers), "--threads", str(args.threads)]  # fmt: skip
        if args.no_forward:
            cmd.append("--no-forward")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
        row = json.loads(line[len("RESULT "):])
        rows.append(row)
        print(f"{name:>14}: {row['params']:>10,} params  build {row['build_s']:.3f} s  "
              f"peak +{row['build_peak_mb']:.0f} MB (graph {row['graph_mb']:.0f} MB)  "
              f"forward {row.get('forward_s', float('nan')):.2f} s", flush=True)  # fmt: skip
    import torch

    result = dict(
        config=vars(args) | {"torch": torch.__version__, "cpu_count": os.cpu_count(),
                             "machine": platform.machine()},  # fmt: skip
        rows=rows,
    )
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text(markdown_table(rows) + "\n")
    plot(rows, out / "benchmark.png")
    print(markdown_table(rows))
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'benchmark.png'}")
    return result


if __name__ == "__main__":
    main()
