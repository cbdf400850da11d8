"""Train accuracy predictors on model zoos and write the paper-style results table.

For every zoo (``cnn``: varying CNNs, ``diverse``: mixed architectures), split, method and
seed, a predictor is trained to regress test accuracy from weights; R2 and Kendall's tau on
the split's test networks are reported as mean and std over seeds.

Splits (indices into the zoo):

* ``50%``: a random half of the zoo (drawn by the seed) trains, the other half tests.
* ``5%``: 5 % of the zoo (taken from that training half) trains; the same held-out half tests.
* ``OOD``: networks trained with a learning rate below the zoo's median train; networks at
  or above it test (independent of the seed; the seed changes the predictor's init and
  minibatches). ``--ood-hparam`` picks another hyper-parameter.

Writes under ``--out``: ``results.json`` (every run and the aggregates), ``results.md`` (the
table, with the paper's numbers beside it), ``scatter.png`` (predicted vs true accuracy on
the 50 % split, seed 0) and ``config.json``. With ``--save-weights DIR`` the GMN of the 50 %
split, seed 0, is also stored per zoo as ``DIR/<zoo>.safetensors`` + ``DIR/<zoo>.json``
(what :func:`predict.load_predictor` loads), both files written as one checkpoint. Every file
is written atomically; a folder that already holds files is refused unless ``--overwrite``
(which replaces only the files named here and leaves every other file alone).

Run ``python -m predict.train --help`` for the command line.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from scipy.stats import kendalltau
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from tqdm import tqdm

from common import cli
from common.cli import ConfigError, nonnegative, option, positive
from common.persistence import (
    json_bytes,
    prepare_output,
    tensor_bytes,
    write_bytes,
    write_checkpoint,
    write_json,
    write_text,
)
from graphs import params as P
from predict.models import GMN_READOUTS, METHODS, build_predictor, network_features
from predict.zoo import DEFAULT_SIZES, HPARAMS, Zoo, ZooConfig, build_zoo

__all__ = ["SPLITS", "TrainCommand", "TrainConfig", "ZooData", "kendall_tau", "main", "r2_score",
           "run"]

SPLITS = ("50%", "5%", "OOD")
ZOO_TITLES = {"cnn": "Varying CNNs", "diverse": "Diverse architectures"}
PAPER = {  # Lim et al. (ICLR 2024), R2 / tau; None where the paper gives no number
    ("50%", "DeepSets"): {"cnn": (0.778, 0.697), "diverse": (0.562, 0.559)},
    ("50%", "DMC"): {"cnn": (0.948, 0.876), "diverse": (0.957, 0.883)},
    ("50%", "GMN"): {"cnn": (0.978, 0.915), "diverse": (0.975, 0.908)},
    ("5%", "GMN"): {"cnn": (0.876, 0.797), "diverse": (0.918, 0.828)},
    ("OOD", "GMN"): {"cnn": (0.891, 0.870)},
    ("OOD", "DMC"): {"cnn": (0.387, 0.760)},
    ("OOD", "DeepSets"): {"cnn": (0.741, 0.683)},
}


def _device_problem(name: str) -> str | None:
    """Why ``name`` is not a usable torch device here (None: it is)."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return "is not a torch device (cpu, cuda, cuda:1, mps, ...)"
    if device.type == "cuda" and not torch.cuda.is_available():
        return "names a CUDA device but none is available"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return "names an MPS device but none is available"
    return None


