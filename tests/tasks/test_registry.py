import pytest
import torch

from tasks.architectures import MLP, SIREN, Autoencoder, DigitsCNN, ResNet, SequenceTransformer
from tasks.registry import TASKS, digits_data, get_task

REQUIRED = [
    "digits_mlp32", "digits_mlp64", "digits_mlp_deep", "mnist1d_mlp", "digits_cnn",
    "digits_resnet", "seq_transformer", "siren_image", "digits_autoencoder", "breast_cancer_mlp",
    "diabetes_mlp", "teacher_student",
]
# tasks added for the held-out suite: (model class, input shape, target shape, regression)
NEW_TASKS = {
    "digits_autoencoder": (Autoencoder, (64,), (64,), True),
    "breast_cancer_mlp": (MLP, (30,), (), False),
    "diabetes_mlp": (MLP, (10,), (1,), True),
    "teacher_student": (MLP, (16,), (1,), True),
}


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


def _rows(x: torch.Tensor) -> set[tuple]:
    return {tuple(r) for r in x.flatten(1).tolist()}


@pytest.mark.parametrize("name", list(NEW_TASKS))
def test_new_tasks_build_split_disjointly_and_are_seeded(name):
    cls, in_shape, target_shape, regression = NEW_TASKS[name]
    task = get_task(name)
    assert isinstance(task.make_model(0), cls) and (task.num_classes is None) == regression
    x, y = task.batch(0, 0)
    assert tuple(x.shape[1:]) == in_shape and tuple(y.shape[1:]) == target_shape
    (x_train, _), (x_valid, _) = task.pool("train"), task.pool("valid")
    x_test, _ = task.test_data()
    train, valid, test = _rows(x_train), _rows(x_valid), _rows(x_test)
    assert len(valid) == x_valid.shape[0] > 0 and len(test) == x_test.shape[0] > 0
    assert train.isdisjoint(valid) and train.isdisjoint(test) and valid.isdisjoint(test)
    assert _rows(x) <= train  # minibatches come from the train pool only
    a, b = task.make_model(3), task.make_model(3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert torch.equal(task.batch(5, 3)[0], task.batch(5, 3)[0])


@pytest.fixture
def one_thread():
    """Tiny models only pay for thread synchronisation (seconds on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(NEW_TASKS))
def test_new_tasks_adam_lowers_the_test_loss(name, one_thread):
    task = get_task(name)
    model = task.make_model(0)
    x_test, y_test = task.test_data()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(task.loss(model(x_test), y_test))
    for step in range(40):
        x, y = task.batch(step, 0)
        opt.zero_grad()
        task.loss(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        after = float(task.loss(model(x_test), y_test))
    assert after < 0.8 * before
