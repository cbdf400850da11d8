"""What a learned-optimizer step costs, next to Adam and AdamW.

``python -m lopt.cost --out docs/results/lopt/cost`` trains, on synthetic inputs and labels
(batch ``--batch``), every model of :data:`MODELS` — an MLP 64-32-10, a ~100K-parameter CNN
with BatchNorm, a ~3.2M-parameter MobileNet-style CNN, ResNet-18 — with

* ``torch.optim.Adam`` and ``torch.optim.AdamW`` (``foreach=True``, default settings);
* a fresh :class:`~lopt.GMNOptimizer` for every net kind of :data:`lopt.nets.NET_KINDS`
  (``LearnedOptimizer.fresh(kind)`` defaults; ``--nets`` picks some): cost does not depend
  on trained weights;
* the shipped default, ``GMNOptimizer(model)`` (``--no-shipped`` leaves it out),

and measures, per model and optimizer:

* **step**: the median time of ``optimizer.step()`` alone and of a whole training
  **iteration** (``zero_grad`` + forward + backward + step), each also relative to Adam's;
* **peak extra memory** of a step per parameter: the peak during ``step()`` minus what was
  in use just before it (parameters, gradients, state), divided by the parameter count;
* **state**: bytes of the tensors in ``optimizer.state`` per parameter (counted exactly),
  and **held**: the memory the optimizer keeps between steps (its state plus, for a learned
  one, the parameter graph, cached structure encodings and the net), measured as the growth
  from just before the optimizer is built to just after its first step.

How it is measured. Each (model, optimizer) pair runs in a fresh Python process
(``--no-isolate``: all in this one, faster, but the memory numbers then inherit what earlier
measurements left in the allocator). ``--warmup`` untimed iterations come first (the first
one, a bare ``step()`` on the gradients of a first backward, creates the state; fewer when
they take ``--max-time`` seconds), then timed ones until ``--steps`` or ``--max-time``
seconds, at least ``--min-steps``; ``time.perf_counter``, with ``torch.cuda.synchronize()``
around every timed part on a GPU. One more step, the last of its process, measures the
peak. On a GPU: ``torch.cuda.reset_peak_memory_stats`` before it, ``max_memory_allocated``
after it, ``memory_allocated`` for the rest. On a CPU (Linux): the process's resident set
from ``/proc/self/status``: ``VmRSS`` just before the step and the high-water mark
``VmHWM`` after it, reset just before the step by writing ``5`` to ``/proc/self/clear_refs``.
For the resident set to follow the tensors, that step runs after glibc's ``mallopt`` has
fixed the mmap threshold at 64 KiB (every larger block is mapped when allocated and
returned when freed, instead of recycled from memory the heap kept) and ``malloc_trim`` has
returned what was freed; the timed iterations before run with the allocator's defaults.
"held" reads the anonymous resident memory (``RssAnon``, after ``malloc_trim``), so first
touches of library code do not count; on models of a few thousand parameters it is noise.
Where ``/proc`` or glibc are missing, CPU memory fields are ``null`` or less exact.

The per-edge GMN (net kind ``gmn``, also the shipped ``digits`` one) spends tens of seconds and
gigabytes per step on millions of parameters; on models above ``--max-edge-gmn-params`` it
is skipped and recorded with the reason. A measurement that fails (killed for memory, over
``--timeout``) is recorded with its error and the others go on.

Writes ``cost.json`` (config, machine, every number; rewritten after each measurement),
``cost.md`` (a table for the README, with the targets) and ``cost.png`` (step time relative
to Adam's, log scale).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common import cli
from common.errors import ConfigError
from common.persistence import prepare_output, write_figure, write_json, write_text
from graphs import ParameterGraph
from lopt.checkpoint import LearnedOptimizer, load_learned_optimizer
from lopt.nets import NET_KINDS
from lopt.optimizer import GMNOptimizer
from tasks.architectures import MLP, DigitsCNN, mobilenet_like, resnet18

__all__ = ["MEASURED", "MODELS", "TARGETS", "CostConfig", "CostModel", "main", "measure",
           "measure_isolated", "run", "target_checks"]


@dataclass(frozen=True)
class CostModel:
    """A model to measure: a label, its constructor and the shape of one synthetic input."""

    label: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int


MODELS: dict[str, CostModel] = {
    "mlp": CostModel("MLP 64-32-10", lambda: MLP(64, (32,), 10), (64,), 10),
    "cnn": CostModel("CNN 32-64-128 + BatchNorm, 1x8x8", lambda: DigitsCNN((32, 64, 128)),
                     (1, 8, 8), 10),
    "mobilenet": CostModel("MobileNet-style (width 1.2), 3x32x32", mobilenet_like,
                           (3, 32, 32), 10),
    "resnet18": CostModel("ResNet-18, 3x32x32", resnet18, (3, 32, 32), 1000),
}
"""Models by ``--models`` name (each built with the seed, inputs ``[batch, *input_shape]``)."""

PER_EDGE_KINDS = frozenset({"gmn"})
"""Net kinds whose work grows with every edge (``--max-edge-gmn-params`` guards them)."""

TARGETS: list[dict] = [
    {"model": "cnn", "key": "step_vs_adam", "limit": 5.0,
     "text": "step <= 5x Adam on the ~100K CNN"},
    {"model": "mobilenet", "key": "step_vs_adam", "limit": 10.0,
     "text": "step <= 10x Adam on the ~3M CNN"},
    {"model": "cnn", "key": "iteration_vs_adam", "limit": 2.0,
     "text": "iteration <= 2x Adam on the ~100K CNN"},
    {"model": "mobilenet", "key": "peak_extra_bytes_per_param", "limit": 200.0,
     "text": "peak extra memory of a step <= 200 B/param (on the ~3M CNN)"},
]
"""Issue 14's cost targets for a learned optimizer."""

