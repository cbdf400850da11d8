"""Demo of the core: graphs for several architectures, and a GMN that permutes with them.

``python -m graphs.demo`` builds parameter graphs for an MLP, a CNN with BatchNorm, a ResNet,
a ViT and a sequence transformer (small ``torch.nn`` models written here, sized like the
project's digits architectures) and a ResNet-18, prints their sizes and build times, then
permutes hidden neurons (MLP), channels across residual shortcuts (ResNet) and attention
heads (ViT) and checks in float64 that the network's function is unchanged, the GMN's
per-parameter outputs permute the same way and its graph embedding does not move.
``--out FOLDER`` also writes the table and the config as ``results.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from common import cli, persistence
from common.cli import option, positive
from graphs import GMN, ParameterGraph
from graphs.params import detach
from graphs.permutation import head_moves, node_permutation, permute_parameters


# ----------------------------------------------------------------------------- models
class _Block(nn.Module):
    """Residual basic block ``relu(body(x) + shortcut(x))``: ``[B, C_in, H, W] -> [B, C, H', W']``.

    The shortcut is the identity, or ``Conv1x1(stride) -> BatchNorm`` when the shape changes.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def _resnet(widths: Sequence[int], blocks: int, in_channels: int, classes: int,
            imagenet_stem: bool) -> nn.Sequential:
    """torchvision's ResNet layout: stem, ``blocks`` per stage (stride 2 after the first)."""
    c = widths[0]
    stem: list[nn.Module] = (
        [nn.Conv2d(in_channels, c, 7, 2, 3, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
         nn.MaxPool2d(3, 2, 1)] if imagenet_stem
        else [nn.Conv2d(in_channels, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
    )
    stages = []
    for i, width in enumerate(widths):
        for j in range(blocks):
            stages.append(_Block(c, width, 2 if i > 0 and j == 0 else 1))
            c = width
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes)]
    return nn.Sequential(*stem, *stages, *head)


class _Patches(nn.Module):
    """Patch embedding: ``[B, C, H, W] -> [B, H/p * W/p, D]``."""

    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, dim, patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.conv(x), 2).transpose(1, 2)


class _Transformer(nn.Module):
    """Tokens (+ a cls token) + learned positions -> one pre-norm encoder layer -> readout.

    ``tokens`` maps the input to ``[B, T, D]`` (patches of an image, or an embedding table).
    The readout is the cls token when there is one (a ViT), else the mean over tokens;
    then ``LayerNorm -> Linear``: ``[B, classes]``.
    """

    def __init__(self, tokens: nn.Module, length: int, dim: int, heads: int, classes: int,
                 cls_token: bool):
        super().__init__()
        self.tokens = tokens
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, dim)) if cls_token else None
        self.pos = nn.Parameter(0.02 * torch.randn(1, length + cls_token, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.tokens(x)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.encoder(x + self.pos)
        return self.head(self.norm(x[:, 0] if self.cls is not None else x.mean(dim=1)))


# name: (row label, model, example input; None: too large for a float64 GMN pass in a demo)
MODELS: dict[str, tuple[str, Callable[[], nn.Module], Callable[[], Tensor] | None]] = {
    "mlp": ("MLP 64-32-10", lambda: nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)),
            lambda: torch.randn(4, 64)),
    "cnn": ("CNN + BatchNorm", lambda: nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ), lambda: torch.randn(4, 1, 8, 8)),
    "resnet": ("ResNet (digits)", lambda: _resnet((8, 16), 1, 1, 10, imagenet_stem=False),
               lambda: torch.randn(4, 1, 8, 8)),
    "vit": ("ViT (digits)", lambda: _Transformer(_Patches(1, 32, 2), 16, 32, 2, 10, True),
            lambda: torch.randn(4, 1, 8, 8)),
    "transformer": ("Transformer (seq)", lambda: _Transformer(nn.Embedding(16, 32), 12, 32, 2,
                    2, False), lambda: torch.randint(0, 16, (4, 12))),
    "resnet18": ("ResNet-18", lambda: _resnet((64, 128, 256, 512), 2, 3, 1000, True), None),
}


# ----------------------------------------------------------------------------- the demo
@dataclass
class DemoConfig:
    models: list[str] = option(list(MODELS), "architectures to show", choices=list(MODELS))
    hidden: int = option(32, "GMN width", check=positive)
    layers: int = option(3, "GMN message-passing blocks", check=positive)
    seed: int = option(0, "seed of the models, the permutations and the GMN")
    out: str = option("", "folder to write results.json into (empty: only print the table)")
    overwrite: bool = option(False, "replace the results.json an earlier run wrote in --out")


