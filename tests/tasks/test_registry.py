import pytest
import torch

from tasks.architectures import MLP, SIREN, DigitsCNN, ResNet, SequenceTransformer
from tasks.registry import TASKS, digits_data, get_task

REQUIRED = [
    "digits_mlp32", "digits_mlp64", "digits_mlp_deep", "mnist1d_mlp", "digits_cnn",
    "digits_resnet", "seq_transformer", "siren_image",
]


def test_required_tasks_are_registered():
    assert set(REQUIRED) <= set(TASKS)
    for name in TASKS:
        assert get_task(name).name == name


def test_unknown_task():
    with pytest.raises(KeyError, match="digits_mlp32"):
        get_task("nope")


def test_reference_task():
    task = get_task("digits_mlp32")
    model = task.make_model(0)
    assert isinstance(model, MLP)
    assert [tuple(p.shape) for p in model.parameters()] == [(32, 64), (32,), (10, 32), (10,)]
    x, y = task.batch(0, 0)
    assert x.shape == (128, 64) and y.shape == (128,) and y.dtype == torch.int64


@pytest.mark.parametrize(
    ("name", "cls", "input_shape"),
    [
        ("digits_mlp_deep", MLP, (64,)),
        ("mnist1d_mlp", MLP, (40,)),
        ("digits_cnn", DigitsCNN, (1, 8, 8)),
        ("digits_resnet", ResNet, (1, 8, 8)),
        ("seq_transformer", SequenceTransformer, (12,)),
        ("siren_image", SIREN, (2,)),
    ],
)
def test_task_models_and_inputs(name, cls, input_shape):
    task = get_task(name)
    assert isinstance(task.make_model(0), cls)
    assert tuple(task.batch(0, 0)[0].shape[1:]) == input_shape


def test_digits_data_flatten():
    assert digits_data(0, flatten=True).x_train.shape == (1400, 64)
    assert digits_data(0).x_train.shape == (1400, 1, 8, 8)
