"""The weight-space editor (editing.editor, editing.baselines, editing.symmetry, exact edits)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

import editing
from common.persistence import PersistenceError
from editing.editor import Editor, EditorConfig, load_editor_file, preact_scales, save_editor
from editing.inr import init_siren_params
from graphs import ParameterGraph
from graphs.permutation import node_permutation, permute_parameters


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _params(n: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    return init_siren_params(torch.arange(n) + 100 * seed)


def _randomize_heads(editor: Editor, seed: int = 0) -> Editor:
    """Make the zero-initialised output heads non-zero so the edit is non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in editor.named_parameters():
            if name.endswith(("edge_out.weight", "head.weight")):
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
            if name.startswith("log_gamma_"):
                p.fill_(math.log(0.3))
            elif name.startswith("gamma_") or name.endswith((".skip", ".shift")):
                p.fill_(0.3)
    return editor


def _perms(batch: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 32, generator=g).argsort(1) for _ in range(2)]


def _assert_equivariant(editor: Editor, params, perms):
    """Editing permuted INRs gives the permuted edits, and the edit is not trivial; returns
    ``(edited, edited_of_permuted)``."""
    edited = editor(params)
    edited_of_permuted = editor(editing.permute_hidden(params, perms))
    for k in params:
        assert not torch.allclose(edited[k], params[k])  # the edit is not trivial
        torch.testing.assert_close(
            edited_of_permuted[k], editing.permute_hidden(edited, perms)[k], atol=1e-10, rtol=0
        )
    return edited, edited_of_permuted


def test_permute_hidden_preserves_render_and_matches_graph_permutation() -> None:
    params = _params(2)
    perms = _perms(2, 1)
    moved = editing.permute_hidden(params, perms)
    torch.testing.assert_close(editing.render(moved, (9, 9)), editing.render(params, (9, 9)))
    # agrees with the core's node permutation of the parameter graph (INR 0)
    pg = ParameterGraph.from_module(editing.SIREN())
    sigma = node_permutation(pg, {"layers.0": perms[0][0], "layers.1": perms[1][0]})
    one = {k: v[0] for k, v in params.items()}
    expected = permute_parameters(pg, one, sigma)
    for k in params:
        torch.testing.assert_close(moved[k][0], expected[k])


@pytest.mark.parametrize("model", ["gmn", "gmn_skip", "gmn_log", "np_nfn", "mlp", "mlp_aug",
                                   "identity"])
def test_fresh_editor_is_identity_and_gamma_init(model: str) -> None:
    skip, log = model == "gmn_skip", model == "gmn_log"
    model = "gmn" if skip or log else model
    cfg = EditorConfig(
        model=model, gmn_hidden=8, gmn_layers=1, mlp_hidden=16, nfn_channels=8, gmn_skip=skip,
        gamma_param="log" if log else "linear",
    )
    editor = Editor(cfg)
    torch.testing.assert_close(editor.gammas(), torch.full((6,), 0.01), rtol=1e-6, atol=0)
    if not log:
        assert torch.equal(editor.gamma_weight, torch.full((3,), 0.01))
        assert torch.equal(editor.gamma_bias, torch.full((3,), 0.01))
    params = _params(2)
    editor.set_scale(params)
    out = editor(params)
    assert list(out) == list(params)
    for k in params:
        torch.testing.assert_close(out[k], params[k], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("skip", "output_scale", "gamma_param", "raw", "context"),
    [(False, "preact", "linear", False, False), (True, "preact", "log", False, True),
     (False, "std", "linear", False, False), (True, "std", "linear", True, False)],
)
def test_gmn_editor_is_permutation_equivariant(
    float64, skip: bool, output_scale: str, gamma_param: str, raw: bool, context: bool
) -> None:
    cfg = EditorConfig(
        gmn_hidden=16, gmn_layers=2, gmn_skip=skip, output_scale=output_scale,
        gamma_param=gamma_param, gmn_raw_values=raw, gmn_context=context,
    )
    editor = _randomize_heads(Editor(cfg)).double()
    params = _params(3)
    editor.set_scale(params)
    edited, edited_of_permuted = _assert_equivariant(editor, params, _perms(3, 2))
    torch.testing.assert_close(
        editing.render(edited_of_permuted, (11, 11)), editing.render(edited, (11, 11)),
        atol=1e-9, rtol=0,
    )


