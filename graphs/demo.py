"""Demo of the core: graphs for several architectures, and a GMN that permutes with them.

``python -m graphs.demo`` builds parameter graphs for an MLP, a CNN with BatchNorm, a ResNet,
a ViT and a sequence transformer, prints their sizes and build times, then permutes hidden
neurons (MLP), channels across residual shortcuts (ResNet) and attention heads (ViT) and
checks in float64 that the network's function is unchanged, the GMN's per-parameter outputs
permute the same way and its graph embedding does not move.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.func import functional_call

from graphs import GMN, ParameterGraph
from graphs.permutation import node_permutation, permute_parameters
from tasks import architectures as arch


def _models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    return {
        "MLP 64-32-10": (arch.MLP(64, (32,), 10), torch.randn(4, 64)),
        "CNN + BatchNorm": (arch.DigitsCNN(), torch.randn(4, 1, 8, 8)),
        "ResNet (digits)": (arch.digits_resnet(), torch.randn(4, 1, 8, 8)),
        "ViT (digits)": (arch.digits_vit(), torch.randn(4, 1, 8, 8)),
        "Transformer (seq)": (arch.SequenceTransformer(), torch.randint(0, 16, (4, 12))),
        "ResNet-18": (arch.resnet18(), None),
    }


def _symmetry(pg: ParameterGraph) -> dict[str, torch.Tensor]:
    """A non-trivial permutation of every hidden group, heads moved as whole heads."""
    g = torch.Generator().manual_seed(0)
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
        prefix = name[: -len(".heads")]
        heads = pg.node_groups[name].numel()
        d = pg.node_groups[f"{prefix}.q"].numel() // heads
        order = torch.randperm(heads, generator=g)
        block = torch.cat([torch.arange(h * d, (h + 1) * d) for h in order])
        moves |= {name: order, f"{prefix}.q": block, f"{prefix}.k": block, f"{prefix}.v": block}
    return moves


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    print(f"{'model':<20}{'params':>12}{'nodes':>9}{'edges':>12}{'build s':>9}"
          f"{'net diff':>11}{'GMN diff':>11}{'embed diff':>12}")  # fmt: skip
    for name, (model, inputs) in _models().items():
        t = time.perf_counter()
        pg = ParameterGraph.from_module(model)
        build = time.perf_counter() - t
        row = f"{name:<20}{pg.num_params:>12,}{pg.num_nodes:>9,}{pg.num_edges:>12,}{build:>9.3f}"
        if inputs is None:  # too large for a float64 GMN pass in a demo
            print(row)
            continue
        model = model.double().eval()
        inputs = inputs.double() if inputs.is_floating_point() else inputs
        params = {k: v.detach() for k, v in model.named_parameters()}
        grads = {k: torch.randn_like(v) for k, v in params.items()}
        sigma = node_permutation(pg, _symmetry(pg))
        p2 = permute_parameters(pg, params, sigma)
        g2 = permute_parameters(pg, grads, sigma)
        with torch.no_grad():
            net = (functional_call(model, p2, (inputs,)) - model(inputs)).abs().max().item()
            torch.manual_seed(0)
            gmn = GMN(2, 1, hidden=32, layers=3).double()
            nn.init.normal_(gmn.edge_out.weight)  # a fresh GMN outputs zeros: make it visible
            out, emb = gmn(pg, params, grads), gmn.embed(pg, params, grads)
            out2, emb2 = gmn(pg, p2, g2), gmn.embed(pg, p2, g2)
            moved = permute_parameters(pg, out, sigma)
            diff = max((moved[k] - out2[k]).abs().max().item() for k in out)
            emb_diff = (emb - emb2).abs().max().item()
        print(f"{row}{net:>11.1e}{diff:>11.1e}{emb_diff:>12.1e}")
    print("\nnet diff: network output change under the permutation (a true symmetry: ~0);")
    print("GMN diff: GMN(permuted params) vs permuted GMN(params) (equivariance: ~0);")
    print("embed diff: change of the invariant graph embedding (~0). All in float64.")


if __name__ == "__main__":
    main()
