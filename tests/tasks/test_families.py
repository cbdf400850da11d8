import pytest
import torch

from tasks.architectures import MLP, DigitsCNN, SequenceTransformer
from tasks.base import Task
from tasks.families import (
    FAMILIES,
    CNNFamily,
    MixtureFamily,
    MLPFamily,
    SyntheticMLPFamily,
    TransformerFamily,
    get_family,
)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_sampling_is_deterministic_and_diverse(name):
    family = get_family(name)
    a, b = family.sample(3), family.sample(3)
    assert isinstance(a, Task) and a.name == b.name and a.name.startswith(name + "/")
    pa, pb = a.make_model(0).state_dict(), b.make_model(0).state_dict()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    names = {family.sample(s).name for s in range(20)}
    assert len(names) >= 5


def test_mlp_family_draws_from_its_options():
    family = MLPFamily("f", widths=(16, 64), depths=(1, 3), activations=("tanh",))
    for seed in range(10):
        task = family.sample(seed)
        model = task.make_model(0)
        assert isinstance(model, MLP)
        hidden = [layer.out_features for layer in model.layers[:-1]]
        assert len(hidden) in (1, 3) and set(hidden) <= {16, 64} and len(set(hidden)) == 1
        assert all(isinstance(act, torch.nn.Tanh) for act in model.acts)
        x, y = task.batch(0, seed)
        assert model(x).shape == (128, 10)


def test_cnn_family_models_run():
    family = CNNFamily("c")
    for seed in range(5):
        task = family.sample(seed)
        model = task.make_model(seed)
        assert isinstance(model, DigitsCNN)
        x, y = task.batch(0, seed)
        assert task.loss(model(x), y).ndim == 0


def test_transformer_family_draws_from_its_options():
    family = TransformerFamily("t", dims=(8,), heads=(2,), depths=(1, 2), data_seeds=(5,))
    depths = set()
    for seed in range(8):
        task = family.sample(seed)
        model = task.make_model(0)
        assert isinstance(model, SequenceTransformer) and model.head.in_features == 8
        depths.add(len(model.encoder.layers))
        x, y = task.batch(0, seed)
        assert x.dtype == torch.long and model(x).shape == (128, 2)
        assert task.loss(model(x), y).ndim == 0
    assert depths == {1, 2}
    with pytest.raises(ValueError, match="divisible"):
        TransformerFamily("t", dims=(8, 6), heads=(4,))


def test_mixture_draws_every_member_and_prefixes_names():
    mix = MixtureFamily("mix", (MLPFamily("a"), CNNFamily("b"), TransformerFamily("c")))
    kinds = {mix.sample(s).name.split("/")[1] for s in range(30)}
    assert kinds == {"a", "b", "c"}
    task = mix.sample(7)
    assert task.name.startswith("mix/") and mix.sample(7).name == task.name
    member = task.name.split("/")[1]
    assert type(task.make_model(0)) is {"a": MLP, "b": DigitsCNN, "c": SequenceTransformer}[member]
    with pytest.raises(ValueError, match="at least one"):
        MixtureFamily("empty", ())
    many = mix.sample_many(7, seed=3)  # stratified: the members in turn
    assert [t.name.split("/")[1] for t in many] == ["a", "b", "c", "a", "b", "c", "a"]
    assert many[0].name != many[3].name and [t.name for t in mix.sample_many(7, 3)] == [
        t.name for t in many
    ]


def test_small_mix_keeps_the_benchmark_architectures_held_out():
    mix = get_family("digits_seq_small_mix")
    for seed in range(60):
        model = mix.sample(seed).make_model(0)
        if isinstance(model, DigitsCNN):
            assert model.classifier.in_features in (4, 8)  # benchmark CNN ends with 16
        if isinstance(model, SequenceTransformer):
            assert model.head.in_features < 32  # benchmark transformer has width 32
        if isinstance(model, MLP):
            assert len(model.layers) <= 3 and model.layers[0].out_features <= 32


def test_data_seed_changes_the_data():
    family = MLPFamily("f", widths=(16,), depths=(1,), activations=("relu",))
    by_seed = {}
    for seed in range(20):
        task = family.sample(seed)
        by_seed.setdefault(task.name, task)
    assert len(by_seed) >= 2
    t1, t2 = list(by_seed.values())[:2]
    assert not torch.equal(t1.test_data()[1], t2.test_data()[1])


def test_sample_many_draws_independent_tasks():
    family = MLPFamily("f")
    names = [t.name for t in family.sample_many(12, seed=0)]
    assert len(set(names)) >= 5 and names == [t.name for t in family.sample_many(12, seed=0)]
    assert names != [t.name for t in family.sample_many(12, seed=1)]


def test_unknown_family():
    with pytest.raises(KeyError):
        get_family("nope")


def test_get_task_or_family_resolves_both_and_names_both_when_unknown():
    from tasks import TaskFamily, get_task_or_family

    assert isinstance(get_task_or_family("digits_mlp32"), Task)
    assert isinstance(get_task_or_family("digits_seq_small_mix"), TaskFamily)
    with pytest.raises(KeyError, match="tasks: .*digits_mlp32.*families: .*digits_seq_small_mix"):
        get_task_or_family("nope")


@pytest.mark.parametrize("kind", ["classification", "teacher_student"])
def test_synthetic_family_models_fit_their_data(kind):
    family = SyntheticMLPFamily("s", kind)
    for seed in range(4):
        task = family.sample(seed)
        x, y = task.batch(0, 0)
        out = task.make_model(0)(x)
        loss = task.loss(out, y)
        assert torch.isfinite(loss) and out.shape[0] == x.shape[0] == task.batch_size
        assert (task.num_classes is None) == (kind == "teacher_student")
    with pytest.raises(ValueError, match="kind"):
        SyntheticMLPFamily("s", "images")


def test_mixture_samples_batch_sizes():
    mix = get_family("generalist_mix")
    sizes = {mix.sample(s).batch_size for s in range(40)}
    assert sizes == {32, 64, 128}
    with pytest.raises(ValueError, match="batch sizes"):
        MixtureFamily("m", (MLPFamily("f"),), batch_sizes=(0,))