@dataclass
class TrainConfig:
    """One table run; each field (but ``extra``) is a ``--flag`` of ``python -m predict.train``.

    Attributes:
        zoos: zoo kinds (columns of the table).
        zoo_size / zoo_min_steps / zoo_max_steps / zoo_seed: passed to
            :class:`predict.zoo.ZooConfig`
            (size 0: the default size of each kind).
        methods / splits / seeds: rows of the table and repetitions.
        steps / batch_size / lr / weight_decay: predictor training (AdamW, cosine decay).
        hidden / layers: predictor width; GMN message-passing blocks.
        readout: the GMN's readout, ``"groups"`` or ``"mean"`` (see ``GMNPredictor``).
        gmn_lr: learning rate of the GMN (0 or None: ``lr``, as the baselines).
        ood_hparam: hyper-parameter whose median separates the OOD split.
    """

    zoos: tuple[str, ...] = option(("cnn", "diverse"), "zoos (table columns): cnn = varying "
                                   "CNNs, diverse = mixed architectures",
                                   choices=tuple(DEFAULT_SIZES))
    zoo_size: int = option(0, "networks per zoo (0: the zoo's default; part of the zoo's cache "
                           "key)", check=nonnegative)
    zoo_min_steps: int = option(20, "shortest training of a zoo network (cache key)",
                                check=positive)
    zoo_max_steps: int = option(500, "longest training of a zoo network (cache key)",
                                check=positive)
    zoo_seed: int = option(0, "zoo seed (cache key)", check=nonnegative)
    methods: tuple[str, ...] = option(METHODS, "predictors (table rows within a split)",
                                      choices=METHODS)
    splits: tuple[str, ...] = option(SPLITS, "50%%: half trains; 5%%: 5%% trains (same test "
                                     "half); OOD: low lr trains", choices=SPLITS)
    seeds: tuple[int, ...] = option((0, 1, 2), "seeds (split draw, predictor init, minibatches); "
                                    "mean and std reported", check=nonnegative)
    steps: int = option(1000, "training steps per predictor", check=positive)
    batch_size: int = option(16, "networks per step", check=positive)
    lr: float = option(3e-3, "AdamW learning rate (cosine decay)", check=positive)
    weight_decay: float = option(1e-4, "AdamW weight decay", check=nonnegative)
    hidden: int = option(16, "predictor / GMN width", check=positive)
    layers: int = option(2, "GMN message-passing blocks", check=positive)
    readout: str = option("groups", "GMN readout: groups = pool edges per (edge type, layer), "
                          "mean = one mean", choices=GMN_READOUTS)
    gmn_lr: float = option(6e-3, "learning rate of the GMN (0: --lr, like the baselines)",
                           check=nonnegative)
    ood_hparam: str = option("lr", "OOD split: train below this hyper-parameter's median, test "
                             "above", choices=tuple(h for h in HPARAMS if h != "seed"))
    device: str = option("cpu", "torch device (cpu, cuda, ...)", check=_device_problem)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("zoos", "methods", "splits", "seeds"):  # a command line gives lists
            setattr(self, name, tuple(getattr(self, name)))

    def check(self) -> None:
        if self.zoo_min_steps > self.zoo_max_steps:
            raise ConfigError(f"--zoo-min-steps ({self.zoo_min_steps}) must not exceed "
                              f"--zoo-max-steps ({self.zoo_max_steps})")


@dataclass
class TrainCommand(TrainConfig):
    """``python -m predict.train``: a :class:`TrainConfig` plus where the results go."""

    out: str = option("predict_results", "output folder (results.json, results.md, "
                      "scatter.png, config.json)")
    save_weights: str = option("", "also store the 50%% split's seed-0 GMN per zoo here as "
                               "<zoo>.safetensors + <zoo>.json (e.g. predict/weights)")
    overwrite: bool = option(False, "replace what an earlier run wrote in --out / "
                             "--save-weights (other files there stay)")
    threads: int = option(0, "torch CPU threads (0: torch's default)", check=nonnegative)
    quiet: bool = option(False, "no progress bars")

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{f.name: getattr(self, f.name) for f in fields(TrainConfig)})


# ----------------------------------------------------------------------------- metrics


def r2_score(pred: Tensor, true: Tensor) -> float:
    """Coefficient of determination ``1 - SSE / SST`` of ``pred [N]`` against ``true [N]``."""
    sse = ((pred - true) ** 2).sum()
    sst = ((true - true.mean()) ** 2).sum().clamp_min(1e-12)
    return float(1 - sse / sst)