def test_np_nfn_editor_is_permutation_equivariant_and_mixes_rows_columns_layers(float64) -> None:
    editor = Editor(EditorConfig(model="np_nfn", nfn_channels=8, nfn_layers=2)).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a fresh head outputs zeros: give it weights
        for p in editor.metanet.head.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    params = _params(3)
    editor.set_scale(params)
    edited, _ = _assert_equivariant(editor, params, _perms(3, 4))
    # a change in one hidden weight reaches other entries of its row and column, the next
    # layer's column of its neuron, and (through the means) every tensor
    bumped = {k: v.clone() for k, v in params.items()}
    bumped["layers.1.weight"][0, 5, 7] += 1.0
    with torch.no_grad():
        change = {k: (v - edited[k]).abs() for k, v in editor(bumped).items()}
    delta = {k: v[0] for k, v in change.items()}
    assert delta["layers.1.weight"][5, 0] > 0 and delta["layers.1.weight"][0, 7] > 0
    assert delta["layers.2.weight"][0, 5] > 0 and delta["layers.0.bias"].max() > 0
    assert all(float(v[1:].max()) == 0 for v in change.values())  # other INRs untouched


def test_np_nfn_published_form_reads_fourier_features_and_neuron_positions(tmp_path) -> None:
    """The I/O encoding tells the two input coordinates apart; without it NP layers treat them
    as interchangeable. The random Fourier frequencies are saved with the editor."""
    params = _params(2)
    swapped = dict(params, **{"layers.0.weight": params["layers.0.weight"].flip(-1)})
    torch.manual_seed(0)  # the random Fourier frequencies
    for io in (True, False):
        editor = Editor(EditorConfig(model="np_nfn", nfn_channels=8, nfn_layers=1, nfn_io=io))
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():  # a fresh head outputs zeros: give it weights
            for p in editor.metanet.head.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        assert editor.metanet.frequencies.shape == (128,)
        with torch.no_grad():  # the metanet itself: the edit scales its output down a lot
            plain, turned = editor.metanet(params), editor.metanet(swapped)
        size = float(plain["layers.0.weight"].abs().max())
        gap = float((turned["layers.0.weight"].flip(-1) - plain["layers.0.weight"]).abs().max())
        assert size > 1e-3
        assert (gap > 1e-2 * size) if io else (gap < 1e-5 * size), (io, gap, size)
    editor.set_scale(params)
    # the Fourier features read raw values: how the editor normalises its input is undone
    s = torch.rand(6, generator=torch.Generator().manual_seed(1)) + 0.5
    with torch.no_grad():
        once = editor.metanet({k: v / s[i] for i, (k, v) in enumerate(params.items())}, s)
        twice = editor.metanet({k: v / (2 * s[i]) for i, (k, v) in enumerate(params.items())},
                               2 * s)
    for k, v in once.items():
        torch.testing.assert_close(twice[k], v)
    save_editor(editor, tmp_path / "nfn")
    loaded = load_editor_file(tmp_path / "nfn")
    assert torch.equal(loaded.metanet.frequencies, editor.metanet.frequencies)
    for k, v in editor(params).items():
        torch.testing.assert_close(loaded(params)[k], v)
    raw = Editor(EditorConfig(model="np_nfn", nfn_channels=8, nfn_layers=1, nfn_fourier=0))
    assert raw.metanet.body[0].w_self[0].in_features == 1 + 7
    with pytest.raises(ValueError, match="nfn_fourier"):
        EditorConfig(model="np_nfn", nfn_fourier=-1)


def test_a_last_layer_skip_moves_only_the_output_layer() -> None:
    params = _params(2)
    editor = Editor(EditorConfig(gmn_hidden=8, gmn_layers=1, gmn_skip_layers="last"))
    with torch.no_grad():
        editor.metanet.skip.fill_(1.0)
        editor.metanet.shift.fill_(0.5)
    with torch.no_grad():
        out = editor.metanet(params)  # the GMN's own head is zero: only the skip acts
    last = list(params)[-2:]
    for k, v in out.items():
        if k in last:
            torch.testing.assert_close(v, params[k] + 0.5)
        else:
            assert float(v.abs().max()) == 0.0, k
    assert "skip_mask" not in editor.state_dict() and "metanet.skip_mask" not in \
        editor.state_dict()
    with pytest.raises(ValueError, match="gmn_skip_layers"):
        EditorConfig(gmn_skip_layers="first")


