"""Model zoos: many small networks trained on the 8x8 digits, labelled with their accuracy.

Two zoos (``ZooConfig.kind``):

* ``"cnn"`` ("varying CNNs"): :class:`predict.architectures.ZooCNN` with 1-3 conv stages of
  width 4 / 8 / 12, relu / tanh / gelu, dropout 0 or 0.2; per network a learning rate,
  weight decay, initialisation scale and number of training steps, so test accuracies spread
  from chance to the best reachable.
* ``"diverse"``: MLPs, CNNs with and without BatchNorm, small ResNets and tiny ViTs on the
  same data (one GMN reads them all), with per-network lr / wd / init scale / length.

Per network (both zoos): AdamW learning rate log-uniform in [3e-4, 0.1], decoupled weight
decay log-uniform in [1e-5, 1], initialisation scale (multiplies the family's default init of
every weight matrix / kernel) log-uniform in [0.2, 2.5], training steps log-uniform in
[``min_steps``, ``max_steps``] = [20, 500] by default, minibatch 32 of the 1400 training
images. Labels: test accuracy / loss on the 397 test images, train accuracy / loss on the 1400
training images, generalization gap = train accuracy - test accuracy.

Training is vectorized: networks sharing an architecture are trained together with
``torch.func.vmap(grad(loss))`` over stacked parameters and a hand-written AdamW whose
learning rate and weight decay are per-network tensors. Networks of a group are sorted by
their step budget, so at step ``t`` only the prefix still training is computed (the cost is
the sum of the budgets, not their max). BatchNorm layers train on batch statistics; after
training their running statistics are set to the exact statistics of the training set, and
every label is then computed by the rebuilt ``nn.Module`` in eval mode.

A zoo is cached under ``$GMN_CACHE/zoos/<kind>-<hash of config>/`` (default cache
``~/.cache/graph_metanetworks``) as ``zoo.safetensors`` (every network's ``state_dict``,
keys ``"<index>.<name>"``) plus ``zoo.json`` (config, and per network its architecture spec,
hyper-parameters and labels), so it is built once.

Run ``python -m predict.zoo --help`` for the command line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.func import functional_call, grad, replace_all_batch_norm_modules_, vmap
from tqdm import tqdm

from graphs import ParameterGraph
from predict.architectures import build_module, spec_key
from tasks.data import cache_dir, load_digits_split

__all__ = ["DEFAULT_SIZES", "Zoo", "ZooConfig", "build_zoo", "evaluate_module", "main"]

DEFAULT_SIZES = {"cnn": 2000, "diverse": 1000}
LABELS = ("test_acc", "test_loss", "train_acc", "train_loss", "gen_gap")


@dataclass(frozen=True)
class ZooConfig:
    """What defines a zoo (its hash names the cache folder).

    Attributes:
        kind: ``"cnn"`` (varying CNNs) or ``"diverse"`` (mixed architectures).
        size: number of networks (default 2000 for cnn, 1000 for diverse).
        seed: seed of the hyper-parameter draws, initialisations and minibatches.
        batch_size: minibatch size of every network's training.
        min_steps / max_steps: training length, drawn log-uniformly per network.
        data_seed: seed of the digits train/test split (``tasks.load_digits_split``).
    """

    kind: str = "cnn"
    size: int = 0
    seed: int = 0
    batch_size: int = 32
    min_steps: int = 20
    max_steps: int = 500
    data_seed: int = 0

    def resolved(self) -> ZooConfig:
        if self.kind not in DEFAULT_SIZES:
            raise ValueError(f"unknown zoo kind {self.kind!r}; choose from {sorted(DEFAULT_SIZES)}")
        if self.size > 0:
            return self
        return ZooConfig(**{**asdict(self), "size": DEFAULT_SIZES[self.kind]})

    def digest(self) -> str:
        blob = json.dumps(asdict(self.resolved()), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# ----------------------------------------------------------------------------- sampling


def _log_uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    u = torch.rand((), generator=gen).item()
    return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def _choice(gen: torch.Generator, options: Sequence[Any]) -> Any:
    return options[int(torch.randint(len(options), (), generator=gen))]


def _sample_spec(kind: str, gen: torch.Generator) -> dict[str, Any]:
    if kind == "cnn":
        depth = _choice(gen, [1, 2, 3])
        width = _choice(gen, [4, 8, 12])
        return {"family": "zoo_cnn", "kwargs": {
            "channels": [width] * depth,
            "activation": _choice(gen, ["relu", "tanh", "gelu"]),
            "dropout": _choice(gen, [0.0, 0.2]),
        }}  # fmt: skip
    family = _choice(gen, ["mlp", "cnn", "cnn_bn", "resnet", "vit"])
    if family == "mlp":
        return {"family": "mlp", "kwargs": {
            "hidden": _choice(gen, [[16], [32], [64], [16, 16], [32, 32]]),
            "activation": _choice(gen, ["relu", "tanh", "gelu"]),
        }}  # fmt: skip
    if family in ("cnn", "cnn_bn"):
        return {"family": "digits_cnn", "kwargs": {
            "channels": _choice(gen, [[4, 8], [8, 8], [8, 16]]),
            "norm": "batch" if family == "cnn_bn" else None,
            "activation": _choice(gen, ["relu", "tanh"]),
        }}  # fmt: skip
    if family == "resnet":
        return {"family": "resnet", "kwargs": {"widths": _choice(gen, [[4, 4], [4, 8], [8, 8]])}}
    return {"family": "vit", "kwargs": {
        "dim": 16, "depth": _choice(gen, [1, 2]), "heads": 2, "mlp_dim": 32,
        "patch_size": _choice(gen, [2, 4]),
    }}  # fmt: skip


def _sample_hparams(config: ZooConfig, gen: torch.Generator) -> dict[str, float]:
    steps = _log_uniform(gen, config.min_steps, config.max_steps)
    return {
        "lr": _log_uniform(gen, 3e-4, 0.1),
        "weight_decay": _log_uniform(gen, 1e-5, 1.0),
        "init_scale": _log_uniform(gen, 0.2, 2.5),
        "steps": int(round(steps)),
        "seed": int(torch.randint(2**31 - 1, (), generator=gen)),
    }


# ----------------------------------------------------------------------------- training


def _init_params(spec: Mapping[str, Any], hp: Mapping[str, Any]) -> dict[str, Tensor]:
    """Default init of the family, weights (dim >= 2) multiplied by ``init_scale``."""
    with torch.random.fork_rng():
        torch.manual_seed(hp["seed"])
        module = build_module(spec)
    out = {}
    for name, p in module.named_parameters():
        p = p.detach().clone()
        if p.dim() >= 2 and not name.endswith(("cls_token", "pos_embedding")):
            p = p * hp["init_scale"]
        out[name] = p
    return out


def train_group(
    spec: Mapping[str, Any],
    hparams: Sequence[Mapping[str, Any]],
    x: Tensor,
    y: Tensor,
    batch_size: int,
    seed: int,
) -> list[dict[str, Tensor]]:
    """Train networks of one architecture together (vmap over stacked parameters).

    Args:
        spec: the shared architecture spec.
        hparams: per network ``lr``, ``weight_decay``, ``init_scale``, ``steps``, ``seed``.
        x, y: training data ``[N, 1, 8, 8]``, ``[N]``.
    Returns:
        Trained parameter dicts (no buffers), in the order of ``hparams``.
    """
    g = len(hparams)
    order = sorted(range(g), key=lambda i: -hparams[i]["steps"])  # longest first: prefixes
    hs = [hparams[i] for i in order]
    inits = [_init_params(spec, h) for h in hs]
    params = {k: torch.stack([p[k] for p in inits]) for k in inits[0]}
    m1 = {k: torch.zeros_like(v) for k, v in params.items()}
    m2 = {k: torch.zeros_like(v) for k, v in params.items()}
    lr = torch.tensor([h["lr"] for h in hs])
    wd = torch.tensor([h["weight_decay"] for h in hs])
    steps = torch.tensor([h["steps"] for h in hs])

    template = build_module(spec)
    replace_all_batch_norm_modules_(template)  # batch statistics only: safe under vmap
    template.train()

    def loss_fn(p: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(template, p, (xb,)), yb)

    grad_fn = vmap(grad(loss_fn), randomness="different")
    # attention has no vmap batching rule yet (a per-net loop inside torch): correct, slower
    warnings.filterwarnings("ignore", message="There is a performance drop")
    gen = torch.Generator().manual_seed(seed)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(int(steps.max())):
        n = int((steps > t).sum())
        idx = torch.randint(0, x.shape[0], (n, batch_size), generator=gen)
        with torch.random.fork_rng():
            torch.manual_seed(seed * 100_003 + t)  # dropout masks
            grads = grad_fn({k: v[:n] for k, v in params.items()}, x[idx], y[idx])
        c1, c2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
        for k, gk in grads.items():
            gk = torch.nan_to_num(gk, nan=0.0, posinf=0.0, neginf=0.0)
            shape = (n,) + (1,) * (gk.dim() - 1)
            p, a, b = params[k][:n], m1[k][:n], m2[k][:n]
            a.mul_(b1).add_(gk, alpha=1 - b1)
            b.mul_(b2).addcmul_(gk, gk, value=1 - b2)
            step_lr = lr[:n].view(shape)
            p.mul_(1 - step_lr * wd[:n].view(shape))  # decoupled weight decay (AdamW)
            p.sub_(step_lr * (a / c1) / ((b / c2).sqrt() + eps))
    out: list[dict[str, Tensor]] = [{} for _ in range(g)]
    for j, i in enumerate(order):
        out[i] = {k: v[j].clone() for k, v in params.items()}
    return out


@torch.no_grad()
def set_batchnorm_statistics(module: nn.Module, x: Tensor) -> None:
    """Running statistics of every BatchNorm := exact statistics of ``module`` on ``x``."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    module.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch -> its exact statistics
        m.train()
    module(x)
    for m in norms:
        m.momentum = 0.1
    module.eval()


