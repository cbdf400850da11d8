"""Sequence layers: RNN / LSTM / GRU (hidden units permute across all gates, gates and
directions never) and the transformer decoder (two inputs: the target and the memory)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from graphs import EdgeType, ParameterGraph, UnsupportedModuleError
from graphs.permutation import (
    head_moves,
    node_permutation,
    permute_parameters,
    permute_state_dict,
    random_automorphism,
)
from tests.graphs.checks import assert_round_trip, assert_well_formed
from tests.graphs.test_gmn import assert_equivariant, check_symmetry

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
CONFIGS = {
    "one_layer": dict(),
    "two_layers": dict(num_layers=2),
    "bidirectional": dict(num_layers=2, bidirectional=True),
    "no_bias": dict(bias=False),
    "sequence_first": dict(batch_first=False),
    "relu": dict(nonlinearity="relu"),  # nn.RNN only
    "proj": dict(num_layers=2, bidirectional=True, proj_size=2),  # nn.LSTM only
}


class Classifier(nn.Module):
    """A recurrent layer read at its last step (``out[:, -1]`` or ``out[-1]``) by a head."""

    def __init__(self, cell: str, hidden: int = 5, **kw):
        super().__init__()
        kw.setdefault("batch_first", True)
        self.rnn = CELLS[cell](3, hidden, **kw)
        dirs = 2 if kw.get("bidirectional") else 1
        self.head = nn.Linear((kw.get("proj_size") or hidden) * dirs, 2)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1] if self.rnn.batch_first else out[-1])


def assert_automorphisms_keep_the_function(model: nn.Module, *inputs: Tensor) -> int:
    """Random automorphisms of ``model``'s graph (sampled from the whole group, so a graph
    with a false symmetry fails) applied to its state leave its eval output unchanged.
    Returns how many nodes the samples moved, at most."""
    model.eval()
    pg = ParameterGraph.from_module(model)
    g = torch.Generator().manual_seed(0)
    state, ref, moved = model.state_dict(), model(*inputs), 0
    for _ in range(3):
        sigma = random_automorphism(pg, g)
        twin = copy.deepcopy(model)
        twin.load_state_dict(permute_state_dict(pg, state, sigma))
        assert (twin(*inputs) - ref).abs().max() < 1e-9
        moved = max(moved, int((sigma != torch.arange(pg.num_nodes)).sum()))
    return moved


def cases() -> list:
    return [
        pytest.param(cell, kw, id=f"{cell}-{name}")
        for cell in CELLS
        for name, kw in CONFIGS.items()
        if not (name == "relu" and cell != "rnn") and not (name == "proj" and cell != "lstm")
    ]


def inputs(model: Classifier) -> Tensor:
    return torch.randn(2, 4, 3) if model.rnn.batch_first else torch.randn(4, 2, 3)


def unit_moves(pg: ParameterGraph, model: Classifier, g: torch.Generator) -> dict[str, Tensor]:
    """A random permutation of the units (and projected units) of every layer and direction."""
    moves = {}
    for name, ids in pg.node_groups.items():
        if name.startswith(("rnn.l", "rnn.proj_l")):
            moves[name] = torch.randperm(ids.numel(), generator=g)
    assert len(moves) == model.rnn.num_layers * (1 + model.rnn.bidirectional) * (
        1 + bool(getattr(model.rnn, "proj_size", 0))
    )
    return moves


@pytest.mark.parametrize("cell, kw", cases())
def test_recurrent_layer_round_trips_and_covers_every_parameter(cell, kw, seeded):
    model = Classifier(cell, **kw)
    model(inputs(model))
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    assert pg.param_names == tuple(n for n, _ in model.named_parameters())
    alone = assert_round_trip(model.rnn)  # the root module itself: no trace needed
    assert alone.param_names == tuple(n for n, _ in model.rnn.named_parameters())


@pytest.mark.parametrize("cell, kw", cases())
def test_random_automorphisms_keep_the_function(cell, kw, float64):
    torch.manual_seed(0)
    model = Classifier(cell, **kw)
    x = inputs(model)
    assert assert_automorphisms_keep_the_function(model, x) >= 4
    # every unit permutation is one, and the GMN is equivariant to it
    pg = ParameterGraph.from_module(model)
    assert_equivariant(model, unit_moves(pg, model, torch.Generator().manual_seed(1)), x)


def edges_of(pg: ParameterGraph, name: str) -> tuple[Tensor, Tensor]:
    """``(edge_index [2, n], edge_feat [n, 3])`` of parameter ``name``'s entries, row-major."""
    i = pg.param_names.index(name)
    start = sum(pg.param_numels[:i])
    sl = slice(start, start + pg.param_numels[i])
    return pg.edge_index[:, sl], pg.edge_feat[sl]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_each_gate_block_sits_at_its_own_position(cell):
    rnn = CELLS[cell](3, 4, bidirectional=True)
    pg = ParameterGraph.from_module(rnn)
    gates, hidden = GATES[cell], 4
    kinds = {
        "weight_ih": EdgeType.RNN_INPUT,
        "weight_hh": EdgeType.RNN_HIDDEN,
        "bias_ih": EdgeType.BIAS,
        "bias_hh": EdgeType.RNN_HIDDEN_BIAS,
    }
    for d, sfx in enumerate(["_l0", "_l0_reverse"]):
        units = pg.node_groups[sfx[1:]]
        for kind, etype in kinds.items():
            index, feat = edges_of(pg, kind + sfx)
            rows = gates * hidden
            dst = index[1].reshape(rows, -1)
            pos = feat[:, 2].reshape(rows, -1)
            assert (feat[:, 0] == int(etype)).all()
            for g in range(gates):  # row g * H + j feeds unit j, at position g + 1 (+ G reverse)
                block = slice(g * hidden, (g + 1) * hidden)
                assert (dst[block] == units[:, None]).all()
                assert (pos[block] == d * gates + g + 1).all()
        src = edges_of(pg, "weight_hh" + sfx)[0][0].reshape(gates * hidden, hidden)
        assert (src == units[None, :]).all()  # recurrent columns: the same units


