import math

import pytest
import torch
from torch import fx, nn

from tasks import architectures as arch


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# name -> (constructor, input shape, input kind, output shape)
CASES = {
    "mlp": (lambda: arch.MLP(64, (32,), 10), (4, 64), (4, 10)),
    "mlp_deep_tanh_layernorm": (
        lambda: arch.MLP(64, (16, 16), 3, "tanh", norm="layer"),
        (4, 64),
        (4, 3),
    ),
    "mlp_gelu_batchnorm": (lambda: arch.MLP(40, (8,), 10, "gelu", "batch"), (4, 40), (4, 10)),
    "residual_mlp": (lambda: arch.ResidualMLP(64, 16, 2, 10), (4, 64), (4, 10)),
    "autoencoder": (lambda: arch.Autoencoder(), (4, 64), (4, 64)),
    "digits_cnn_avg": (lambda: arch.DigitsCNN(), (4, 1, 8, 8), (4, 10)),
    "digits_cnn_flatten": (
        lambda: arch.DigitsCNN((4, 6), 10, None, "silu", pool="flatten"),
        (4, 1, 8, 8),
        (4, 10),
    ),
    "digits_cnn_no_maxpool": (
        lambda: arch.DigitsCNN((4,), 5, pool="flatten", maxpool=False),
        (4, 1, 8, 8),
        (4, 5),
    ),
    "basic_block_identity": (lambda: arch.BasicBlock(4, 4), (2, 4, 8, 8), (2, 4, 8, 8)),
    "basic_block_downsample": (lambda: arch.BasicBlock(4, 8, 2), (2, 4, 8, 8), (2, 8, 4, 4)),
    "digits_resnet": (lambda: arch.digits_resnet(), (4, 1, 8, 8), (4, 10)),
    "resnet_small_stem": (
        lambda: arch.ResNet((1, 1), (4, 8), 3, 7, stem="small"),
        (2, 3, 16, 16),
        (2, 7),
    ),
    "resnet_imagenet_stem": (
        lambda: arch.ResNet((1,), (4,), 3, 7, stem="imagenet"),
        (2, 3, 16, 16),
        (2, 7),
    ),
    "digits_vit": (lambda: arch.digits_vit(), (4, 1, 8, 8), (4, 10)),
    "vit": (
        lambda: arch.ViT(16, 4, 3, dim=16, depth=2, heads=2, mlp_dim=32, num_classes=5),
        (2, 3, 16, 16),
        (2, 5),
    ),
    "sequence_transformer": (
        lambda: arch.SequenceTransformer(16, 12, 16, 2, 1, 2),
        (4, 12),
        (4, 2),
    ),
    "siren": (lambda: arch.SIREN(), (5, 2), (5, 1)),
}


def _input(shape: tuple[int, ...], name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if name == "sequence_transformer":
        return torch.randint(16, shape, generator=g)
    return torch.randn(shape, generator=g)


@pytest.mark.parametrize("name", list(CASES))
def test_forward_shape_and_fx_trace(name):
    make, in_shape, out_shape = CASES[name]
    torch.manual_seed(0)
    model = make().eval()
    x = _input(in_shape, name)
    out = model(x)
    assert out.shape == out_shape
    assert torch.isfinite(out).all()
    traced = fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), out)


@pytest.mark.parametrize("name", list(CASES))
def test_no_parameter_is_shared(name):
    model = CASES[name][0]()
    shared = list(model.named_parameters(remove_duplicate=False))
    assert len(shared) == len(list(model.parameters()))


def test_activation_registry():
    for name, cls in arch.ACTIVATIONS.items():
        assert isinstance(arch.make_activation(name), cls)
    a, b = arch.make_activation("relu"), arch.make_activation("relu")
    assert a is not b
    with pytest.raises(ValueError, match="unknown activation"):
        arch.make_activation("swish2")


def test_mlp_structure():
    model = arch.MLP(64, (32,), 10)
    assert [k for k, _ in model.named_parameters()] == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
    ]
    assert _n_params(model) == 64 * 32 + 32 + 32 * 10 + 10
    assert isinstance(arch.MLP(activation="tanh").acts[0], nn.Tanh)
    assert len(arch.MLP(hidden=(8, 8, 8), norm="batch").norms) == 3
    with pytest.raises(ValueError):
        arch.MLP(norm="group")


def test_digits_cnn_heads():
    avg = arch.DigitsCNN((8, 16), pool="avg")
    flat = arch.DigitsCNN((8, 16), pool="flatten")
    assert avg.classifier.in_features == 16
    assert flat.classifier.in_features == 16 * 2 * 2
    assert any(isinstance(m, nn.BatchNorm2d) for m in avg.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in arch.DigitsCNN(norm=None).modules())
    with pytest.raises(ValueError):
        arch.DigitsCNN((4, 4, 4, 4))  # 8px cannot be max-pooled four times


