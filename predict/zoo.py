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

A zoo is cached under ``$GMN_CACHE/zoos/<kind>-n<size>-<hash of config>/`` (default cache
``~/.cache/graph_metanetworks``) as ``zoo.safetensors`` (every network's ``state_dict``,
keys ``"<index>.<name>"``), ``zoo.json`` (config, and per network its architecture spec,
hyper-parameters and labels) and ``build.json`` (build time), so it is built once. The three
files are written as one checkpoint (``common.persistence.write_checkpoint``): a build killed
while saving leaves no zoo that a later call would trust. Loading validates both files
(finite tensors, every field and every network's tensors present); a damaged cache is an error
naming the file and the field, and ``--rebuild`` builds it again.

Run ``python -m predict.zoo --help`` for the command line.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, replace_all_batch_norm_modules_, vmap
from tqdm import tqdm

from common import cli
from common.cli import ConfigError, nonnegative, option, positive
from common.persistence import (
    PersistenceError,
    checkpoint_file,
    has_checkpoint,
    json_bytes,
    load_tensors,
    read_json,
    require,
    tensor_bytes,
    write_checkpoint,
)
from graphs import ParameterGraph
from graphs import params as P
from predict.architectures import FAMILIES, build_module, spec_key
from tasks.data import cache_dir, load_digits_split

__all__ = ["DEFAULT_SIZES", "Zoo", "ZooCommand", "ZooConfig", "build_zoo", "evaluate_module",
           "main"]

DEFAULT_SIZES = {"cnn": 2000, "diverse": 1000}
LABELS = ("test_acc", "test_loss", "train_acc", "train_loss", "gen_gap")
ZOO_FILES = ("zoo.safetensors", "zoo.json")  # what a usable cached zoo needs
HPARAMS = {"lr": float, "weight_decay": float, "init_scale": float, "steps": int, "seed": int}


@dataclass(frozen=True)
class ZooConfig:
    """What defines a zoo (its hash names the cache folder); each field is a ``--flag``.

    Attributes:
        kind: ``"cnn"`` (varying CNNs) or ``"diverse"`` (mixed architectures).
        size: number of networks (0: 2000 for cnn, 1000 for diverse).
        seed: seed of the hyper-parameter draws, initialisations and minibatches.
        batch_size: minibatch size of every network's training.
        min_steps / max_steps: training length, drawn log-uniformly per network.
        data_seed: seed of the digits train/test split (``tasks.load_digits_split``).
    """

    kind: str = option("cnn", "'cnn': varying CNNs (default 2000 nets); 'diverse': MLPs, CNNs "
                       "with/without BatchNorm, ResNets, ViTs (default 1000 nets)",
                       choices=tuple(DEFAULT_SIZES))
    size: int = option(0, "number of networks (0: the kind's default)", check=nonnegative)
    seed: int = option(0, "seed of the draws, initialisations and minibatches",
                       check=nonnegative)
    batch_size: int = option(32, "minibatch size of every network's training", check=positive)
    min_steps: int = option(20, "shortest training of a network, in steps", check=positive)
    max_steps: int = option(500, "longest training of a network, in steps", check=positive)
    data_seed: int = option(0, "seed of the digits train/test split", check=nonnegative)

    def check(self) -> None:
        if self.min_steps > self.max_steps:
            raise ConfigError(f"--min-steps ({self.min_steps}) must not exceed --max-steps "
                              f"({self.max_steps})")

    def resolved(self) -> ZooConfig:
        """This config, validated, with ``size`` 0 replaced by the kind's default size.

        Raises:
            ConfigError: a field the zoo cannot be built with (named as its ``--flag``).
        """
        cli.validate(self)
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
        }}
    family = _choice(gen, ["mlp", "cnn", "cnn_bn", "resnet", "vit"])
    if family == "mlp":
        return {"family": "mlp", "kwargs": {
            "hidden": _choice(gen, [[16], [32], [64], [16, 16], [32, 32]]),
            "activation": _choice(gen, ["relu", "tanh", "gelu"]),
        }}
    if family in ("cnn", "cnn_bn"):
        return {"family": "digits_cnn", "kwargs": {
            "channels": _choice(gen, [[4, 8], [8, 8], [8, 16]]),
            "norm": "batch" if family == "cnn_bn" else None,
            "activation": _choice(gen, ["relu", "tanh"]),
        }}
    if family == "resnet":
        return {"family": "resnet", "kwargs": {"widths": _choice(gen, [[4, 4], [4, 8], [8, 8]])}}
    return {"family": "vit", "kwargs": {
        "dim": 16, "depth": _choice(gen, [1, 2]), "heads": 2, "mlp_dim": 32,
        "patch_size": _choice(gen, [2, 4]),
    }}


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
    params = P.stack([_init_params(spec, h) for h in hs])  # [G, *shape] per name
    m1 = P.map_tensors(torch.zeros_like, params)
    m2 = P.map_tensors(torch.zeros_like, params)
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
            grads = grad_fn(P.member(params, slice(0, n)), x[idx], y[idx])
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
        out[i] = P.map_tensors(Tensor.clone, P.member(params, j))
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
    def save(self, folder: str | Path, build: Mapping[str, Any] | None = None) -> None:
        """Write ``zoo.safetensors``, ``zoo.json`` (and ``build.json``) as one checkpoint."""
        tensors = {f"{i}.{k}": v for i, s in enumerate(self.states) for k, v in s.items()}
        files = {"zoo.safetensors": tensor_bytes(tensors),
                 "zoo.json": json_bytes({"config": asdict(self.config), "records": self.records})}
        if build is not None:
            files["build.json"] = json_bytes(dict(build))
        write_checkpoint(folder, files)

    @classmethod
    def load(cls, folder: str | Path) -> Zoo:
        """The zoo saved in ``folder``, validated.

        Raises:
            PersistenceError: a file is missing or malformed (a field absent or of the wrong
                type, a non-finite value, a network's tensors missing or misshapen); the
                message names the file and the field.
        """
        index = checkpoint_file(folder, "zoo.json")
        meta = read_json(index, what="zoo index")
        config = _read_zoo_config(require(meta, "config", dict, str(index)), f"{index}: config")
        records = require(meta, "records", list, str(index), check=lambda r: len(r) == config.size,
                          why=f"a list of {config.size} network records")
        for i, record in enumerate(records):
            _check_record(record, f"{index}: records[{i}]")
        weights = checkpoint_file(folder, "zoo.safetensors")
        states = _split_states(load_tensors(weights), records, str(weights))
        return cls(config, records, states)