def kendall_tau(pred: Tensor, true: Tensor) -> float:
    """Kendall's tau-b rank correlation of ``pred [N]`` and ``true [N]``."""
    tau = kendalltau(pred.double().numpy(), true.double().numpy()).statistic
    return float(tau) if math.isfinite(tau) else 0.0


# ----------------------------------------------------------------------------- data


@dataclass
class ZooData:
    """A zoo encoded once for every predictor.

    Attributes:
        datas: per network its encoded parameter graph (``Data``; values in ``edge_attr``).
        features: ``flat [N, max_len]`` and ``stats [N, T, S]`` (see ``network_features``).
        targets: test accuracies ``[N]``.
        hparams: per hyper-parameter name a ``[N]`` tensor.
    """

    datas: list[Data]
    features: dict[str, Tensor]
    targets: Tensor
    hparams: dict[str, Tensor]

    @classmethod
    def from_zoo(cls, zoo: Zoo) -> ZooData:
        graphs = [zoo.graph(i) for i in range(len(zoo))]
        params = [zoo.params(i) for i in range(len(zoo))]
        datas = [g.encode(p) for g, p in zip(graphs, params)]
        hp = {k: zoo.hparam(k) for k in ("lr", "weight_decay", "init_scale", "steps")}
        return cls(datas, network_features(graphs, params), zoo.labels("test_acc"), hp)

    @property
    def dims(self) -> dict[str, int]:
        return {"max_len": self.features["flat"].shape[1],
                "max_tensors": self.features["stats"].shape[1]}

    def inputs(self, idx: Tensor, device: torch.device, graphs: bool) -> tuple:
        batch = None
        if graphs:
            batch = Batch.from_data_list([self.datas[i] for i in idx.tolist()]).to(device)
        feats = P.to(P.member(self.features, idx), device)
        return batch, feats


def split_indices(data: ZooData, split: str, seed: int, ood_hparam: str = "lr") -> tuple:
    """``(train_idx, test_idx)`` LongTensors of a split (see the module docstring)."""
    n = len(data.datas)
    if split == "OOD":
        h = data.hparams[ood_hparam]
        low = h < h.median()
        return torch.nonzero(low).flatten(), torch.nonzero(~low).flatten()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    half = n // 2
    if split == "50%":
        return perm[:half], perm[half:]
    if split == "5%":
        return perm[: max(2, round(0.05 * n))], perm[half:]
    raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")


# ----------------------------------------------------------------------------- training


def train_predictor(
    method: str, data: ZooData, train_idx: Tensor, config: TrainConfig, seed: int
) -> nn.Module:
    """Train one predictor with MSE on accuracy (AdamW, cosine decay, random minibatches)."""
    torch.manual_seed(seed)
    device = torch.device(config.device)
    model = build_predictor(method, data.dims, config.hidden, config.layers, config.readout)
    if method == "StatNN":
        model.set_normalization(data.features["stats"][train_idx])
    model.to(device).train()
    lr = config.gmn_lr if method == "GMN" and config.gmn_lr else config.lr
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, config.steps))
    gen = torch.Generator().manual_seed(seed)
    graphs = method in ("GMN", "DeepSets")
    for _ in range(config.steps):
        pick = train_idx[torch.randint(len(train_idx), (config.batch_size,), generator=gen)]
        batch, feats = data.inputs(pick, device, graphs)
        loss = F.mse_loss(model(batch, feats), data.targets[pick].to(device))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def predict_indices(
    model: nn.Module, method: str, data: ZooData, idx: Tensor, device: str, chunk: int = 128
) -> Tensor:
    """Predictions ``[len(idx)]`` (on CPU) of a trained predictor."""
    graphs = method in ("GMN", "DeepSets")
    out = [model(*data.inputs(idx[i : i + chunk], torch.device(device), graphs)).cpu()
           for i in range(0, len(idx), chunk)]
    return torch.cat(out)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean / std over seeds per ``zoo|split|method``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(f"{r['zoo']}|{r['split']}|{r['method']}", []).append(r)
    out = {}
    for key, rs in groups.items():
        r2 = torch.tensor([r["r2"] for r in rs])
        tau = torch.tensor([r["tau"] for r in rs])
        out[key] = {
            "r2_mean": r2.mean().item(), "r2_std": r2.std().item() if len(rs) > 1 else 0.0,
            "tau_mean": tau.mean().item(), "tau_std": tau.std().item() if len(rs) > 1 else 0.0,
            "seeds": len(rs), "n_train": rs[0]["n_train"], "n_test": rs[0]["n_test"],
        }
    return out