@torch.no_grad()
def evaluate_module(module: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``module`` (eval mode) on ``x [N, 1, 8, 8]``, ``y [N]``."""
    module.eval()
    logits = module(x)
    acc = (logits.argmax(-1) == y).float().mean().item()
    loss = F.cross_entropy(logits, y).item()
    return acc, loss if math.isfinite(loss) else 1e3


# ----------------------------------------------------------------------------- the zoo


@dataclass
class Zoo:
    """A trained zoo: per network its spec, hyper-parameters, labels and ``state_dict``.

    Attributes:
        config: the :class:`ZooConfig` it was built from.
        records: per network ``{"spec", "hparams", "labels"}`` (JSON-able).
        states: per network its ``state_dict`` (parameters and BatchNorm buffers).
    """

    config: ZooConfig
    records: list[dict[str, Any]]
    states: list[dict[str, Tensor]]
    _graphs: dict[str, ParameterGraph] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.records)

    def module(self, i: int) -> nn.Module:
        """Network ``i`` rebuilt as an ``nn.Module`` (eval mode) with its trained state."""
        m = build_module(self.records[i]["spec"])
        m.load_state_dict(self.states[i])
        return m.eval()

    def graph(self, i: int) -> ParameterGraph:
        """The :class:`ParameterGraph` of network ``i`` (cached per architecture)."""
        key = spec_key(self.records[i]["spec"])
        if key not in self._graphs:
            self._graphs[key] = ParameterGraph.from_module(build_module(self.records[i]["spec"]))
        return self._graphs[key]

    def params(self, i: int) -> dict[str, Tensor]:
        """Network ``i``'s parameters (no buffers), named as in ``graph(i).param_names``."""
        return {n: self.states[i][n] for n in self.graph(i).param_names}

    def labels(self, name: str = "test_acc") -> Tensor:
        """Label ``name`` (one of :data:`LABELS`) of every network: ``[N]``."""
        return torch.tensor([r["labels"][name] for r in self.records])

    def hparam(self, name: str) -> Tensor:
        """Hyper-parameter ``name`` (lr, weight_decay, init_scale, steps) per network ``[N]``."""
        return torch.tensor([float(r["hparams"][name]) for r in self.records])

    def families(self) -> list[str]:
        """Per network a readable family name (``mlp``, ``digits_cnn+batch``, ``vit`` ...)."""
        out = []
        for r in self.records:
            fam = r["spec"]["family"]
            if r["spec"]["kwargs"].get("norm"):
                fam += "+" + r["spec"]["kwargs"]["norm"]
            out.append(fam)
        return out

    # ------------------------------------------------------------ storage
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"{i}.{k}": v.contiguous() for i, s in enumerate(self.states) for k, v in s.items()
        }
        save_file(tensors, str(folder / "zoo.safetensors"))
        meta = {"config": asdict(self.config), "records": self.records}
        (folder / "zoo.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: Path) -> Zoo:
        meta = json.loads((folder / "zoo.json").read_text())
        flat = load_file(str(folder / "zoo.safetensors"))
        states: list[dict[str, Tensor]] = [{} for _ in meta["records"]]
        for key, v in flat.items():
            i, name = key.split(".", 1)
            states[int(i)][name] = v
        return cls(ZooConfig(**meta["config"]), meta["records"], states)


def zoo_folder(config: ZooConfig, root: Path | None = None) -> Path:
    """Cache folder of ``config``: ``<root or $GMN_CACHE>/zoos/<kind>-<digest>``."""
    config = config.resolved()
    return Path(root or cache_dir()) / "zoos" / f"{config.kind}-n{config.size}-{config.digest()}"


def build_zoo(
    config: ZooConfig, root: Path | None = None, progress: bool = True, rebuild: bool = False
) -> Zoo:
    """Load the zoo of ``config`` from the cache, or train it (and cache it).

    Networks are grouped by architecture and each group trained in one vectorized run
    (:func:`train_group`); every label is then computed by the rebuilt ``nn.Module``.
    """
    config = config.resolved()
    folder = zoo_folder(config, root)
    if not rebuild and (folder / "zoo.json").exists():
        return Zoo.load(folder)
    gen = torch.Generator().manual_seed(config.seed)
    specs = [_sample_spec(config.kind, gen) for _ in range(config.size)]
    hps = [_sample_hparams(config, gen) for _ in range(config.size)]
    x, y, xt, yt = load_digits_split(config.data_seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(specs):
        groups[spec_key(s)].append(i)
    params: list[dict[str, Tensor]] = [{} for _ in specs]
    start = time.time()
    total = sum(h["steps"] for h in hps)
    bar = tqdm(total=total, desc=f"zoo {config.kind}", unit="net-step", disable=not progress)
    for gi, (_key, ids) in enumerate(sorted(groups.items())):
        trained = train_group(
            specs[ids[0]], [hps[i] for i in ids], x, y, config.batch_size, config.seed * 7919 + gi
        )
        for i, p in zip(ids, trained):
            params[i] = p
        bar.update(sum(hps[i]["steps"] for i in ids))
    bar.close()
    records, states = [], []
    for spec, hp, p in zip(specs, hps, params):
        m = build_module(spec)
        m.load_state_dict(p, strict=False)  # buffers: BatchNorm statistics, set next
        set_batchnorm_statistics(m, x)
        test_acc, test_loss = evaluate_module(m, xt, yt)
        train_acc, train_loss = evaluate_module(m, x, y)
        labels = {"test_acc": test_acc, "test_loss": test_loss, "train_acc": train_acc,
                  "train_loss": train_loss, "gen_gap": train_acc - test_acc}  # fmt: skip
        records.append({"spec": spec, "hparams": hp, "labels": labels})
        states.append({k: v.detach().clone() for k, v in m.state_dict().items()})
    zoo = Zoo(config, records, states)
    zoo.save(folder)
    build_info = {"seconds": time.time() - start, "threads": torch.get_num_threads(),
                  "groups": len(groups)}  # fmt: skip
    (folder / "build.json").write_text(json.dumps(build_info, indent=1))
    return zoo


def summary(zoo: Zoo) -> dict[str, Any]:
    """Accuracy spread of a zoo, overall and per family (for the CLI and reports)."""
    acc = zoo.labels("test_acc")
    fams = zoo.families()
    per: dict[str, list[float]] = defaultdict(list)
    for f, a in zip(fams, acc.tolist()):
        per[f].append(a)
    q = torch.quantile(acc, torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])).tolist()
    return {
        "size": len(zoo),
        "test_acc_quantiles_0_10_50_90_100": [round(v, 4) for v in q],
        "per_family": {f: {"n": len(v), "mean_acc": round(sum(v) / len(v), 4)}
                       for f, v in sorted(per.items())},
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> Zoo:
    parser = argparse.ArgumentParser(
        prog="python -m predict.zoo",
        description="Build (or load from the cache) a model zoo of 8x8-digit classifiers "
        "labelled with their test accuracy, train loss and generalization gap. Cached under "
        "$GMN_CACHE/zoos (default ~/.cache/graph_metanetworks/zoos) as safetensors + JSON.",
    )
    parser.add_argument(
        "--kind",
        choices=sorted(DEFAULT_SIZES),
        default="cnn",
        help="'cnn': varying CNNs (default 2000 nets); 'diverse': MLPs, CNNs "
        "with/without BatchNorm, ResNets, ViTs (default 1000 nets)",
    )
    parser.add_argument("--size", type=int, default=0, help="number of networks (0: default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of draws, inits, batches")
    parser.add_argument("--batch-size", type=int, default=32, help="minibatch size (default 32)")
    parser.add_argument("--min-steps", type=int, default=20, help="shortest training (default 20)")
    parser.add_argument("--max-steps", type=int, default=500, help="longest training (default 500)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--cache", type=Path, default=None, help="cache root (default $GMN_CACHE)")
    parser.add_argument("--rebuild", action="store_true", help="ignore a cached zoo")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = ZooConfig(kind=args.kind, size=args.size, seed=args.seed, batch_size=args.batch_size,
                       min_steps=args.min_steps, max_steps=args.max_steps)  # fmt: skip
    start = time.time()
    zoo = build_zoo(config, args.cache, progress=not args.quiet, rebuild=args.rebuild)
    info = summary(zoo)
    info["folder"] = str(zoo_folder(config, args.cache))
    info["seconds_this_call"] = round(time.time() - start, 1)
    print(json.dumps(info, indent=1))
    return zoo


if __name__ == "__main__":
    main()