def _read_zoo_config(raw: dict[str, Any], where: str) -> ZooConfig:
    names = {f.name for f in fields(ZooConfig)}
    if set(raw) != names:
        raise PersistenceError(f"{where}: fields {sorted(raw)} are not those of a zoo config "
                               f"({sorted(names)})")
    try:
        return ZooConfig(**raw).resolved()
    except ConfigError as err:
        raise PersistenceError(f"{where}: {err}") from None


def _check_record(record: Any, where: str) -> None:
    spec = require(record, "spec", dict, where)
    require(spec, "family", str, f"{where}.spec", check=FAMILIES.__contains__,
            why=f"one of {sorted(FAMILIES)}")
    require(spec, "kwargs", dict, f"{where}.spec")
    hparams = require(record, "hparams", dict, where)
    for name, kind in HPARAMS.items():
        require(hparams, name, (int, float) if kind is float else int, f"{where}.hparams")
    labels = require(record, "labels", dict, where)
    for name in LABELS:
        require(labels, name, (int, float), f"{where}.labels")


def _split_states(flat: Mapping[str, Tensor], records: Sequence[Mapping[str, Any]],
                  where: str) -> list[dict[str, Tensor]]:
    """Per network its ``state_dict`` from the ``"<index>.<name>"`` keys, checked against the
    architecture of its record (every tensor present, shapes equal, nothing extra)."""
    states: list[dict[str, Tensor]] = [{} for _ in records]
    for key, v in flat.items():
        index, _, name = key.partition(".")
        if not (index.isdigit() and int(index) < len(records) and name):
            raise PersistenceError(f"{where}: tensor {key!r} is not '<network index>.<name>' of "
                                   f"one of the {len(records)} networks")
        states[int(index)][name] = v
    expected: dict[str, dict[str, tuple[int, ...]]] = {}
    for i, (record, state) in enumerate(zip(records, states)):
        key = spec_key(record["spec"])
        if key not in expected:
            try:
                module = build_module(record["spec"])
            except (TypeError, ValueError) as err:
                raise PersistenceError(f"{where}: network {i}'s spec cannot be built: {err}"
                                       ) from None
            expected[key] = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        if shapes != expected[key]:
            wrong = sorted(set(shapes).symmetric_difference(expected[key]))
            wrong = wrong or sorted(k for k in shapes if shapes[k] != expected[key][k])
            raise PersistenceError(f"{where}: network {i}'s tensors do not match its "
                                   f"architecture (tensor {i}.{wrong[0]})")
    return states


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
    if not rebuild and has_checkpoint(folder, ZOO_FILES):
        try:
            zoo = Zoo.load(folder)
        except PersistenceError as err:
            raise PersistenceError(f"{err} (a damaged zoo cache: pass --rebuild to build it "
                                   "again)") from None
        if zoo.config != config:
            raise PersistenceError(f"{folder / 'zoo.json'}: holds a zoo of another config "
                                   f"({asdict(zoo.config)}); pass --rebuild to build it again")
        return zoo
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
                  "train_loss": train_loss, "gen_gap": train_acc - test_acc}
        records.append({"spec": spec, "hparams": hp, "labels": labels})
        states.append(P.map_tensors(Tensor.clone, m.state_dict()))
    zoo = Zoo(config, records, states)
    build_info = {"seconds": time.time() - start, "threads": torch.get_num_threads(),
                  "groups": len(groups)}
    zoo.save(folder, build_info)
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
    }


