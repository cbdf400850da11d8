from importlib import resources

import pytest
import torch
from torch import nn

from predict import UnreadableNetworkError, load_predictor
from predict.architectures import ZooCNN, ZooMLP
from tasks import digits_resnet, digits_vit


def _shipped(name: str) -> bool:
    return (resources.files("predict") / "weights" / f"{name}.safetensors").is_file()


@pytest.mark.skipif(not _shipped("cnn"), reason="cnn predictor not shipped yet")
def test_cnn_predictor_reads_unseen_widths():
    predictor = load_predictor("cnn")
    for module in (ZooCNN((8, 8)), ZooCNN((5, 7, 9, 6), activation="gelu")):
        acc = predictor(module)
        assert isinstance(acc, float) and 0.0 <= acc <= 1.0


@pytest.mark.skipif(not _shipped("diverse"), reason="diverse predictor not shipped yet")
def test_diverse_predictor_reads_mixed_architectures():
    predictor = load_predictor("diverse")
    torch.manual_seed(0)
    for module in (ZooMLP((24,)), digits_resnet(widths=(6, 6)), digits_vit(depth=1)):
        acc = predictor(module)
        assert isinstance(acc, float) and 0.0 <= acc <= 1.0


@pytest.mark.skipif(not _shipped("cnn"), reason="cnn predictor not shipped yet")
def test_unreadable_modules_raise_clearly():
    predictor = load_predictor("cnn")
    with pytest.raises(UnreadableNetworkError, match="parameter graph"):
        predictor(nn.LSTM(3, 4))
    with pytest.raises(UnreadableNetworkError, match="digit images"):
        predictor(nn.Sequential(nn.Linear(3, 4)))  # cannot read [B, 1, 8, 8]


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown predictor"):
        load_predictor("imagenet")