def test_a_raw_values_gmn_sees_each_tensors_own_scale() -> None:
    """Rescaling one tensor of every INR changes the normalised inputs not at all, so only a
    GMN with the raw-values channel can tell."""
    params = _params(2)
    bigger = dict(params, **{"layers.1.weight": 3 * params["layers.1.weight"]})
    for raw in (False, True):
        editor = _randomize_heads(Editor(EditorConfig(gmn_hidden=8, gmn_layers=1,
                                                      gmn_raw_values=raw)))
        outs = []
        for p in (params, bigger):
            editor.set_scale(p)
            with torch.no_grad():
                normed = {k: v / editor.scale[i] for i, (k, v) in enumerate(p.items())}
                outs.append(editor.metanet(normed, editor.scale) if raw else
                            editor.metanet(normed))
        gap = max(float((a - b).abs().max()) for a, b in zip(outs[0].values(), outs[1].values()))
        assert (gap > 1e-4) if raw else (gap < 1e-5), (raw, gap)
    with pytest.raises(ValueError, match="input scale"):
        editor.metanet(params)
    wide = Editor(EditorConfig(gmn_hidden=8, gmn_layers=1, gmn_value_freqs=10)).metanet.gmn
    assert wide.values.freqs.numel() == 10 and wide.edge_in.in_features == 2 * 16 + 21
    with pytest.raises(ValueError, match="gmn_value_freqs"):
        EditorConfig(gmn_value_freqs=0)


def test_output_scales() -> None:
    """preact: u = 1/(w0 sqrt(fan_in)), 1/w0 for sine layers; 1/sqrt(fan_in), 1 for the last."""
    u = preact_scales((2, 32, 32, 1), 30.0)
    expected = [1 / (30 * 2**0.5), 1 / 30, 1 / (30 * 32**0.5), 1 / 30, 32**-0.5, 1.0]
    torch.testing.assert_close(u, torch.tensor(expected))
    params = _params(4)
    # the edit is theta + gamma * u * f: with f = 1 everywhere, every entry moves by gamma * u
    for output_scale in ("preact", "std"):
        editor = Editor(EditorConfig(model="identity", output_scale=output_scale))
        editor.set_scale(params)
        editor.metanet.forward = lambda p: {k: torch.ones_like(v) for k, v in p.items()}
        moved = editor(params)
        want = u if output_scale == "preact" else editor.scale
        for i, k in enumerate(params):
            torch.testing.assert_close(moved[k] - params[k], 0.01 * want[i].expand_as(params[k]))


def test_old_editor_files_load_with_their_behaviour(tmp_path) -> None:
    """Editors saved before ``output_scale`` / ``gamma_param`` / ``gmn_skip`` existed keep
    their behaviour (``u = s``, linear gammas, no skip)."""
    cfg = EditorConfig(gmn_hidden=8, gmn_layers=1, output_scale="std", gmn_skip=False)
    editor = _randomize_heads(Editor(cfg))
    params = _params(2)
    editor.set_scale(params)
    save_editor(editor, tmp_path / "old")
    info = json.loads((tmp_path / "old.json").read_text())
    for key in ("output_scale", "gamma_param", "gmn_skip", "nfn_fourier", "nfn_io",
                "gmn_skip_layers"):
        del info["config"][key]
    (tmp_path / "old.json").write_text(json.dumps(info))
    loaded = load_editor_file(tmp_path / "old")
    assert loaded.config.output_scale == "std" and loaded.config.gamma_param == "linear"
    assert loaded.config.nfn_fourier == 0 and not loaded.config.nfn_io  # NP-NFN before them
    assert loaded.config.gmn_skip_layers == "all"
    for k, v in editor(params).items():
        torch.testing.assert_close(loaded(params)[k], v)


def test_mlp_editor_is_not_equivariant(float64) -> None:
    """Sensitivity: the flat-weights MLP baseline sees the arbitrary neuron order."""
    editor = _randomize_heads(Editor(EditorConfig(model="mlp", mlp_hidden=32))).double()
    params = _params(2)
    editor.set_scale(params)
    perms = _perms(2, 3)
    a = editing.render(editor(editing.permute_hidden(params, perms)), (11, 11))
    b = editing.render(editor(params), (11, 11))
    assert (a - b).abs().max() > 1e-4


def test_exact_invert_solution() -> None:
    params = _params(4)
    img = editing.render(params, (28, 28))
    inverted = editing.render(editing.invert_params(params), (28, 28))
    torch.testing.assert_close(inverted, 1.0 - img, atol=1e-6, rtol=0)
    torch.testing.assert_close(inverted, editing.EDITS["invert"](img), atol=1e-6, rtol=0)


