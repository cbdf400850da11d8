"""Survey: the parameter graph on architectures people actually train.

Each architecture is built from its library at a small config (no pretrained weights, no
downloads) and its graph recorded from one run on example inputs
(``ParameterGraph.from_module(model, example_inputs=...)``). ``EXPECTED`` records which build
today: a model that builds must round-trip exactly and cover every parameter; one that does
not must be refused with the project's own error (``GraphConstructionError`` and
subclasses) naming the module or operation, never another exception and never a wrong
graph. Small versions of the attention models are checked for symmetries: automorphisms
sampled from the whole automorphism group of the graph leave the network's output unchanged,
and exchanging neurons the graph tells apart changes it. A change either way fails the test: update
``EXPECTED`` (and the "Real architectures" section of docs/graphs.md) when a model starts
building. The numbers in docs/graphs.md come from
``.venv/bin/python -m pytest tests/graphs/test_real_architectures.py -v -p no:cacheprovider``.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

from benchmarks.model_libraries import load
from graphs import (
    GraphConstructionError,
    ParameterGraph,
    UntraceableModuleError,
)
from graphs.features import Activation
from graphs.permutation import node_permutation, permute_state_dict, random_automorphism
from tests.graphs.checks import assert_round_trip, assert_well_formed
from tests.graphs.models import randomize_norms

tv = load("torchvision")  # before timm: see benchmarks/model_libraries.py
timm = load("timm")
hf = load("transformers")

BUILDS, REFUSED = "builds", "refused"


def _tv() -> dict[str, Callable[[], nn.Module]]:
    from torchvision.models import convnext, densenet, efficientnet, swin_transformer

    m = tv.models
    return {
        "resnet18": lambda: m.resnet18(num_classes=10),
        "mobilenet_v2": lambda: m.mobilenet_v2(num_classes=10, width_mult=0.25),
        "mobilenet_v3_small": lambda: m.mobilenet_v3_small(num_classes=10, width_mult=0.25),
        "efficientnet_b0": lambda: efficientnet.EfficientNet(
            efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25,
                                            depth_mult=0.25)[0], 0.2, num_classes=10),
        "convnext_tiny": lambda: convnext.ConvNeXt(
            [convnext.CNBlockConfig(16, 32, 1), convnext.CNBlockConfig(32, None, 1)],
            num_classes=10),
        "vit_b_16": lambda: m.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
            num_classes=10),
        "swin_t": lambda: swin_transformer.SwinTransformer(
            patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2],
            window_size=[4, 4], num_classes=10),
        "shufflenet_v2_x0_5": lambda: m.shufflenet_v2_x0_5(num_classes=10),
        "squeezenet1_0": lambda: m.squeezenet1_0(num_classes=10),
        "densenet121": lambda: densenet.DenseNet(
            growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=10),
        "googlenet": lambda: m.googlenet(num_classes=10, aux_logits=False, init_weights=False),
        "regnet_y_400mf": lambda: m.regnet_y_400mf(num_classes=10),
    }


def _timm() -> dict[str, Callable[[], nn.Module]]:
    def create(name, **kw):
        return lambda: timm.create_model(name, pretrained=False, num_classes=10, **kw)

    # timm's registered configs fix some sizes (a duplicate keyword is an error): only the
    # ones left open are made small
    return {
        "resnet18": create("resnet18"),
        "efficientnet_b0": create("efficientnet_b0"),
        "convnext_atto": create("convnext_atto"),
        "vit_tiny_patch16_224": create("vit_tiny_patch16_224", img_size=32, patch_size=8,
                                       depth=2),
        "mixer_s16_224": create("mixer_s16_224", img_size=32),
        "poolformer_s12": create("poolformer_s12"),
    }


def _hf() -> dict[str, Callable[[], nn.Module]]:
    small = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=64)
    return {
        "gpt2": lambda: hf.GPT2Model(hf.GPT2Config(
            n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32,
            bos_token_id=0, eos_token_id=0)),
        "bert": lambda: hf.BertModel(hf.BertConfig(
            num_hidden_layers=1, max_position_embeddings=32, **small)),
        "llama": lambda: hf.LlamaModel(hf.LlamaConfig(
            num_hidden_layers=1, num_key_value_heads=2, max_position_embeddings=32, **small)),
        "t5": lambda: hf.T5Model(hf.T5Config(
            num_layers=1, num_decoder_layers=1, d_model=32, d_kv=16, d_ff=64, num_heads=2,
            vocab_size=64)),
        "vit": lambda: hf.ViTModel(hf.ViTConfig(
            num_hidden_layers=1, image_size=32, patch_size=8, **small)),
    }


# (library, architecture): expected outcome, and for a refusal the error type and a piece of
# its message that names the module or operation
EXPECTED: dict[tuple[str, str], tuple[str, type[Exception] | None, str]] = {
    ("torchvision", "resnet18"): (BUILDS, None, ""),
    ("torchvision", "mobilenet_v2"): (BUILDS, None, ""),
    ("torchvision", "mobilenet_v3_small"): (BUILDS, None, ""),
    ("torchvision", "efficientnet_b0"): (BUILDS, None, ""),
    ("torchvision", "convnext_tiny"): (BUILDS, None, ""),
    ("torchvision", "vit_b_16"): (BUILDS, None, ""),
    ("torchvision", "swin_t"): (BUILDS, None, ""),
    ("torchvision", "shufflenet_v2_x0_5"): (BUILDS, None, ""),
    ("torchvision", "squeezenet1_0"): (BUILDS, None, ""),
    ("torchvision", "densenet121"): (BUILDS, None, ""),
    ("torchvision", "googlenet"): (BUILDS, None, ""),
    ("torchvision", "regnet_y_400mf"): (BUILDS, None, ""),
    ("timm", "resnet18"): (BUILDS, None, ""),
    ("timm", "efficientnet_b0"): (BUILDS, None, ""),
    ("timm", "convnext_atto"): (BUILDS, None, ""),
    ("timm", "vit_tiny_patch16_224"): (BUILDS, None, ""),
    ("timm", "mixer_s16_224"): (BUILDS, None, ""),
    ("timm", "poolformer_s12"): (BUILDS, None, ""),
    ("transformers", "gpt2"): (BUILDS, None, ""),
    ("transformers", "bert"): (BUILDS, None, ""),
    ("transformers", "llama"): (BUILDS, None, ""),
    ("transformers", "t5"): (BUILDS, None, ""),
    ("transformers", "vit"): (BUILDS, None, ""),
}

_LIBS = {"torchvision": (tv, _tv), "timm": (timm, _timm), "transformers": (hf, _hf)}


def _inputs(library: str, name: str):
    """Example inputs: an image batch of one, or 8 token ids (and decoder ids for T5)."""
    if library != "transformers" or name == "vit":
        return torch.randn(1, 3, 32, 32)
    ids = torch.randint(0, 64, (1, 8))
    return ((ids,), {"decoder_input_ids": ids}) if name == "t5" else ids


@functools.cache
def built(library: str, name: str) -> tuple[nn.Module, ParameterGraph | Exception]:
    """The model (seeded) and its graph, or the error raised building it; once per session."""
    module, builders = _LIBS[library]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = builders()[name]().eval()
    try:
        return model, assert_round_trip(model, _inputs(library, name))
    except GraphConstructionError as e:
        return model, e


def _params(with_expectation: bool = True):
    for (library, name), expected in EXPECTED.items():
        module = _LIBS[library][0]
        marks = pytest.mark.skipif(module is None, reason=f"{library} is not installed")
        args = (library, name, *expected) if with_expectation else (library, name)
        yield pytest.param(*args, id=f"{library}-{name}", marks=marks)


@pytest.mark.parametrize("library, name, expected, error, words", list(_params()))
def test_architecture_builds_or_is_refused_as_recorded(library, name, expected, error, words):
    model, result = built(library, name)  # any non-project exception fails here
    outcome = REFUSED if isinstance(result, Exception) else BUILDS
    assert outcome == expected, (
        f"{library} {name} now {outcome} (recorded: {expected}); "
        f"{result if isinstance(result, Exception) else 'update EXPECTED and docs/graphs.md'}"
    )
    if outcome == BUILDS:  # round trip and coverage checked in built(); the graph is sane
        assert_well_formed(result)
        assert result.num_params == sum(p.numel() for p in model.parameters())
    else:
        assert type(result) is error or (error is GraphConstructionError
                                         and isinstance(result, error)), repr(result)
        assert words in str(result), str(result)


def test_the_survey_covers_every_library_the_issue_names():
    assert {lib for lib, _ in EXPECTED} == set(_LIBS)
    assert sum(e == BUILDS for e, _, _ in EXPECTED.values()) == 23
    assert sum(e == REFUSED for e, _, _ in EXPECTED.values()) == 0


@pytest.mark.skipif(hf is None, reason="transformers is not installed")
def test_symbolic_tracing_of_a_transformers_model_points_to_example_inputs():
    model, _ = built("transformers", "gpt2")
    with pytest.raises(UntraceableModuleError, match="GPT2Model.*example_inputs"):
        ParameterGraph.from_module(model)


def _random_automorphism(model: nn.Module, pg: ParameterGraph, seed: int) -> torch.Tensor:
    """A random permutation of every hidden group: a depthwise convolution's channels move
    with the channels it reads (the group before it), residual partners through their ties."""
    g = torch.Generator().manual_seed(seed)
    moves: dict[str, torch.Tensor] = {}
    previous = None
    for name, ids in pg.node_groups.items():
        if name in ("input", "output") or ids.numel() < 2 or (pg.node_feat[ids, 0] == 2).any():
            previous = None
            continue
        sigma = node_permutation(pg, moves)
        try:
            layer = model.get_submodule(name)
        except AttributeError:  # a group that is not a module (attention heads, ...)
            layer = None
        depthwise = isinstance(layer, nn.Conv2d) and layer.groups == layer.in_channels > 1
        if depthwise and previous is not None:
            # the permutation the group read has taken: its node j now holds node perm[j]
            before = pg.node_groups[previous]
            where = torch.full((pg.num_nodes,), -1, dtype=torch.long)
            where[before] = torch.arange(before.numel())
            moves[name] = where[torch.argsort(sigma)[before]]
        elif not bool((sigma[ids] != ids).any()):
            moves[name] = torch.randperm(ids.numel(), generator=g)
        previous = name
    return node_permutation(pg, moves)  # permute_state_dict checks it is an automorphism


SYMMETRIC = [("torchvision", "resnet18"), ("torchvision", "mobilenet_v2"),
             ("torchvision", "densenet121"), ("torchvision", "convnext_tiny"),
             ("timm", "convnext_atto"), ("timm", "poolformer_s12")]


@pytest.mark.parametrize("library, name", [p for p in _params(False) if p.values in SYMMETRIC])
def test_a_random_automorphism_keeps_the_trained_network(library, name, float64):
    model, pg = built(library, name)
    assert isinstance(pg, ParameterGraph)
    model = randomize_norms(copy.deepcopy(model).double())
    x = torch.randn(4, 3, 32, 32)
    model.train()
    with torch.no_grad():  # BatchNorm running statistics become non-trivial
        model(x * 2 + 1)
    model.eval()
    sigma = _random_automorphism(model, pg, seed=1)
    assert (sigma != torch.arange(pg.num_nodes)).sum() > pg.num_nodes // 4
    state = model.state_dict()
    moved = permute_state_dict(pg, state, sigma)  # strict: raises unless an automorphism
    assert any(not torch.equal(moved[k], state[k]) for k in pg.param_names)
    twin = copy.deepcopy(model)
    twin.load_state_dict(moved)
    with torch.no_grad():
        ref, out = model(x), twin(x)
    assert torch.allclose(out, ref, atol=1e-9, rtol=1e-9), (out - ref).abs().max()


# -- symmetries of the recorded attention models ---------------------------------------
def _small() -> dict[str, tuple[str, Callable[[], nn.Module], object, str]]:
    """Small versions for automorphism sampling: (library, model, inputs, neurons that must
    not be exchanged: the query neurons of an attention layer - a layer's group, or its first
    third for a fused ``qkv`` (``/3``) -, or the token outputs of a token-mixing layer)."""
    img, ids = torch.randn(2, 3, 32, 32), torch.randint(0, 64, (2, 8))
    out = {}
    if tv is not None:
        from torchvision.models import swin_transformer

        out["torchvision-vit"] = ("torchvision", lambda: tv.models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
            num_classes=4), img, "encoder.layers.encoder_layer_0.self_attention.q")
        out["torchvision-swin"] = ("torchvision", lambda: swin_transformer.SwinTransformer(
            patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=[4, 4],
            mlp_ratio=2, num_classes=4), img, "features.1.0.attn.qkv.weight/3")
        out["torchvision-shufflenet"] = ("torchvision", lambda: tv.models.ShuffleNetV2(
            [1, 1, 1], [8, 16, 32, 64, 128], num_classes=4), img, "")
    if timm is not None:
        from timm.models.mlp_mixer import MlpMixer
        from timm.models.vision_transformer import VisionTransformer

        out["timm-mixer"] = ("timm", lambda: MlpMixer(
            num_classes=4, img_size=16, patch_size=4, num_blocks=2, embed_dim=8,
            mlp_ratio=(0.5, 2.0)), img[:, :, :16, :16], "blocks.0.mlp_tokens.fc2")

        out["timm-vit"] = ("timm", lambda: VisionTransformer(
            img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, mlp_ratio=2,
            num_classes=4), img[:, :, :16, :16], "blocks.0.attn.qkv/3")
    if hf is not None:
        hfs = _hf()
        out |= {
            "transformers-gpt2": ("transformers", hfs["gpt2"], (ids,), "h.0.attn.c_attn/3"),
            "transformers-bert": ("transformers", hfs["bert"], (ids,),
                                  "encoder.layer.0.attention.self.query"),
            "transformers-llama": ("transformers", hfs["llama"], (ids,),
                                   "layers.0.self_attn.q_proj"),
            "transformers-t5": ("transformers", hfs["t5"], ((ids,), {"decoder_input_ids": ids}),
                                "encoder.block.0.layer.0.SelfAttention.q"),
            "transformers-vit": ("transformers", hfs["vit"], (img,),
                                 "layers.0.attention.q_proj"),
        }
    return out


def _run(model: nn.Module, inputs) -> torch.Tensor:
    args, kwargs = inputs if isinstance(inputs[0], tuple) else (inputs, {})
    with torch.no_grad():
        out = model(*args, **kwargs) if isinstance(args, tuple) else model(args)
    while not isinstance(out, torch.Tensor):
        out = next(iter(out.values())) if isinstance(out, dict) else out[0]
    return out


def _batch_of_one(inputs):
    if isinstance(inputs, torch.Tensor):
        return inputs[:1]
    if isinstance(inputs[0], tuple):
        return tuple(a[:1] for a in inputs[0]), {k: v[:1] for k, v in inputs[1].items()}
    return tuple(a[:1] for a in inputs)


_SMALL = _small()


@pytest.mark.parametrize("name", list(_SMALL))
def test_sampled_automorphisms_keep_the_function_and_other_swaps_do_not(name, float64):
    library, make, inputs, group = _SMALL[name]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make().double().eval()
    with torch.no_grad():  # no zero-initialised heads, no trivial norms
        for p in model.parameters():
            p.normal_(0, 0.3)
    if isinstance(inputs, torch.Tensor):
        inputs = inputs.double()
    elif not isinstance(inputs[0], tuple):
        inputs = tuple(a.double() if a.is_floating_point() else a for a in inputs)
    pg = ParameterGraph.from_module(model, example_inputs=_batch_of_one(inputs))
    state, ref = model.state_dict(), _run(model, inputs)
    sigma = random_automorphism(pg, torch.Generator().manual_seed(0))
    assert (sigma != torch.arange(pg.num_nodes)).float().mean() > 0.3
    twin = copy.deepcopy(model)
    twin.load_state_dict(permute_state_dict(pg, state, sigma))
    torch.testing.assert_close(_run(twin, inputs), ref, rtol=0, atol=1e-10)
    if not group:
        return
    name, _, parts = group.partition("/")
    ids = pg.node_groups[name]
    ids = ids[: ids.numel() // int(parts or 1)]
    swap = torch.arange(pg.num_nodes)
    swap[ids[0]], swap[ids[-1]] = ids[-1], ids[0]  # different heads, or tokens
    with pytest.raises(ValueError, match="automorphism"):
        permute_state_dict(pg, state, swap)
    twin.load_state_dict(permute_state_dict(pg, state, swap, strict=False))
    assert (_run(twin, inputs) - ref).abs().max() > 1e-6


@pytest.mark.skipif(hf is None, reason="transformers is not installed")
@pytest.mark.parametrize("name, symmetric", [("bert", True), ("llama", False)])
def test_rotary_embeddings_pin_the_dimensions_of_a_head(name, symmetric, float64):
    """Exchanging query / key dimensions 0 and 1 of one head together is a symmetry of
    BERT's attention, not of Llama's: rotary tables treat each dimension differently."""
    torch.manual_seed(0)
    model = _hf()[name]().double().eval()
    ids = torch.randint(0, 64, (2, 8))
    pg = ParameterGraph.from_module(model, example_inputs=ids[:1])
    att = ("encoder.layer.0.attention.self." if name == "bert" else "layers.0.self_attn.")
    q, k = (pg.node_groups[att + ("query" if name == "bert" else "q_proj")],
            pg.node_groups[att + ("key" if name == "bert" else "k_proj")])
    swap = torch.arange(pg.num_nodes)
    for g in (q, k):
        swap[g[0]], swap[g[1]] = g[1], g[0]
    state, ref = model.state_dict(), _run(model, (ids,))
    twin = copy.deepcopy(model)
    if symmetric:
        twin.load_state_dict(permute_state_dict(pg, state, swap))
        torch.testing.assert_close(_run(twin, (ids,)), ref, rtol=0, atol=1e-10)
    else:
        with pytest.raises(ValueError, match="automorphism"):
            permute_state_dict(pg, state, swap)
        twin.load_state_dict(permute_state_dict(pg, state, swap, strict=False))
        assert (_run(twin, (ids,)) - ref).abs().max() > 1e-6


@pytest.mark.skipif(tv is None or timm is None, reason="torchvision or timm is not installed")
def test_the_same_network_written_two_ways_gives_the_same_graph():
    """timm's EfficientNet applies its SiLU inside a BatchNorm subclass and pools activated
    channels; torchvision's writes each step as a module: node features must not differ."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = ParameterGraph.from_module(tv.models.efficientnet_b0(num_classes=10))
        b = ParameterGraph.from_module(timm.create_model("efficientnet_b0", num_classes=10))
    for field in ("node_feat", "edge_index", "edge_feat"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert int((a.node_feat[:, 3] == int(Activation.SILU)).sum()) > 10_000
