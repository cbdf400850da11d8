"""The weight-space editor (editing.editor, editing.baselines, editing.symmetry, exact edits)."""

from __future__ import annotations

import pytest
import torch

import editing
from editing.editor import Editor, EditorConfig, load_editor_file, save_editor
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
            if name.startswith("gamma_") or name.endswith(".skip"):
                p.fill_(0.3)
    return editor


def _perms(batch: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 32, generator=g).argsort(1) for _ in range(2)]


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


@pytest.mark.parametrize("model", ["gmn", "gmn_skip", "mlp", "mlp_aug", "identity"])
def test_fresh_editor_is_identity_and_gamma_init(model: str) -> None:
    skip = model == "gmn_skip"
    model = "gmn" if skip else model
    cfg = EditorConfig(model=model, gmn_hidden=8, gmn_layers=1, mlp_hidden=16, gmn_skip=skip)
    editor = Editor(cfg)
    assert torch.equal(editor.gamma_weight, torch.full((3,), 0.01))
    assert torch.equal(editor.gamma_bias, torch.full((3,), 0.01))
    params = _params(2)
    editor.set_scale(params)
    out = editor(params)
    assert list(out) == list(params)
    for k in params:
        torch.testing.assert_close(out[k], params[k], rtol=0, atol=0)


@pytest.mark.parametrize("skip", [False, True])
def test_gmn_editor_is_permutation_equivariant(float64, skip: bool) -> None:
    cfg = EditorConfig(gmn_hidden=16, gmn_layers=2, gmn_skip=skip)
    editor = _randomize_heads(Editor(cfg)).double()
    params = _params(3)
    editor.set_scale(params)
    perms = _perms(3, 2)
    edited = editor(params)
    edited_of_permuted = editor(editing.permute_hidden(params, perms))
    for k in params:
        assert not torch.allclose(edited[k], params[k])  # the edit is not trivial
        torch.testing.assert_close(
            edited_of_permuted[k], editing.permute_hidden(edited, perms)[k], atol=1e-10, rtol=0
        )
    torch.testing.assert_close(
        editing.render(edited_of_permuted, (11, 11)), editing.render(edited, (11, 11)),
        atol=1e-9, rtol=0,
    )  # fmt: skip


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