MEASURED = ("step_ms", "iteration_ms", "step_vs_adam", "iteration_vs_adam",
            "peak_extra_bytes_per_param", "state_bytes_per_param", "held_bytes_per_param",
            "step_ms_min", "iteration_ms_min", "timed_steps", "warmup_steps", "setup_s")
"""Fields of every optimizer's record (null when it was skipped or failed)."""

OUTPUTS = ("cost.json", "cost.md", "cost.png")
_WORKER = "--_worker"  # internal: ``python -m lopt.cost --_worker SPEC`` runs one measurement
_RESULT = "LOPT_COST_RESULT "


def _device(value: str) -> str | None:
    """What is wrong with ``--device``, or None."""
    try:
        device = torch.device(value)
    except RuntimeError:
        return "must be cpu, cuda or cuda:N"
    if device.type not in ("cpu", "cuda"):
        return "must be cpu, cuda or cuda:N"
    if device.type == "cuda" and not torch.cuda.is_available():
        return "asks for CUDA, but no CUDA device is available"
    return None


@dataclass
class CostConfig:
    """Options of ``python -m lopt.cost`` (each field is a ``--flag``)."""

    models: list[str] = cli.option(list(MODELS), "models to measure", choices=list(MODELS))
    nets: list[str] = cli.option(list(NET_KINDS), "learned-optimizer net kinds, each fresh "
                                 "at LearnedOptimizer.fresh defaults", choices=sorted(NET_KINDS))
    shipped: bool = cli.option(True, "also the shipped checkpoint, GMNOptimizer(model)")
    batch: int = cli.option(128, "batch size of the synthetic inputs", check=cli.positive)
    warmup: int = cli.option(3, "untimed iterations first (fewer once they took --max-time)",
                             check=cli.positive)
    steps: int = cli.option(50, "timed iterations at most", check=cli.positive)
    min_steps: int = cli.option(3, "timed iterations at least", check=cli.positive)
    max_time: float = cli.option(20.0, "seconds of timed iterations after which timing stops",
                                 check=cli.positive)
    max_edge_gmn_params: int = cli.option(4_000_000, "skip the per-edge GMN (net kind gmn, the "
                                          "shipped one too) on models with more parameters",
                                          check=cli.positive)
    isolate: bool = cli.option(True, "measure each model and optimizer in a fresh process "
                               "(--no-isolate: in this one, faster, memory less exact)")
    timeout: float = cli.option(3600.0, "seconds per isolated measurement", check=cli.positive)
    threads: int = cli.option(1, "torch CPU threads", check=cli.positive)
    device: str = cli.option("cpu", "cpu, cuda or cuda:N", check=_device)
    seed: int = cli.option(0, "seed of models, inputs and nets", check=cli.nonnegative)
    out: str = cli.option("runs/lopt_cost", "output folder (refused when it holds files, "
                          "unless --overwrite)")
    overwrite: bool = cli.option(False, "replace what the benchmark writes in a non-empty --out")

    def check(self) -> None:
        if self.min_steps > self.steps:
            raise ConfigError(f"--min-steps ({self.min_steps}) must be at most --steps "
                              f"({self.steps})")


# ----------------------------------------------------------------------------- memory probes
def _proc_status(field: str) -> int | None:
    """A ``/proc/self/status`` field in bytes (None where there is no ``/proc``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _libc():
    """glibc, for ``mallopt`` and ``malloc_trim`` (None on other C libraries)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