def _symmetry(pg: ParameterGraph, seed: int) -> dict[str, Tensor]:
    """A non-trivial permutation of every hidden group, heads moved as whole heads."""
    g = torch.Generator().manual_seed(seed)
    moves = {}
    for name, ids in pg.node_groups.items():
        if name in ("input", "output") or name.endswith((".q", ".k", ".v", ".heads")):
            continue
        if ids.numel() < 2 or bool((pg.node_feat[ids, 0] == 2).any()):
            continue  # output neurons are not permutable
        if bool((node_permutation(pg, moves)[ids] != ids).any()):
            continue  # already moved through a residual tie with an earlier group
        moves[name] = torch.randperm(ids.numel(), generator=g)
    for name in [n for n in pg.node_groups if n.endswith(".heads")]:
        heads = pg.node_groups[name].numel()
        moves |= head_moves(pg, name[: -len(".heads")], torch.randperm(heads, generator=g))
    return moves


def _equivariance(cfg: DemoConfig, model: nn.Module, pg: ParameterGraph, inputs: Tensor) -> dict:
    """Max abs changes of the network, the GMN's outputs and its embedding under a symmetry."""
    model = model.double().eval()
    inputs = inputs.double() if inputs.is_floating_point() else inputs
    params = detach(dict(model.named_parameters()))
    grads = {k: torch.randn_like(v) for k, v in params.items()}
    sigma = node_permutation(pg, _symmetry(pg, cfg.seed))
    p2, g2 = permute_parameters(pg, params, sigma), permute_parameters(pg, grads, sigma)
    with torch.no_grad():
        net = (functional_call(model, p2, (inputs,)) - model(inputs)).abs().max().item()
        torch.manual_seed(cfg.seed)
        gmn = GMN(2, 1, hidden=cfg.hidden, layers=cfg.layers).double()
        nn.init.normal_(gmn.edge_out.weight)  # a fresh GMN outputs zeros: make it visible
        out, emb = gmn(pg, params, grads), gmn.embed(pg, params, grads)
        out2, emb2 = gmn(pg, p2, g2), gmn.embed(pg, p2, g2)
        moved = permute_parameters(pg, out, sigma)
        gmn_diff = max((moved[k] - out2[k]).abs().max().item() for k in out)
    return dict(net_diff=net, gmn_diff=gmn_diff, embed_diff=(emb - emb2).abs().max().item())


def demo(cfg: DemoConfig) -> list[dict]:
    """Print (and with ``--out`` write) one row per model; returns the rows."""
    out = persistence.prepare_output(cfg.out, overwrite=cfg.overwrite, writes=["results.json"]
                                     ) if cfg.out else None
    print(f"{'model':<20}{'params':>12}{'nodes':>9}{'edges':>12}{'build s':>9}"
          f"{'net diff':>11}{'GMN diff':>11}{'embed diff':>12}")
    rows = []
    for key in cfg.models:
        label, build_model, make_inputs = MODELS[key]
        torch.manual_seed(cfg.seed)
        model = build_model()
        t = time.perf_counter()
        pg = ParameterGraph.from_module(model)
        row = dict(model=label, params=pg.num_params, nodes=pg.num_nodes, edges=pg.num_edges,
                   build_s=time.perf_counter() - t)
        line = (f"{label:<20}{pg.num_params:>12,}{pg.num_nodes:>9,}{pg.num_edges:>12,}"
                f"{row['build_s']:>9.3f}")
        if make_inputs is not None:
            row |= _equivariance(cfg, model, pg, make_inputs())
            line += f"{row['net_diff']:>11.1e}{row['gmn_diff']:>11.1e}{row['embed_diff']:>12.1e}"
        print(line)
        rows.append(row)
    print("\nnet diff: network output change under the permutation (a true symmetry: ~0);")
    print("GMN diff: GMN(permuted params) vs permuted GMN(params) (equivariance: ~0);")
    print("embed diff: change of the invariant graph embedding (~0). All in float64.")
    if out is not None:
        persistence.write_json(out / "results.json", {"config": asdict(cfg), "rows": rows})
        print(f"wrote {out / 'results.json'}")
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    return cli.run(DemoConfig, demo, argv, prog="python -m graphs.demo", doc=__doc__)


if __name__ == "__main__":
    main()
