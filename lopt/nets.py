r"""The networks that read the features: the cheap GMN, the per-edge GMN, or a per-parameter MLP.

* ``"neuron"`` (:class:`graphs.NeuronGMN`): per entry a constant few operations, message
  passing on neurons; reads the entries flat ``[B, C, P]`` and the step features as context.
* ``"gmn"`` (:class:`graphs.GMN`): a ``hidden``-wide state on every edge through every block
  (the net of the first shipped optimizer; its cost is ``O(entries x hidden)``).
* ``"mlp"``: a per-parameter MLP, the ablation without the graph.

The last two are called as ``net(graph, *feature_dicts)`` and return ``{name: [*shape,
out]}``. All start with a zero output head, so a fresh learned optimizer is exactly Adam
(see :mod:`lopt.update`). The per-parameter MLP applies one MLP to every entry's feature
vector independently — the learned optimizer of *learned_optimization* without message
passing — and ignores the graph's structure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from graphs import GMN, NeuronGMN

__all__ = ["NET_KINDS", "PerParameterMLP", "build_net", "net_hparams"]


@dataclass
class PerParameterMLPConfig:
    in_channels: int = 10
    out_channels: int = 2
    hidden: int = 32
    layers: int = 2


class PerParameterMLP(nn.Module):
    """``[..., C] -> [..., out]`` applied to every parameter entry; zero-initialised head."""

    def __init__(self, in_channels: int = 10, out_channels: int = 2, hidden: int = 32,
                 layers: int = 2):
        super().__init__()
        self.config = PerParameterMLPConfig(in_channels, out_channels, hidden, layers)
        dims = [in_channels] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(a, b), nn.SiLU()]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(dims[-1], out_channels)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, graph, *feature_dicts: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if len(feature_dicts) != self.config.in_channels:
            raise ValueError(
                f"PerParameterMLP built for in_channels={self.config.in_channels} got "
                f"{len(feature_dicts)} feature dicts"
            )
        names = list(feature_dicts[0])
        return {
            n: self.head(self.body(torch.stack([f[n] for f in feature_dicts], dim=-1)))
            for n in names
        }

    def hparams(self) -> dict:
        return asdict(self.config)


NET_KINDS = {"neuron": NeuronGMN, "gmn": GMN, "mlp": PerParameterMLP}
"""Net classes by the name meta_train's ``--model`` and checkpoints use."""


def net_hparams(kind: str, update, hidden: int, layers: int, entry_hidden: int = 0) -> dict:
    """The constructor arguments of a fresh net of ``kind`` for the update rule ``update``
    (``entry_hidden``: the neuron net's per-entry hidden width)."""
    if kind == "neuron":
        return dict(in_channels=update.entry_channels, out_channels=update.out_channels,
                    hidden=hidden, layers=layers, context_channels=len(update.step_taus),
                    read_channels=update.read_channels, entry_hidden=entry_hidden)
    return dict(in_channels=update.in_channels, out_channels=update.out_channels,
                hidden=hidden, layers=layers)


def build_net(kind: str, hparams: Mapping) -> nn.Module:
    """Rebuild a net from its kind (``"gmn"`` or ``"mlp"``) and ``hparams()`` dict."""
    if kind not in NET_KINDS:
        raise ValueError(f"unknown learned-optimizer net {kind!r}; known: {sorted(NET_KINDS)}")
    return NET_KINDS[kind](**dict(hparams))