def position_value_multiset(pg: ParameterGraph, params: dict[str, Tensor]) -> Tensor:
    """``(edge type, position, value)`` of every parameter edge, sorted: no node permutation
    changes it, so two parameter sets with different multisets are not related by any."""
    value = pg.flatten_params(params)
    feat = pg.edge_feat[: pg.num_params].double()
    rows = torch.stack([feat[:, 0], feat[:, 2], value], 1)
    order = torch.argsort(rows[:, 2])
    rows = rows[order]
    return rows[torch.argsort(rows[:, 0] * 1000 + rows[:, 1], stable=True)]


def swap_blocks(params: dict[str, Tensor], names, a: int, b: int, size: int) -> dict:
    out = dict(params)
    for n in names:
        t = params[n].clone()
        t[a * size : (a + 1) * size], t[b * size : (b + 1) * size] = (
            params[n][b * size : (b + 1) * size],
            params[n][a * size : (a + 1) * size],
        )
        out[n] = t
    return out


@pytest.mark.parametrize(
    "cell, swap", [("lstm", (0, 1)), ("lstm", (2, 3)), ("gru", (0, 1)), ("gru", (1, 2))]
)
def test_swapping_two_gates_is_no_symmetry(cell, swap, float64):
    torch.manual_seed(0)
    model = Classifier(cell)
    pg = ParameterGraph.from_module(model)
    params = {n: p.detach() for n, p in model.named_parameters()}
    names = [n for n in params if n.startswith("rnn.")]
    swapped = swap_blocks(params, names, *swap, size=5)
    x = inputs(model)
    assert (functional_call(model, swapped, (x,)) - model(x)).abs().max() > 1e-4
    # and no node permutation (automorphism or not) maps one graph onto the other
    assert not torch.equal(
        position_value_multiset(pg, params), position_value_multiset(pg, swapped)
    )
    # a unit permutation does keep the multiset (the check can tell)
    sigma = node_permutation(pg, {"rnn.l0": torch.tensor([4, 0, 3, 1, 2])})
    moved = permute_parameters(pg, params, sigma)
    assert torch.equal(position_value_multiset(pg, params), position_value_multiset(pg, moved))


