import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from tasks.data import (
    DataSplit,
    coordinate_grid,
    digit_image,
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


def test_digits_shapes_dtypes_and_ranges():
    x_train, y_train, x_test, y_test = load_digits_split(0)
    assert x_train.shape == (1400, 1, 8, 8) and x_test.shape == (397, 1, 8, 8)
    assert y_train.shape == (1400,) and y_test.shape == (397,)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    for x in (x_train, x_test):
        assert x.min() >= 0.0 and x.max() <= 1.0
    assert x_train.max() == 1.0  # 16 / 16 occurs
    assert set(y_train.tolist()) == set(range(10)) == set(y_test.tolist())


def test_digits_split_follows_seeded_randperm():
    bunch = load_digits()
    perm = torch.randperm(1797, generator=torch.Generator().manual_seed(3))
    data = load_digits_split(3)
    expected_x = torch.as_tensor(bunch.data[perm[:1400].numpy()], dtype=torch.float32) / 16
    torch.testing.assert_close(data.x_train.reshape(1400, 64), expected_x)
    assert torch.equal(data.y_test, torch.as_tensor(bunch.target[perm[1400:].numpy()]))


def test_digits_deterministic_and_seed_dependent():
    a, b = load_digits_split.__wrapped__(1), load_digits_split.__wrapped__(1)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    c = load_digits_split(2)
    assert not torch.equal(a.y_train, c.y_train)
    # the two splits of one seed partition the dataset
    all_rows = torch.cat([a.x_train, a.x_test]).reshape(1797, 64)
    ref = torch.as_tensor(load_digits().data, dtype=torch.float32) / 16
    assert torch.equal(all_rows.sum(0), ref.sum(0))


def test_flatten_inputs():
    flat = load_digits_split(0).flatten_inputs()
    assert isinstance(flat, DataSplit)
    assert flat.x_train.shape == (1400, 64) and flat.x_test.shape == (397, 64)


def test_mnist1d_generated_offline_and_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("GMN_CACHE", str(tmp_path))
    np.random.seed(123)
    expected_draw = np.random.rand()
    np.random.seed(123)
    data = load_mnist1d.__wrapped__(seed=7, num_samples=200)
    assert np.random.rand() == expected_draw  # the global numpy RNG is left untouched
    assert (tmp_path / "mnist1d_200_7.npz").exists()
    assert data.x_train.shape == (160, 40) and data.x_test.shape == (40, 40)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert 0 <= data.y_train.min() and data.y_train.max() <= 9
    full = torch.cat([data.x_train, data.x_test])
    assert abs(float(full.mean())) < 1e-4 and abs(float(full.std()) - 1) < 1e-2
    again = load_mnist1d.__wrapped__(seed=7, num_samples=200)  # read back from disk
    regenerated = load_mnist1d.__wrapped__(seed=7, num_samples=200, disk_cache=False)
    for u, v, w in zip(data, again, regenerated):
        assert torch.equal(u, v) and torch.equal(u, w)
    other = load_mnist1d.__wrapped__(seed=8, num_samples=200, disk_cache=False)
    assert not torch.equal(data.x_train, other.x_train)


def test_mnist1d_default_split():
    data = load_mnist1d()
    assert data.x_train.shape == (4000, 40) and data.x_test.shape == (1000, 40)
    assert torch.bincount(data.y_train, minlength=10).min() > 300


def test_sequence_task_labels_follow_rule():
    x, y = make_sequence_dataset(2000, seq_len=12, vocab_size=16, seed=0)
    assert x.shape == (2000, 12) and y.shape == (2000,)
    assert x.dtype == torch.int64 and y.dtype == torch.int64
    assert x.min() >= 0 and x.max() <= 15
    for row, label in zip(x[:50].tolist(), y[:50].tolist()):
        assert label == int(row[0] in row[1:])
    assert 0.4 < y.float().mean() < 0.6  # roughly balanced


def test_sequence_task_deterministic_split():
    a, b = load_sequence_task.__wrapped__(0), load_sequence_task.__wrapped__(0)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert a.x_train.shape == (4000, 12) and a.x_test.shape == (1000, 12)
    assert not torch.equal(a.x_train, load_sequence_task(1).x_train)


def test_image_fitting_grid():
    grid = coordinate_grid(28)
    assert grid.shape == (784, 2)
    assert torch.equal(grid[0], torch.tensor([-1.0, -1.0]))
    assert torch.equal(grid[27], torch.tensor([-1.0, 1.0]))  # row-major: column moves first
    img = digit_image(0, 28)
    assert img.shape == (28, 28) and 0 <= img.min() and img.max() <= 1 and img.max() > 0.5
    data = load_image_fitting()
    assert data.x_train.shape == (784, 2) and data.y_train.shape == (784, 1)
    torch.testing.assert_close(data.y_train.reshape(28, 28), img)


@pytest.mark.parametrize("size", [8, 16])
def test_digit_image_native_size_is_original(size):
    img = digit_image(5, size)
    assert img.shape == (size, size)
    if size == 8:
        expected = torch.as_tensor(load_digits().images[5], dtype=torch.float32) / 16
        torch.testing.assert_close(img, expected)


def test_digits_reconstruction_targets_are_the_inputs():
    data = load_digits_reconstruction(0)
    flat = load_digits_split(0).flatten_inputs()
    assert data.x_train.shape == data.y_train.shape == (1400, 64)
    assert torch.equal(data.x_train, flat.x_train) and torch.equal(data.y_test, flat.x_test)


@pytest.mark.parametrize(("name", "features", "rows"),
                         [("breast_cancer", 30, 569), ("wine", 13, 178), ("diabetes", 10, 442)])
def test_tabular_is_offline_seeded_and_standardised_by_the_train_rows(name, features, rows):
    data = load_tabular.__wrapped__(name, 0)
    n_test = round(0.2 * rows)
    assert data.x_train.shape == (rows - n_test, features) and data.x_test.shape[0] == n_test
    assert data.x_train.dtype == torch.float32
    torch.testing.assert_close(data.x_train.mean(0), torch.zeros(features), atol=1e-5, rtol=0)
    torch.testing.assert_close(data.x_train.std(0, unbiased=False), torch.ones(features))
    assert not torch.allclose(data.x_test.mean(0), torch.zeros(features), atol=1e-3)
    if name == "diabetes":  # a regression: standardised float targets [N, 1]
        assert data.y_train.shape == (rows - n_test, 1) and data.y_train.dtype == torch.float32
        assert abs(float(data.y_train.mean())) < 1e-5
    else:
        assert data.y_train.dtype == torch.int64 and data.y_train.ndim == 1
    again, other = load_tabular.__wrapped__(name, 0), load_tabular.__wrapped__(name, 1)
    assert all(torch.equal(u, v) for u, v in zip(data, again))
    assert not torch.equal(data.x_test, other.x_test)
    with pytest.raises(ValueError, match="unknown table"):
        load_tabular.__wrapped__("iris")


def test_teacher_student_is_seeded_standardised_and_leaves_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(())
    torch.manual_seed(0)
    data = load_teacher_student.__wrapped__(seed=3, num_train=500, num_test=100, noise=0.0)
    assert torch.rand(()) == expected
    assert data.x_train.shape == (500, 16) and data.y_train.shape == (500, 1)
    assert data.x_test.shape == (100, 16) and data.y_test.shape == (100, 1)
    assert abs(float(data.y_train.mean())) < 1e-5
    assert abs(float(data.y_train.std(unbiased=False)) - 1) < 1e-5
    noisy = load_teacher_student.__wrapped__(seed=3, num_train=500, num_test=100, noise=0.1)
    assert torch.equal(noisy.x_train, data.x_train)  # the same inputs, plus label noise
    residual = noisy.y_train - data.y_train
    assert 0.08 < float(residual.std()) < 0.12
    other = load_teacher_student.__wrapped__(seed=4, num_train=500, num_test=100)
    assert not torch.equal(other.y_train, noisy.y_train)


def test_synthetic_classification_is_seeded_standardised_and_checks_its_arguments():
    a = load_synthetic_classification(3, 12, 5)
    assert a.x_train.shape == (2000, 12) and a.x_test.shape == (500, 12)
    assert a.y_train.dtype == torch.int64 and set(a.y_train.tolist()) == set(range(5))
    torch.testing.assert_close(a.x_train.mean(0), torch.zeros(12), atol=1e-5, rtol=0)
    torch.testing.assert_close(a.x_train.std(0, unbiased=False), torch.ones(12), atol=1e-4,
                               rtol=0)
    load_synthetic_classification.cache_clear()
    assert torch.equal(load_synthetic_classification(3, 12, 5).x_test, a.x_test)
    assert not torch.equal(load_synthetic_classification(4, 12, 5).x_test, a.x_test)
    with pytest.raises(ValueError, match="num_classes"):
        load_synthetic_classification(0, 8, 1)