class _CPUMemory:
    """Resident-set probes (see the module docstring)."""

    def __init__(self) -> None:
        self._libc = _libc()
        self._before: int | None = None

    def _release(self) -> None:
        gc.collect()
        if self._libc is not None:
            self._libc.malloc_trim(0)

    def held(self) -> int | None:
        self._release()
        return _proc_status("RssAnon")

    def start_peak(self, exact: bool) -> None:
        if exact and self._libc is not None:
            self._libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: fixed, no longer dynamic
            self._libc.mallopt(-1, 0)  # M_TRIM_THRESHOLD: give freed heap back at once
        self._release()
        self._before = _proc_status("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM to the current VmRSS
        except OSError:
            self._before = None

    def peak_extra(self) -> int | None:
        peak = _proc_status("VmHWM")
        return None if peak is None or self._before is None else peak - self._before


class _CUDAMemory:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._before = 0

    def held(self) -> int:
        gc.collect()
        torch.cuda.synchronize(self.device)
        return torch.cuda.memory_allocated(self.device)

    def start_peak(self, exact: bool) -> None:
        self._before = self.held()
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak_extra(self) -> int:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - self._before


# ----------------------------------------------------------------------------- one measurement
def _optimizers(cfg: CostConfig, shipped_kind: str | None) -> list[tuple[str, str, str]]:
    """``(name, label, net kind or "")`` of every optimizer to measure, Adam first."""
    rows = [("adam", "Adam", ""), ("adamw", "AdamW", "")]
    rows += [(kind, f"learned ({kind}, fresh)", kind) for kind in cfg.nets]
    if shipped_kind is not None:
        rows.append(("shipped", f"learned (shipped, {shipped_kind})", shipped_kind))
    return rows


def _make_optimizer(name: str, model: nn.Module, seed: int) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), foreach=True)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), foreach=True)
    if name == "shipped":
        return GMNOptimizer(model)
    return GMNOptimizer(model, checkpoint=LearnedOptimizer.fresh(name, seed=seed))