def test_gru_input_and_recurrent_biases_are_told_apart(float64):
    torch.manual_seed(0)
    model = Classifier("gru")
    pg = ParameterGraph.from_module(model)
    params = {n: p.detach() for n, p in model.named_parameters()}
    swapped = dict(
        params,
        **{"rnn.bias_ih_l0": params["rnn.bias_hh_l0"], "rnn.bias_hh_l0": params["rnn.bias_ih_l0"]},
    )
    x = inputs(model)  # b_hn sits inside the reset gate's product, b_in outside
    assert (functional_call(model, swapped, (x,)) - model(x)).abs().max() > 1e-4
    assert not torch.equal(
        position_value_multiset(pg, params), position_value_multiset(pg, swapped)
    )


def test_directions_are_not_interchangeable(float64):
    torch.manual_seed(0)
    model = Classifier("lstm", num_layers=2, bidirectional=True)
    pg = ParameterGraph.from_module(model)
    output = torch.cat([pg.node_groups["rnn.l1"], pg.node_groups["rnn.l1_reverse"]])
    assert torch.equal(pg.node_groups["rnn"], output)
    # the last layer's forward units exchanged with its reverse units: not an automorphism
    swap = torch.cat([torch.arange(5, 10), torch.arange(5)])
    with pytest.raises(ValueError, match="automorphism"):
        check_symmetry(model, {"rnn": swap}, inputs(model))


# ---------------------------------------------------------------- forward arguments
class LastStates(nn.Module):
    """A head on the final hidden states: ``h_n[-1]``, or both directions' last layer."""

    def __init__(self, cell: str, **kw):
        super().__init__()
        self.rnn = CELLS[cell](3, 5, batch_first=True, **kw)
        self.head = nn.Linear(5 * (2 if kw.get("bidirectional") else 1), 2)
        self.lstm = cell == "lstm"

    def forward(self, x: Tensor) -> Tensor:
        _, state = self.rnn(x)
        h = state[0] if self.lstm else state  # LSTM: (h_n, c_n)
        if self.rnn.bidirectional:
            return self.head(torch.cat([h[-2], h[-1]], dim=1))
        return self.head(h[-1])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize(
    "kw",
    [dict(), dict(num_layers=3), dict(num_layers=2, bidirectional=True)],
    ids=["one", "three_layers", "bidirectional"],
)
def test_a_head_on_the_final_state_reads_the_last_layer(cell, kw, float64):
    torch.manual_seed(0)
    model = LastStates(cell, **kw)
    x = torch.randn(2, 4, 3)
    model(x)
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    last = kw.get("num_layers", 1) - 1
    read = pg.edge_index[0, : pg.num_params][pg.edge_feat[: pg.num_params, 0] == EdgeType.LINEAR]
    want = [pg.node_groups[f"rnn.l{last}"]]
    if kw.get("bidirectional"):
        want.append(pg.node_groups[f"rnn.l{last}_reverse"])
    assert set(read.tolist()) == set(torch.cat(want).tolist())
    assert assert_automorphisms_keep_the_function(model, x) >= 4


class WithState(nn.Module):
    """The initial state is a network input: ``rnn(x, hx)``, with every keyword spelling."""

    def __init__(self, cell: str):
        super().__init__()
        self.rnn = CELLS[cell](3, 5, num_layers=2, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x: Tensor, h0: Tensor, c0: Tensor) -> Tensor:
        hx = (h0, c0) if isinstance(self.rnn, nn.LSTM) else h0
        out, _ = self.rnn(x, hx=hx)
        return self.head(out[:, -1])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_an_initial_state_input_ties_every_unit_to_its_entry(cell, float64):
    torch.manual_seed(0)
    model = WithState(cell)
    x, h0, c0 = torch.randn(2, 4, 3), torch.randn(2, 2, 5), torch.randn(2, 2, 5)
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    inputs_ = pg.node_groups["input"]
    assert inputs_.numel() == 3 + 5 + (5 if cell == "lstm" else 0)
    # unit j of both layers moves with entry j of the state: the input must move too
    perm = torch.tensor([2, 0, 4, 1, 3])
    sigma = node_permutation(pg, {"rnn.l0": perm})
    assert (sigma[pg.node_groups["rnn.l1"]] != pg.node_groups["rnn.l1"]).any()
    assert (sigma[inputs_] != inputs_).sum() == inputs_.numel() - 3  # x's features stay
    with pytest.raises(ValueError, match="automorphism"):  # input nodes have fixed positions
        permute_parameters(pg, dict(model.named_parameters()), sigma)
    moved = permute_parameters(pg, dict(model.named_parameters()), sigma, strict=False)
    ref = model(x, h0, c0)
    assert (functional_call(model, moved, (x, h0, c0)) - ref).abs().max() > 1e-4
    # new unit j is old unit perm[j]: given its initial state, the function is kept
    again = functional_call(model, moved, (x, h0[..., perm], c0[..., perm]))
    assert (again - ref).abs().max() < 1e-12
    # with the state given, no unit permutation is a symmetry: the graph has none left
    assert assert_automorphisms_keep_the_function(model, x, h0, c0) == 0