@dataclass(frozen=True)
class ZooCommand(ZooConfig):
    """``python -m predict.zoo``: a :class:`ZooConfig` plus how to run the build."""

    threads: int = option(0, "torch CPU threads (0: torch's default)", check=nonnegative)
    cache: str = option("", "cache root (empty: $GMN_CACHE, else ~/.cache/graph_metanetworks)")
    rebuild: bool = option(False, "build again even if the zoo is cached")
    quiet: bool = option(False, "no progress bar")

    def check(self) -> None:
        super().check()
        if self.cache and Path(self.cache).exists() and not Path(self.cache).is_dir():
            raise ConfigError(f"--cache {self.cache} is a file, not a folder")

    def zoo_config(self) -> ZooConfig:
        return ZooConfig(**{f.name: getattr(self, f.name) for f in fields(ZooConfig)})


def build_command(command: ZooCommand) -> Zoo:
    """Build (or load) the zoo of ``command`` and print its summary as JSON."""
    if command.threads:
        torch.set_num_threads(command.threads)
    config, root = command.zoo_config(), Path(command.cache) if command.cache else None
    start = time.time()
    zoo = build_zoo(config, root, progress=not command.quiet, rebuild=command.rebuild)
    info = summary(zoo)
    info["folder"] = str(zoo_folder(config, root))
    info["seconds_this_call"] = round(time.time() - start, 1)
    print(json.dumps(info, indent=1))
    return zoo


def main(argv: Sequence[str] | None = None) -> Zoo:
    """``python -m predict.zoo``: every option validated before any work (exit 2 otherwise)."""
    return cli.run(ZooCommand, build_command, argv, prog="python -m predict.zoo", doc=__doc__)


if __name__ == "__main__":
    main()
