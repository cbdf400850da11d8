"""Inner problems for graph metanetworks: offline datasets, architectures and tasks.

The package is self-contained (it imports nothing from ``graphs``, ``lopt``, ``editing`` or
``predict``) and knows nothing of optimisers: a :class:`Task` gives a model factory,
deterministic minibatches, a test set and a loss, all usable under ``torch.func``.
"""

from tasks import architectures
from tasks.architectures import (
    ARCHITECTURES,
    MLP,
    SIREN,
    Autoencoder,
    BasicBlock,
    DigitsCNN,
    ResidualMLP,
    ResNet,
    SequenceTransformer,
    ViT,
    digits_resnet,
    digits_vit,
    resnet18,
    small_vit,
)
from tasks.base import SupervisedTask, Task
from tasks.data import (
    DataSplit,
    load_digits_reconstruction,
    load_digits_split,
    load_image_fitting,
    load_mnist1d,
    load_sequence_task,
    load_synthetic_classification,
    load_tabular,
    load_teacher_student,
    make_sequence_dataset,
)
from tasks.families import (
    FAMILIES,
    CNNFamily,
    MixtureFamily,
    MLPFamily,
    SyntheticMLPFamily,
    TaskFamily,
    TransformerFamily,
    get_family,
    get_task_or_family,
)
from tasks.registry import TASKS, get_task

__all__ = [
    "ARCHITECTURES",
    "FAMILIES",
    "MLP",
    "SIREN",
    "TASKS",
    "Autoencoder",
    "BasicBlock",
    "CNNFamily",
    "DataSplit",
    "DigitsCNN",
    "MLPFamily",
    "MixtureFamily",
    "ResNet",
    "ResidualMLP",
    "SequenceTransformer",
    "SupervisedTask",
    "SyntheticMLPFamily",
    "Task",
    "TaskFamily",
    "TransformerFamily",
    "ViT",
    "architectures",
    "digits_resnet",
    "digits_vit",
    "get_family",
    "get_task",
    "get_task_or_family",
    "load_digits_reconstruction",
    "load_digits_split",
    "load_image_fitting",
    "load_mnist1d",
    "load_sequence_task",
    "load_synthetic_classification",
    "load_tabular",
    "load_teacher_student",
    "make_sequence_dataset",
    "resnet18",
    "small_vit",
]