class Seq2Seq(nn.Module):
    """An encoder's final state starts a decoder: their units permute together."""

    def __init__(self, cell: str, layers: int):
        super().__init__()
        self.enc = CELLS[cell](3, 5, num_layers=layers, batch_first=True)
        self.embed = nn.Linear(3, 4)
        self.dec = CELLS[cell](4, 5, num_layers=layers, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        _, state = self.enc(x)
        out, _ = self.dec(self.embed(x), state)
        return self.head(out[:, -1])


@pytest.mark.parametrize("cell, layers", [("lstm", 1), ("lstm", 2), ("gru", 2)])
def test_an_encoders_state_ties_the_decoders_units(cell, layers, float64):
    torch.manual_seed(0)
    model = Seq2Seq(cell, layers)
    x = torch.randn(2, 4, 3)
    model(x)
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    enc = {f"enc.l{k}": torch.randperm(5) for k in range(layers)}
    sigma = node_permutation(pg, enc)
    for k in range(layers):  # carried to the decoder's layer k by the ties
        dec, ids = pg.node_groups[f"dec.l{k}"], pg.node_groups[f"enc.l{k}"]
        assert torch.equal(sigma[dec] - dec.min(), sigma[ids] - ids.min())
    assert_equivariant(model, enc, x)
    assert assert_automorphisms_keep_the_function(model, x) >= 4
    with pytest.raises(ValueError, match="conflicting"):
        node_permutation(
            pg, {"enc.l0": torch.tensor([1, 0, 2, 3, 4]), "dec.l0": torch.tensor([0, 1, 2, 4, 3])}
        )


def test_a_parameter_as_initial_state_is_refused():
    class Learned(nn.Module):
        def __init__(self):
            super().__init__()
            self.h0 = nn.Parameter(torch.zeros(1, 1, 5))
            self.rnn = nn.GRU(3, 5, batch_first=True)

        def forward(self, x):
            return self.rnn(x, self.h0.expand(-1, x.size(0), -1).contiguous())[0]

    with pytest.raises(UnsupportedModuleError, match="initial state") as err:
        ParameterGraph.from_module(Learned())
    assert err.value.param_names == ["h0"]


class ConvRecurrent(nn.Module):
    """CRNN: conv features ``[B, C, H, W]`` read column by column, ``[B, W, C * H]``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.rnn = nn.GRU(3 * 2, 4, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        f = torch.relu(self.conv(x)).permute(0, 3, 1, 2).flatten(2)
        return self.head(self.rnn(f)[0][:, -1])


def test_a_flattened_input_keeps_both_offsets_and_gates(float64):
    torch.manual_seed(0)
    model = ConvRecurrent()
    x = torch.randn(2, 1, 2, 5)
    model(x)
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    index, feat = edges_of(pg, "rnn.weight_ih_l0")
    src, pos = index[0].reshape(12, 6), feat[:, 2].reshape(12, 6)
    channels = pg.node_groups["conv"]
    assert torch.equal(src[0], channels.repeat_interleave(2))  # feature c * H + h
    for g in range(3):  # gate g, offset h: position g * 2 + h + 1
        assert (pos[4 * g : 4 * (g + 1)] == g * 2 + torch.tensor([1, 2]).repeat(3)).all()
    assert_equivariant(model, {"conv": torch.tensor([2, 0, 1]), "rnn.l0": torch.randperm(4)}, x)
    assert assert_automorphisms_keep_the_function(model, x) >= 4


# -------------------------------------------------------------- transformer decoder
MASK = nn.Transformer.generate_square_subsequent_mask(5)


class Translator(nn.Module):
    """Embedded target and source; an encoder's output is the decoder's memory."""

    def __init__(self, norm_first: bool = False, layers: int = 2, tgt_features: int = 4):
        super().__init__()
        self.src = nn.Linear(3, 8)
        self.encoder = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.tgt = nn.Linear(tgt_features, 8)
        layer = nn.TransformerDecoderLayer(
            8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first
        )
        self.decoder = nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(8))
        self.head = nn.Linear(8, 2)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        memory = self.encoder(self.src(src))
        out = self.decoder(
            self.tgt(tgt), memory, tgt_mask=MASK, tgt_is_causal=True, memory_key_padding_mask=None
        )
        return self.head(out)


class OneInput(Translator):
    """Target and source from one tensor (check_symmetry feeds one)."""

    def __init__(self, norm_first: bool):
        super().__init__(norm_first, tgt_features=3)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x, x)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_decoder_round_trips_with_two_inputs(norm_first, seeded):
    model = Translator(norm_first)
    model.eval()(torch.randn(2, 5, 3), torch.randn(2, 5, 4))
    pg = assert_round_trip(model)
    assert_well_formed(pg)
    # every parameter, in the order forward uses them (post-norm: norm1 before linear1)
    assert sorted(pg.param_names) == sorted(n for n, _ in model.named_parameters())
    assert pg.node_groups["input"].numel() == 3 + 4
    # every layer's cross-attention keys and values read the memory (the encoder's output,
    # its last residual group: linear2's neurons); queries read the decoder's stream
    memory = pg.node_groups["encoder.linear2"]
    for i in range(2):
        index, _ = edges_of(pg, f"decoder.layers.{i}.multihead_attn.in_proj_weight")
        q_src, k_src, v_src = index[0].reshape(3, 8, 8)
        assert (k_src == memory).all() and (v_src == memory).all()
        assert not set(q_src.flatten().tolist()) & set(memory.tolist())


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_heads_and_feed_forward_permute(norm_first, float64):
    torch.manual_seed(0)
    model = OneInput(norm_first)
    pg = ParameterGraph.from_module(model)
    g = torch.Generator().manual_seed(3)
    moves = {}
    for i in range(2):
        for attn in ("self_attn", "multihead_attn"):
            order = torch.randperm(2, generator=g)
            moves |= head_moves(pg, f"decoder.layers.{i}.{attn}", order)
        moves[f"decoder.layers.{i}.linear1"] = torch.randperm(16, generator=g)
    moves["encoder.linear1"] = torch.randperm(16, generator=g)
    moves["src"] = torch.randperm(8, generator=g)  # the memory's neurons
    moves["tgt"] = torch.randperm(8, generator=g)  # the decoder's residual stream
    x = torch.randn(2, 5, 3)
    assert_equivariant(model, moves, x)
    assert assert_automorphisms_keep_the_function(model, x) >= 8
    # a query dimension moved to another head is not a symmetry
    q = torch.arange(8)
    q[[0, 4]] = q[[4, 0]]
    cross = "decoder.layers.0.multihead_attn"
    with pytest.raises(ValueError, match="automorphism"):
        check_symmetry(model, {f"{cross}.q": q, f"{cross}.k": q}, x)


def test_decoder_layer_alone_reads_two_network_inputs(seeded):
    layer = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, tgt, memory, memory_mask=None):
            return self.layer(tgt, memory, memory_key_padding_mask=memory_mask)

    pg = assert_round_trip(Net())
    assert_well_formed(pg)
    ins = pg.node_groups["input"]
    assert ins.numel() == 16  # tgt's 8 features and memory's 8, at distinct positions
    assert pg.node_feat[ins, 2].unique().numel() == 16
