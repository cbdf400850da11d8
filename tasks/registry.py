"""Named inner tasks: ``TASKS[name]()`` / ``get_task(name)`` build a :class:`~tasks.base.Task`.

=====================  ==========================================  =================  =====
name                   model                                       data               batch
=====================  ==========================================  =================  =====
digits_mlp32           MLP 64-32-10 ReLU (the reference task)      digits [B, 64]     128
digits_mlp64           MLP 64-64-10 ReLU                           digits [B, 64]     128
digits_mlp_deep        MLP 64-32-32-32-10 ReLU                     digits [B, 64]     128
digits_residual_mlp    ResidualMLP 64 -> 2 x 32 -> 10              digits [B, 64]     128
mnist1d_mlp            MLP 40-64-10 ReLU                           mnist1d [B, 40]    128
digits_cnn             DigitsCNN (8, 16), BatchNorm, avg-pool      digits [B,1,8,8]   128
digits_resnet          ResNet, small stem, widths (8, 16)          digits [B,1,8,8]   128
digits_vit             ViT patch 2, dim 32, depth 1                digits [B,1,8,8]   128
seq_transformer        SequenceTransformer dim 32, depth 1         tokens [B, 12]     128
siren_image            SIREN 2-32-32-1                             28x28 digit grid   full
digits_autoencoder     Autoencoder 64-32-8-32-64 ReLU, MSE         digits [B, 64]     128
breast_cancer_mlp      MLP 30-32-2 ReLU                            table [B, 30]      32
diabetes_mlp           MLP 10-32-1 ReLU, MSE                       table [B, 10]      32
teacher_student        MLP 16-64-64-1 ReLU, MSE                    Gaussian [B, 16]   128
=====================  ==========================================  =================  =====

Every task but ``siren_image`` holds out the last 20 % of its train set as validation
examples (``task.pool("valid")``), never trained on. The regression tasks (MSE) have
standardised targets (``diabetes_mlp``, ``teacher_student``: train variance 1, so
``regression_loss_clip`` is 2) or pixels in ``[0, 1]`` (``digits_autoencoder``).
``breast_cancer_mlp`` and ``diabetes_mlp`` use scikit-learn's bundled tables
(:func:`~tasks.data.load_tabular`; 364 and 283 training rows, hence the small batches,
so that a run takes more than a few steps to overfit); ``teacher_student`` regresses onto a
fixed random tanh MLP 16-32-32-1 (:func:`~tasks.data.load_teacher_student`), so the
student's architecture differs from the teacher's.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from tasks import architectures as arch
from tasks.base import SupervisedTask, Task
from tasks.data import (
    DataSplit,
    load_digits_reconstruction,
    load_digits_split,
    load_image_fitting,
    load_mnist1d,
    load_sequence_task,
    load_tabular,
    load_teacher_student,
)

__all__ = ["TASKS", "digits_data", "get_task"]


def digits_data(seed: int = 0, flatten: bool = False) -> DataSplit:
    """8x8 digits split by ``seed``: images ``[N, 1, 8, 8]`` or, if ``flatten``, ``[N, 64]``."""
    data = load_digits_split(seed)
    return data.flatten_inputs() if flatten else data


_DIGITS_FLAT = partial(digits_data, 0, True)
_DIGITS_IMAGES = partial(digits_data, 0, False)


def _digits_mlp(name: str, hidden: tuple[int, ...]) -> Callable[[], Task]:
    return partial(SupervisedTask, name, partial(arch.MLP, 64, hidden, 10, "relu"), _DIGITS_FLAT)


def _digits_images(name: str, model_fn: Callable[[], nn.Module]) -> Callable[[], Task]:
    return partial(SupervisedTask, name, model_fn, _DIGITS_IMAGES)


TASKS: dict[str, Callable[[], Task]] = {
    "digits_mlp32": _digits_mlp("digits_mlp32", (32,)),
    "digits_mlp64": _digits_mlp("digits_mlp64", (64,)),
    "digits_mlp_deep": _digits_mlp("digits_mlp_deep", (32, 32, 32)),
    "digits_residual_mlp": partial(
        SupervisedTask, "digits_residual_mlp", partial(arch.ResidualMLP, 64, 32, 2, 10),
        _DIGITS_FLAT,
    ),
    "mnist1d_mlp": partial(
        SupervisedTask, "mnist1d_mlp", partial(arch.MLP, 40, (64,), 10, "relu"), load_mnist1d
    ),
    "digits_cnn": _digits_images("digits_cnn", partial(arch.DigitsCNN, (8, 16), 10, "batch")),
    "digits_resnet": _digits_images("digits_resnet", arch.digits_resnet),
    "digits_vit": _digits_images("digits_vit", arch.digits_vit),
    "seq_transformer": partial(
        SupervisedTask, "seq_transformer",
        partial(arch.SequenceTransformer, 16, 12, 32, 2, 1, 2), load_sequence_task,
        num_classes=2,
    ),
    "siren_image": partial(
        SupervisedTask, "siren_image", arch.SIREN, load_image_fitting,
        batch_size=None, num_classes=None, valid_fraction=0.0,
    ),
    "digits_autoencoder": partial(
        SupervisedTask, "digits_autoencoder", partial(arch.Autoencoder, 64, (32,), 8, "relu"),
        load_digits_reconstruction, num_classes=None,
    ),
    "breast_cancer_mlp": partial(
        SupervisedTask, "breast_cancer_mlp", partial(arch.MLP, 30, (32,), 2, "relu"),
        partial(load_tabular, "breast_cancer"), batch_size=32, num_classes=2,
    ),
    "diabetes_mlp": partial(
        SupervisedTask, "diabetes_mlp", partial(arch.MLP, 10, (32,), 1, "relu"),
        partial(load_tabular, "diabetes"), batch_size=32, num_classes=None,
        regression_loss_clip=2.0,
    ),
    "teacher_student": partial(
        SupervisedTask, "teacher_student", partial(arch.MLP, 16, (64, 64), 1, "relu"),
        load_teacher_student, num_classes=None, regression_loss_clip=2.0,
    ),
}
"""Task constructors by name. Each call builds a new (cheap, immutable) task object."""


def get_task(name: str) -> Task:
    """Build the named task; raises ``KeyError`` listing the known names."""
    try:
        factory = TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}") from None
    return factory()