def measure(spec: dict) -> dict:
    """One model and optimizer in this process: timings and memory (module docstring).

    ``spec`` holds ``model``, ``optimizer`` (``adam``, ``adamw``, a net kind or ``shipped``),
    ``batch``, ``warmup``, ``steps``, ``min_steps``, ``max_time``, ``threads``, ``device``,
    ``seed`` and ``exact_memory`` (fix the allocator before the peak step: only in a process
    of its own, as it stays fixed).
    """
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    memory = _CUDAMemory(device) if cuda else _CPUMemory()
    entry = MODELS[spec["model"]]
    torch.manual_seed(spec["seed"])
    model = entry.build().to(device)
    x = torch.randn(spec["batch"], *entry.input_shape, device=device)
    y = torch.randint(entry.num_classes, (spec["batch"],), device=device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    F.cross_entropy(model(x), y).backward()  # gradients exist before the optimizer does
    held_before = memory.held()
    start = time.perf_counter()
    opt = _make_optimizer(spec["optimizer"], model, spec["seed"])
    opt.step()  # the first warm-up iteration: creates the state
    sync()
    setup_s = time.perf_counter() - start
    held_after = memory.held()
    state = sum(t.numel() * t.element_size() for st in opt.state.values()
                for t in st.values() if isinstance(t, torch.Tensor))

    def iteration() -> tuple[float, float, float]:
        sync()
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        sync()
        t1 = time.perf_counter()
        opt.step()
        sync()
        return t0, t1, time.perf_counter()

    warm, start = 1, time.perf_counter()
    while warm < spec["warmup"] and time.perf_counter() - start < spec["max_time"]:
        iteration()
        warm += 1
    steps, iters = [], []
    spent = 0.0
    while len(steps) < spec["steps"] and (len(steps) < spec["min_steps"]
                                           or spent < spec["max_time"]):
        t0, t1, t2 = iteration()
        steps.append(t2 - t1)
        iters.append(t2 - t0)
        spent += t2 - t0

    opt.zero_grad()  # the peak step: gradients of a fresh backward, activations freed
    F.cross_entropy(model(x), y).backward()
    memory.start_peak(spec["exact_memory"])
    opt.step()
    peak = memory.peak_extra()

    def per_param(value: int | None) -> float | None:
        return None if value is None else value / n_params

    return {
        "step_ms": 1e3 * statistics.median(steps),
        "iteration_ms": 1e3 * statistics.median(iters),
        "step_ms_min": 1e3 * min(steps),
        "iteration_ms_min": 1e3 * min(iters),
        "timed_steps": len(steps),
        "warmup_steps": warm,
        "setup_s": setup_s,
        "peak_extra_bytes_per_param": per_param(peak),
        "state_bytes_per_param": state / n_params,
        "held_bytes_per_param": per_param(None if held_before is None or held_after is None
                                          else held_after - held_before),
    }


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def measure_isolated(spec: dict, timeout: float) -> dict:
    """:func:`measure` in a fresh ``python -m lopt.cost`` process; ``{"error": ...}`` when it
    fails (killed for memory, timed out, raised)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]),
           "MKL_NUM_THREADS": str(spec["threads"])}
    root = Path(__file__).resolve().parents[1]  # where ``lopt`` is importable from
    try:
        proc = subprocess.run([sys.executable, "-m", "lopt.cost", _WORKER, json.dumps(spec)],
                              cwd=root, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        why = (f"killed by signal {-proc.returncode} (out of memory?)" if proc.returncode < 0
               else f"exit {proc.returncode}")
        return {"error": f"{why}: {_tail(proc.stderr)}" if proc.stderr.strip() else why}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT):
            return json.loads(line[len(_RESULT):])
    return {"error": f"no result from the worker: {_tail(proc.stdout + proc.stderr)}"}


def _worker(spec_json: str) -> None:
    print(_RESULT + json.dumps(measure(json.loads(spec_json))), flush=True)


# ----------------------------------------------------------------------------- the run
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine(cfg: CostConfig) -> dict:
    device = torch.device(cfg.device)
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": cfg.threads,
        "device": cfg.device,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else _cpu_model(),
    }


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 \
        else f"{v:,.0f}"


def _fmt_ratio(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x" if v < 10 else f"{v:.1f}x" if v < 100 \
        else f"{v:,.0f}x"


def _fmt_bytes(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}" if v >= 10 else f"{v:.1f}"


def target_checks(models: dict) -> list[dict]:
    """Every learned optimizer against :data:`TARGETS` (``met`` is None where unmeasured)."""
    names = []
    for row in models.values():
        names += [n for n in row["optimizers"] if n not in ("adam", "adamw") and n not in names]
    checks = []
    for target in TARGETS:
        for name in names:
            rec = models.get(target["model"], {}).get("optimizers", {}).get(name, {})
            value = rec.get(target["key"])
            checks.append({**target, "optimizer": name, "value": value,
                           "met": None if value is None else value <= target["limit"]})
    return checks


def _table(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Optimizer cost, `python -m lopt.cost` on {m['device_name']} ({m['device']}, "
        f"{m['threads']} thread(s)), torch {m['torch']}, batch {result['config']['batch']}; "
        "median step and iteration (zero_grad + forward + backward + step) times.",
        "",
        "Targets: " + "; ".join(t["text"] for t in TARGETS) + ".",
        "",
        "| model | params | optimizer | step (ms) | step / Adam | iteration (ms) "
        "| iteration / Adam | peak extra (B/param) | state (B/param) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["models"].values():
        for rec in row["optimizers"].values():
            head = f"| {row['label']} | {row['params']:,} | {rec['label']} "
            problem = rec.get("skipped") or rec.get("error")
            if problem:
                word = "skipped" if rec.get("skipped") else "failed"
                lines.append(head + f"| {word}: {problem} | | | | | |")
                continue
            lines.append(
                head + f"| {_fmt_ms(rec['step_ms'])} | {_fmt_ratio(rec.get('step_vs_adam'))} "
                f"| {_fmt_ms(rec['iteration_ms'])} | {_fmt_ratio(rec.get('iteration_vs_adam'))} "
                f"| {_fmt_bytes(rec['peak_extra_bytes_per_param'])} "
                f"| {_fmt_bytes(rec['state_bytes_per_param'])} |"
            )
    checks = [c for c in result["targets"] if c["met"] is not None]
    if checks:
        lines += ["", "| target | optimizer | measured | met |", "|---|---|---|---|"]
        labels = {n: r["label"] for row in result["models"].values()
                  for n, r in row["optimizers"].items()}
        for c in checks:
            shown = (_fmt_bytes(c["value"]) + " B/param" if c["key"].endswith("per_param")
                     else _fmt_ratio(c["value"]))
            lines.append(f"| {c['text']} | {labels[c['optimizer']]} | {shown} "
                         f"| {'yes' if c['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def _plot(result: dict, path: Path) -> None:
    """Step time relative to Adam's, per model (groups) and optimizer (bars), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(result["models"].values())
    names: list[str] = []
    labels: dict[str, str] = {}
    for row in models:
        for name, rec in row["optimizers"].items():
            if name != "adam" and name not in names:
                names.append(name)
                labels[name] = rec["label"]
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(models) + 2), 4))
    for i, name in enumerate(names):
        xs, ys = [], []
        for j, row in enumerate(models):
            value = row["optimizers"].get(name, {}).get("step_vs_adam")
            if value is not None:
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                ys.append(value)
        bars = ax.bar(xs, ys, width, label=labels[name])
        ax.bar_label(bars, [_fmt_ratio(v) for v in ys], fontsize=6)
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    for target in TARGETS:  # the step-time targets, over their model's group
        if target["key"] == "step_vs_adam" and target["model"] in result["models"]:
            j = list(result["models"]).index(target["model"])
            ax.hlines(target["limit"], j - 0.45, j + 0.45, colors="r", lw=1, ls="--")
            ax.annotate(f"target {target['limit']:g}x", (j - 0.45, target["limit"]),
                        fontsize=6, color="r", va="bottom")
    ax.set_yscale("log")
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([f"{r['label']}\n{r['params']:,} params" for r in models], fontsize=7)
    ax.set_ylabel("optimizer step time / Adam's")
    ax.set_title(f"step cost on {result['machine']['device_name']} "
                 f"({result['machine']['threads']} thread(s)); missing bar = skipped",
                 fontsize=8)
    ax.legend(fontsize=7)
    write_figure(fig, path)


