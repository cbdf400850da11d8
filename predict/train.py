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
(what :func:`predict.load_predictor` loads).

Run ``python -m predict.train --help`` for the command line.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from scipy.stats import kendalltau
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from tqdm import tqdm

from predict.models import GMN_READOUTS, METHODS, build_predictor, network_features
from predict.zoo import Zoo, ZooConfig, build_zoo

__all__ = ["SPLITS", "TrainConfig", "ZooData", "kendall_tau", "main", "r2_score", "run"]

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


@dataclass
class TrainConfig:
    """One table run.

    Attributes:
        zoos: zoo kinds (columns of the table).
        zoo_size / zoo_min_steps / zoo_max_steps / zoo_seed: passed to
            :class:`predict.zoo.ZooConfig`
            (size 0: the default size of each kind).
        methods / splits / seeds: rows of the table and repetitions.
        steps / batch_size / lr / weight_decay: predictor training (AdamW, cosine decay).
        hidden / layers: predictor width; GMN message-passing blocks.
        readout: the GMN's readout, ``"groups"`` or ``"mean"`` (see ``GMNPredictor``).
        gmn_lr: learning rate of the GMN (None: ``lr``, as the baselines).
        ood_hparam: hyper-parameter whose median separates the OOD split.
    """

    zoos: tuple[str, ...] = ("cnn", "diverse")
    zoo_size: int = 0
    zoo_min_steps: int = 20
    zoo_max_steps: int = 500
    zoo_seed: int = 0
    methods: tuple[str, ...] = METHODS
    splits: tuple[str, ...] = SPLITS
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    hidden: int = 16
    layers: int = 2
    readout: str = "groups"
    gmn_lr: float | None = 6e-3
    ood_hparam: str = "lr"
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


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
                "max_tensors": self.features["stats"].shape[1]}  # fmt: skip

    def inputs(self, idx: Tensor, device: torch.device, graphs: bool) -> tuple:
        batch = None
        if graphs:
            batch = Batch.from_data_list([self.datas[i] for i in idx.tolist()]).to(device)
        feats = {k: v[idx].to(device) for k, v in self.features.items()}
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
    lr = config.gmn_lr if method == "GMN" and config.gmn_lr is not None else config.lr
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
           for i in range(0, len(idx), chunk)]  # fmt: skip
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
        }  # fmt: skip
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
                             squeeze=False)  # fmt: skip
    for r, z in enumerate(zoos):
        for c, m in enumerate(methods):
            ax = axes[r][c]
            if m in scatter[z]:
                pred, true = scatter[z][m]
                ax.scatter(true, pred, s=3, alpha=0.5)
                ax.set_title(f"{ZOO_TITLES.get(z, z)}: {m}\nR2 {r2_score(pred, true):.3f}",
                             fontsize=9)  # fmt: skip
            ax.plot([0, 1], [0, 1], "k--", lw=0.8)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("true test accuracy")
            ax.set_ylabel("predicted")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_gmn_predictor(model: nn.Module, folder: Path, name: str, meta: dict[str, Any]) -> None:
    """Store a trained :class:`GMNPredictor` as ``<name>.safetensors`` + ``<name>.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(meta, indent=1))


def run(config: TrainConfig, out: Path, save_weights: Path | None = None,
        progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Build / load the zoos, train every (zoo, split, method, seed) and write the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=1))
    runs: list[dict[str, Any]] = []
    scatter: dict[str, dict[str, tuple[Tensor, Tensor]]] = {}
    zoo_info = {}
    jobs = [(s, m, seed) for s in config.splits for m in config.methods for seed in config.seeds]
    for kind in config.zoos:
        zcfg = ZooConfig(
            kind=kind, size=config.zoo_size, seed=config.zoo_seed,
            min_steps=config.zoo_min_steps, max_steps=config.zoo_max_steps,
        )  # fmt: skip
        zoo = build_zoo(zcfg, progress=progress)
        data = ZooData.from_zoo(zoo)
        zoo_info[kind] = {"config": asdict(zcfg.resolved()), "size": len(zoo),
                          "mean_acc": data.targets.mean().item()}  # fmt: skip
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
                         "seconds": round(time.time() - start, 2)})  # fmt: skip
            if split == config.splits[0] and seed == config.seeds[0]:
                scatter[kind][method] = (pred, true)
                if method == "GMN" and save_weights is not None:
                    meta = {"hidden": config.hidden, "layers": config.layers,
                            "readout": config.readout, "zoo": kind,
                            "zoo_config": zoo_info[kind]["config"], "split": split, "seed": seed,
                            "test_r2": runs[-1]["r2"], "test_tau": runs[-1]["tau"],
                            "train_config": asdict(config)}  # fmt: skip
                    save_gmn_predictor(model, save_weights, kind, meta)
            (out / "results.json").write_text(json.dumps(
                {"config": asdict(config), "zoos": zoo_info, "runs": runs,
                 "aggregate": aggregate(runs)}, indent=1))  # fmt: skip
    agg = aggregate(runs)
    result = {"config": asdict(config), "zoos": zoo_info, "runs": runs, "aggregate": agg}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "results.md").write_text(markdown_table(config, agg))
    scatter_plot(out / "scatter.png", scatter)
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m predict.train",
        description="Train GMN / DeepSets / DMC / StatNN accuracy predictors on model zoos "
        "(built or loaded by predict.zoo) and write results.json, results.md (R2 and Kendall "
        "tau per split x method, mean ± std over seeds) and scatter.png under --out.",
    )
    p.add_argument(
        "--zoos",
        nargs="+",
        default=list(d.zoos),
        choices=["cnn", "diverse"],
        help="zoos (table columns): cnn = varying CNNs, diverse = mixed architectures",
    )
    p.add_argument("--zoo-size", type=int, default=0, help="networks per zoo (0: zoo default)")
    p.add_argument(
        "--zoo-max-steps",
        type=int,
        default=d.zoo_max_steps,
        help="longest training of a zoo network (part of the zoo's cache key)",
    )
    p.add_argument(
        "--zoo-min-steps",
        type=int,
        default=d.zoo_min_steps,
        help="shortest training of a zoo network (part of the zoo's cache key)",
    )
    p.add_argument("--zoo-seed", type=int, default=0, help="zoo seed (cache key)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(d.methods),
        choices=list(METHODS),
        help="predictors (table rows within a split)",
    )
    p.add_argument(
        "--splits",
        nargs="+",
        default=list(d.splits),
        choices=list(SPLITS),
        help="50%%: half trains; 5%%: 5%% trains (same test half); OOD: low lr trains",
    )
    p.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=list(d.seeds),
        help="seeds (split draw, predictor init, minibatches); mean and std reported",
    )
    p.add_argument("--steps", type=int, default=d.steps, help="training steps per predictor")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="networks per step")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate (cosine decay)")
    p.add_argument(
        "--gmn-lr",
        type=float,
        default=d.gmn_lr,
        help="learning rate of the GMN (<= 0: --lr, like the baselines)",
    )
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW decay")
    p.add_argument("--hidden", type=int, default=d.hidden, help="predictor / GMN width")
    p.add_argument("--layers", type=int, default=d.layers, help="GMN message-passing blocks")
    p.add_argument(
        "--readout",
        default=d.readout,
        choices=list(GMN_READOUTS),
        help="GMN readout: groups = pool edges per (edge type, layer), mean = one mean",
    )
    p.add_argument(
        "--ood-hparam",
        default=d.ood_hparam,
        choices=["lr", "weight_decay", "init_scale", "steps"],
        help="OOD split: train below this hyper-parameter's median, test above",
    )
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--out", type=Path, default=Path("predict_results"), help="output folder")
    p.add_argument(
        "--save-weights",
        type=Path,
        default=None,
        help="also store the 50%%-split seed-0 GMN per zoo here (e.g. predict/weights)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    config = TrainConfig(
        zoos=tuple(a.zoos), zoo_size=a.zoo_size, zoo_min_steps=a.zoo_min_steps,
        zoo_max_steps=a.zoo_max_steps,
        zoo_seed=a.zoo_seed, methods=tuple(a.methods), splits=tuple(a.splits),
        seeds=tuple(a.seeds), steps=a.steps, batch_size=a.batch_size, lr=a.lr,
        weight_decay=a.weight_decay, hidden=a.hidden, layers=a.layers, readout=a.readout,
        gmn_lr=a.gmn_lr if a.gmn_lr and a.gmn_lr > 0 else None, ood_hparam=a.ood_hparam,
        device=a.device,
    )  # fmt: skip
    result = run(config, a.out, a.save_weights, progress=not a.quiet)
    print((a.out / "results.md").read_text())
    return result


if __name__ == "__main__":
    main()