def test_basic_block_shortcut():
    assert isinstance(arch.BasicBlock(8, 8).downsample, nn.Identity)
    down = arch.BasicBlock(8, 16).downsample
    assert isinstance(down, nn.Sequential) and down[0].kernel_size == (1, 1)
    assert down[0].bias is None
    assert arch.BasicBlock(8, 8, stride=2).downsample[0].stride == (2, 2)


def test_resnet18_matches_torchvision_shape():
    with torch.device("meta"):  # no memory, no init cost
        model = arch.resnet18()
    assert _n_params(model) == 11_689_512
    shapes = {k: tuple(v.shape) for k, v in model.named_parameters()}
    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    assert shapes["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert shapes["layer4.1.conv2.weight"] == (512, 512, 3, 3)
    assert shapes["fc.weight"] == (1000, 512)
    assert "layer1.0.downsample.0.weight" not in shapes
    assert len(shapes) == 62
    fx.symbolic_trace(model)


def test_resnet_sizes():
    assert 1_000 <= _n_params(arch.digits_resnet()) <= 50_000
    out = arch.ResNet((1, 1), (4, 8), 1, 10, stem="small")(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)
    with pytest.raises(ValueError):
        arch.ResNet((1,), (4, 8))


def test_vit_tokens_and_init():
    model = arch.digits_vit()
    assert model.cls_token.shape == (1, 1, 32)
    assert model.pos_embedding.shape == (1, 16 + 1, 32)
    assert 0.005 < float(model.pos_embedding.detach().std()) < 0.05
    assert model.patch_embedding.kernel_size == (2, 2) == model.patch_embedding.stride
    assert 1_000_000 <= _n_params(arch.small_vit()) <= 3_000_000
    with pytest.raises(ValueError):
        arch.ViT(image_size=10, patch_size=4)


def test_vit_output_depends_on_cls_token():
    torch.manual_seed(0)
    model = arch.ViT(8, 4, 1, dim=8, depth=1, heads=2, mlp_dim=16, num_classes=3).eval()
    x = torch.randn(2, 1, 8, 8)
    out = model(x)
    with torch.no_grad():
        model.cls_token.add_(torch.randn(1, 1, 8))  # a constant shift is LayerNorm'ed away
    assert not torch.allclose(model(x), out)


def test_sequence_transformer_mean_pools():
    model = arch.SequenceTransformer(16, 12, 16, 2, 2, 3)
    assert model.pos_embedding.shape == (1, 12, 16)
    assert model.embedding.num_embeddings == 16
    assert len(model.encoder.layers) == 2


def test_siren_names_count_init_and_forward():
    torch.manual_seed(0)
    model = arch.SIREN()
    assert [k for k, _ in model.named_parameters()] == [
        f"layers.{i}.{kind}" for i in range(3) for kind in ("weight", "bias")
    ]
    assert _n_params(model) == 1185
    assert float(model.layers[0].weight.detach().abs().max()) <= 1 / 2
    bound = math.sqrt(6 / 32) / 30
    for layer in model.layers[1:]:
        assert float(layer.weight.detach().abs().max()) <= bound
        assert float(layer.weight.detach().abs().max()) > 0.8 * bound
    x = torch.randn(7, 2)
    h = torch.sin(30 * model.layers[1](torch.sin(30 * model.layers[0](x))))
    torch.testing.assert_close(model(x), model.layers[2](h))
    assert _n_params(arch.SIREN(3, 16, 3, 2)) == 3 * 16 + 16 + 2 * (16 * 16 + 16) + 16 * 2 + 2


def test_architectures_registry_builds_modules():
    for name in ("mlp", "digits_cnn", "digits_resnet", "digits_vit", "siren"):
        assert isinstance(arch.ARCHITECTURES[name](), nn.Module)


def test_autoencoder_is_encoder_then_decoder_with_a_linear_code():
    torch.manual_seed(0)
    model = arch.Autoencoder(64, (32,), 8)
    assert [tuple(p.shape) for p in model.parameters()] == [
        (32, 64), (32,), (8, 32), (8,), (32, 8), (32,), (64, 32), (64,)]
    x = torch.randn(5, 64)
    code = model.encoder(x)
    assert code.shape == (5, 8) and (code < 0).any()  # no activation on the code
    torch.testing.assert_close(model(x), model.decoder(code))
    assert isinstance(arch.ARCHITECTURES["autoencoder"](), arch.Autoencoder)