def markdown_table(config: TrainConfig, agg: dict[str, dict[str, Any]]) -> str:
    """The paper's layout: rows split x method, columns zoo x (R2, tau); paper in brackets."""
    head = (
        "| split | method | "
        + " | ".join(f"{ZOO_TITLES.get(z, z)} R2 | {ZOO_TITLES.get(z, z)} tau" for z in config.zoos)
        + " |"
    )
    lines = [head, "|" + "---|" * (2 + 2 * len(config.zoos))]
    for split in config.splits:
        for method in config.methods:
            cells = []
            for z in config.zoos:
                a = agg.get(f"{z}|{split}|{method}")
                paper = PAPER.get((split, method), {}).get(z)
                for k, (m, s) in enumerate((("r2_mean", "r2_std"), ("tau_mean", "tau_std"))):
                    cell = "-" if a is None else f"{a[m]:.3f} ± {a[s]:.3f}"
                    if paper is not None:
                        cell += f" ({paper[k]:.3f})"
                    cells.append(cell)
            lines.append(f"| {split} | {method} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Mean ± std over seeds {list(config.seeds)}; paper (Lim et al., ICLR 2024) "
        "in brackets. Test sets: the held-out half for 50% and 5%; for OOD, networks "
        f"with {config.ood_hparam} >= the zoo median (trained on those below)."
    )
    return "\n".join(lines) + "\n"