def test_editor_accepts_single_inr_and_rejects_bad_inputs() -> None:
    editor = _randomize_heads(Editor(EditorConfig(gmn_hidden=8, gmn_layers=1)))
    params = _params(2)
    single = {k: v[1] for k, v in params.items()}
    out = editor(single)
    for k in params:
        torch.testing.assert_close(out[k], editor(params)[k][1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="layers.1.weight"):
        editor({**params, "layers.1.weight": torch.zeros(2, 16, 32)})
    with pytest.raises(KeyError, match="missing"):
        editor({k: v for k, v in params.items() if k != "layers.2.bias"})
    with pytest.raises(ValueError, match="unknown editor model"):
        EditorConfig(model="transformer")


def test_editor_keeps_the_input_dtype_and_a_nan_inr_to_itself() -> None:
    editor = _randomize_heads(Editor(EditorConfig(gmn_hidden=8, gmn_layers=1)))
    params = _params(3)
    out32 = editor(params)
    out64 = editor({k: v.double() for k, v in params.items()})
    for k in params:
        assert out64[k].dtype == torch.float64
        torch.testing.assert_close(out64[k].float(), out32[k], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="same floating dtype"):
        editor({**params, "layers.0.bias": params["layers.0.bias"].double()})
    broken = {k: v.clone() for k, v in params.items()}
    broken["layers.1.weight"][0, 3, 4] = float("nan")
    out = editor(broken)  # the GMN mixes within one INR's graph only
    assert all(bool(torch.isfinite(v[1:]).all()) for v in out.values())
    assert not bool(torch.isfinite(out["layers.1.weight"][0]).all())


def test_save_and_load_round_trip(tmp_path) -> None:
    editor = _randomize_heads(Editor(EditorConfig(gmn_hidden=8, gmn_layers=1)))
    params = _params(2)
    editor.set_scale(params)
    save_editor(editor, tmp_path / "ed", {"edit": "blur"})
    loaded = load_editor_file(tmp_path / "ed.safetensors")
    assert loaded.config == editor.config and loaded.info["edit"] == "blur"
    for k, v in editor(params).items():
        torch.testing.assert_close(loaded(params)[k], v)
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))


# ----------------------------------------------------------------------------- damaged files
def _saved(tmp_path) -> tuple[Editor, dict]:
    editor = _randomize_heads(Editor(EditorConfig(gmn_hidden=8, gmn_layers=1)))
    save_editor(editor, tmp_path / "ed", {"edit": "blur"})
    return editor, json.loads((tmp_path / "ed.json").read_text())


def test_save_writes_both_files_at_once(tmp_path) -> None:
    _saved(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ed.json", "ed.safetensors"]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("model", "transformer", ["ed.json", "transformer"]),
        ("gmn_hidden", "wide", ["ed.json", "'gmn_hidden'"]),
        ("gmn_layers", 0, ["ed.json", "gmn_layers"]),
        ("widths", [2, 32, "x", 1], ["ed.json", "'widths'"]),
        ("widths", [3, 32, 1], ["ed.json", "widths"]),
        ("w0", -1.0, ["ed.json", "w0"]),
        ("gmn_skip", "yes", ["ed.json", "'gmn_skip'"]),
        ("output_scale", "max", ["ed.json", "output_scale"]),
        ("gmn_hidden", 16, ["ed.safetensors", "shape"]),  # the weights are for width 8
        ("model", "mlp", ["ed.safetensors", "missing"]),
    ],
)
def test_load_refuses_a_config_the_code_does_not_accept(tmp_path, field, value, words) -> None:
    _, info = _saved(tmp_path)
    info["config"][field] = value
    (tmp_path / "ed.json").write_text(json.dumps(info))
    with pytest.raises(PersistenceError) as err:
        load_editor_file(tmp_path / "ed")
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_load_refuses_damaged_or_nonfinite_weights(tmp_path) -> None:
    editor, _ = _saved(tmp_path)
    weights = tmp_path / "ed.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # a truncated copy
    with pytest.raises(PersistenceError, match="ed.safetensors"):
        load_editor_file(tmp_path / "ed")
    tensors = {k: v.clone() for k, v in editor.state_dict().items()}
    tensors["gamma_weight"][0] = float("nan")
    save_file(tensors, str(weights))
    with pytest.raises(PersistenceError, match="ed.safetensors.*gamma_weight.*non-finite"):
        load_editor_file(tmp_path / "ed")
    del tensors["gamma_weight"]
    save_file({**tensors, "gamma_weights": torch.zeros(3)}, str(weights))
    with pytest.raises(PersistenceError, match="ed.safetensors.*gamma_weight"):
        load_editor_file(tmp_path / "ed")
    (tmp_path / "ed.json").write_text("{not json")
    with pytest.raises(PersistenceError, match="ed.json"):
        load_editor_file(tmp_path / "ed")
    (tmp_path / "ed.json").unlink()
    with pytest.raises(PersistenceError, match="ed.json"):
        load_editor_file(tmp_path / "ed")