def run(cfg: CostConfig) -> dict:
    """Measure every model x optimizer; ``cost.json``, ``cost.md`` and ``cost.png``."""
    shipped_kind = load_learned_optimizer().net_kind if cfg.shipped else None
    out = prepare_output(cfg.out, overwrite=cfg.overwrite, writes=OUTPUTS)
    torch.set_num_threads(cfg.threads)
    result: dict = {"config": asdict(cfg), "machine": _machine(cfg), "models": {},
                    "targets": []}
    for name in cfg.models:  # every model must build a parameter graph, before any timing
        torch.manual_seed(cfg.seed)
        entry = MODELS[name]
        model = entry.build()
        graph = ParameterGraph.from_module(model)
        result["models"][name] = {
            "label": entry.label, "batch": cfg.batch, "input_shape": list(entry.input_shape),
            "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "graph_nodes": graph.num_nodes, "graph_edges": graph.num_edges, "optimizers": {},
        }
        del model, graph
    for name, row in result["models"].items():
        for opt, label, kind in _optimizers(cfg, shipped_kind):
            rec: dict = {"label": label, "net_kind": kind or None, "skipped": None,
                         "error": None, **dict.fromkeys(MEASURED)}
            if kind in PER_EDGE_KINDS and row["params"] > cfg.max_edge_gmn_params:
                rec["skipped"] = (f"per-edge GMN, {row['params']:,} parameters > "
                                  f"--max-edge-gmn-params {cfg.max_edge_gmn_params:,}")
            else:
                spec = {"model": name, "optimizer": opt, "batch": cfg.batch,
                        "warmup": cfg.warmup, "steps": cfg.steps, "min_steps": cfg.min_steps,
                        "max_time": cfg.max_time, "threads": cfg.threads,
                        "device": cfg.device, "seed": cfg.seed, "exact_memory": cfg.isolate}
                rec.update(measure_isolated(spec, cfg.timeout) if cfg.isolate
                           else measure(spec))
            adam = row["optimizers"].get("adam", rec if opt == "adam" else {})
            for key in ("step", "iteration"):
                if rec.get(f"{key}_ms") is not None and adam.get(f"{key}_ms"):
                    rec[f"{key}_vs_adam"] = rec[f"{key}_ms"] / adam[f"{key}_ms"]
            row["optimizers"][opt] = rec
            print(f"{name} {opt}: " + (rec["skipped"] or rec["error"] or
                  f"step {_fmt_ms(rec['step_ms'])} ms ({_fmt_ratio(rec.get('step_vs_adam'))} "
                  f"Adam), iteration {_fmt_ms(rec['iteration_ms'])} ms, peak extra "
                  f"{_fmt_bytes(rec['peak_extra_bytes_per_param'])} B/param"), flush=True)
            write_json(out / "cost.json", result)
    result["targets"] = target_checks(result["models"])
    write_json(out / "cost.json", result)
    table = _table(result)
    write_text(out / "cost.md", table)
    _plot(result, out / "cost.png")
    print(table)
    return result


def main(argv: list[str] | None = None) -> dict | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [_WORKER]:  # one isolated measurement (measure_isolated's child)
        _worker(argv[1])
        return None
    return cli.run(CostConfig, run, argv, prog="python -m lopt.cost", doc=__doc__)


if __name__ == "__main__":
    main()