def scatter_plot(path: Path, scatter: dict[str, dict[str, tuple[Tensor, Tensor]]]) -> None:
    """Predicted vs true accuracy, one panel per (zoo, method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zoos = list(scatter)
    methods = sorted({m for z in zoos for m in scatter[z]}, key=lambda m: METHODS.index(m))
    fig, axes = plt.subplots(len(zoos), len(methods), figsize=(3 * len(methods), 3 * len(zoos)),
                             squeeze=False)
    for r, z in enumerate(zoos):
        for c, m in enumerate(methods):
            ax = axes[r][c]
            if m in scatter[z]:
                pred, true = scatter[z][m]
                ax.scatter(true, pred, s=3, alpha=0.5)
                ax.set_title(f"{ZOO_TITLES.get(z, z)}: {m}\nR2 {r2_score(pred, true):.3f}",
                             fontsize=9)
            ax.plot([0, 1], [0, 1], "k--", lw=0.8)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("true test accuracy")
            ax.set_ylabel("predicted")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    write_bytes(path, png.getvalue())


def save_gmn_predictor(model: nn.Module, folder: str | Path, name: str,
                       meta: dict[str, Any]) -> None:
    """Store a trained :class:`GMNPredictor` as ``<name>.safetensors`` + ``<name>.json``,
    both written as one checkpoint (a reader never sees one without the other)."""
    write_checkpoint(folder, {f"{name}.safetensors": tensor_bytes(model.state_dict()),
                              f"{name}.json": json_bytes(meta)})


RESULT_FILES = ("results.json", "results.md", "scatter.png", "config.json")


def predictor_files(zoos: Sequence[str]) -> list[str]:
    """The files ``--save-weights`` writes for ``zoos``."""
    return [f"{z}{ext}" for z in zoos for ext in (".safetensors", ".json")]


def prepare_outputs(config: TrainConfig, out: str | Path, save_weights: str | Path | None,
                    overwrite: bool) -> None:
    """Check both output folders (refusing one that holds files unless ``overwrite``) before
    creating either, so a refused run writes nothing."""
    targets = [(Path(out), RESULT_FILES, "--out")]
    if save_weights:
        targets.append((Path(save_weights), predictor_files(config.zoos), "--save-weights"))
    for folder, writes, flag in sorted(targets, key=lambda t: not t[0].exists()):
        prepare_output(folder, overwrite=overwrite, writes=writes, option=flag)


def run(config: TrainConfig, out: str | Path, save_weights: str | Path | None = None,
        progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Build / load the zoos, train every (zoo, split, method, seed) and write the table.

    Raises:
        ConfigError: a field of ``config`` is out of range (named as its ``--flag``).
        FolderNotEmptyError: ``out`` or ``save_weights`` holds files and not ``overwrite``;
            nothing was written.
    """
    cli.validate(config)
    out = Path(out)
    prepare_outputs(config, out, save_weights, overwrite)
    write_json(out / "config.json", asdict(config))
    runs: list[dict[str, Any]] = []
    scatter: dict[str, dict[str, tuple[Tensor, Tensor]]] = {}
    zoo_info = {}
    jobs = [(s, m, seed) for s in config.splits for m in config.methods for seed in config.seeds]
    for kind in config.zoos:
        zcfg = ZooConfig(
            kind=kind, size=config.zoo_size, seed=config.zoo_seed,
            min_steps=config.zoo_min_steps, max_steps=config.zoo_max_steps,
        )
        zoo = build_zoo(zcfg, progress=progress)
        data = ZooData.from_zoo(zoo)
        zoo_info[kind] = {"config": asdict(zcfg.resolved()), "size": len(zoo),
                          "mean_acc": data.targets.mean().item()}
        scatter[kind] = {}
        for split, method, seed in tqdm(jobs, desc=f"predictors {kind}", disable=not progress):
            train_idx, test_idx = split_indices(data, split, seed, config.ood_hparam)
            start = time.time()
            model = train_predictor(method, data, train_idx, config, seed)
            pred = predict_indices(model, method, data, test_idx, config.device)
            true = data.targets[test_idx]
            runs.append({"zoo": kind, "split": split, "method": method, "seed": seed,
                         "r2": r2_score(pred, true), "tau": kendall_tau(pred, true),
                         "n_train": len(train_idx), "n_test": len(test_idx),
                         "seconds": round(time.time() - start, 2)})
            if split == config.splits[0] and seed == config.seeds[0]:
                scatter[kind][method] = (pred, true)
                if method == "GMN" and save_weights is not None:
                    meta = {"hidden": config.hidden, "layers": config.layers,
                            "readout": config.readout, "zoo": kind,
                            "zoo_config": zoo_info[kind]["config"], "split": split, "seed": seed,
                            "test_r2": runs[-1]["r2"], "test_tau": runs[-1]["tau"],
                            "train_config": asdict(config)}
                    save_gmn_predictor(model, save_weights, kind, meta)
            write_json(out / "results.json", {"config": asdict(config), "zoos": zoo_info,
                                              "runs": runs, "aggregate": aggregate(runs)})
    agg = aggregate(runs)
    result = {"config": asdict(config), "zoos": zoo_info, "runs": runs, "aggregate": agg}
    write_json(out / "results.json", result)
    write_text(out / "results.md", markdown_table(config, agg))
    scatter_plot(out / "scatter.png", scatter)
    return result


def train_command(command: TrainCommand) -> dict[str, Any]:
    """Run the table of ``command`` and print it."""
    if command.threads:
        torch.set_num_threads(command.threads)
    result = run(command.train_config(), command.out, command.save_weights or None,
                 progress=not command.quiet, overwrite=command.overwrite)
    print(markdown_table(command, result["aggregate"]))
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m predict.train``: every option validated before any work (exit 2 otherwise)."""
    return cli.run(TrainCommand, train_command, argv, prog="python -m predict.train", doc=__doc__)


if __name__ == "__main__":
    main()
