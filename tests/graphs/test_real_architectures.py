"""Survey: the parameter graph on architectures people actually train.

Each architecture is built from its library at a small config (no pretrained weights, no
downloads). ``EXPECTED`` records which build today: a model that builds must round-trip
exactly and cover every parameter; one that does not must be refused with the project's own
error (``GraphConstructionError`` and subclasses) naming the module or operation, never
another exception and never a wrong graph. A change either way fails the test: update
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

from graphs import (
    GraphConstructionError,
    ParameterGraph,
    UnsupportedModuleError,
    UntraceableModuleError,
)
from graphs.errors import ShapeOperationError
from graphs.permutation import node_permutation, permute_state_dict
from tests.graphs.checks import assert_round_trip, assert_well_formed
from tests.graphs.model_libraries import load
from tests.graphs.models import randomize_norms

tv = load("torchvision")  # before timm: see tests/graphs/model_libraries.py
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
    ("torchvision", "vit_b_16"): (REFUSED, ShapeOperationError, "'reshape'"),
    ("torchvision", "swin_t"): (REFUSED, UnsupportedModuleError, "ShiftedWindowAttention"),
    ("torchvision", "shufflenet_v2_x0_5"): (REFUSED, ShapeOperationError, "channel_shuffle"),
    ("torchvision", "squeezenet1_0"): (REFUSED, GraphConstructionError, "flatten"),
    ("torchvision", "densenet121"): (BUILDS, None, ""),
    ("torchvision", "googlenet"): (BUILDS, None, ""),
    ("torchvision", "regnet_y_400mf"): (BUILDS, None, ""),
    ("timm", "resnet18"): (BUILDS, None, ""),
    ("timm", "efficientnet_b0"): (BUILDS, None, ""),
    ("timm", "convnext_atto"): (BUILDS, None, ""),
    ("timm", "vit_tiny_patch16_224"): (REFUSED, ShapeOperationError, "'reshape'"),
    ("timm", "mixer_s16_224"): (REFUSED, ShapeOperationError, "'transpose'"),
    ("timm", "poolformer_s12"): (BUILDS, None, ""),
    ("transformers", "gpt2"): (REFUSED, UntraceableModuleError, "GPT2Model"),
    ("transformers", "bert"): (REFUSED, UntraceableModuleError, "BertModel"),
    ("transformers", "llama"): (REFUSED, UntraceableModuleError, "LlamaModel"),
    ("transformers", "t5"): (REFUSED, UntraceableModuleError, "T5Model"),
    ("transformers", "vit"): (REFUSED, UntraceableModuleError, "ViTModel"),
}

_LIBS = {"torchvision": (tv, _tv), "timm": (timm, _timm), "transformers": (hf, _hf)}


@functools.cache
def built(library: str, name: str) -> tuple[nn.Module, ParameterGraph | Exception]:
    """The model (seeded) and its graph, or the error raised building it; once per session."""
    module, builders = _LIBS[library]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = builders()[name]()
    try:
        return model, assert_round_trip(model)
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
    assert sum(e == BUILDS for e, _, _ in EXPECTED.values()) == 12
    assert sum(e == REFUSED for e, _, _ in EXPECTED.values()) == 11


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
