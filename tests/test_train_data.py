"""Datasets: the bundled digits, and MNIST-style IDX files generated here, read through torchvision's loaders."""
import pytest
import torch

from archgraph.errors import ConfigError
from archgraph.train.augment import hflip, translate
from archgraph.train.config import Augment, DataConfig
from archgraph.train.data import load_dataset
from train_helpers import synthetic_digits, write_mnist


def test_digits_split_is_fixed_and_stratified():
    a = load_dataset(DataConfig(name="digits", val_fraction=0.1), seed=0)
    b = load_dataset(DataConfig(name="digits", val_fraction=0.1), seed=5)
    assert len(a.train) + len(a.val) == 1437 and len(a.test) == 360
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)   # the test split never moves
    assert not torch.equal(a.val.y, b.val.y)                                      # the val split follows the seed
    assert tuple(a.train.x.shape[1:]) == (1, 8, 8) and a.train.x.dtype == torch.uint8
    assert int(a.train.x.max()) == 16 and a.num_classes == 10
    counts = torch.bincount(a.test.y)
    assert counts.min() >= 35 and counts.max() <= 37                              # stratified
    x, _ = a.batch(a.train, torch.arange(len(a.train)))
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-2        # normalised on the train split


def test_digits_reshape_for_a_flat_seed():
    ds = load_dataset(DataConfig(name="digits"), input_shape=(64,))
    x, y = ds.batch(ds.test, torch.arange(4))
    assert x.shape == (4, 64) and y.shape == (4,)
    with pytest.raises(ConfigError, match="does not fit"):
        load_dataset(DataConfig(name="digits"), input_shape=(1, 28, 28), source="run.yaml")


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_gzipped_idx_files_load_through_torchvision(tmp_path, name, folder):
    write_mnist(tmp_path, n_train=120, n_test=40, name=folder)
    before = sorted(p.name for p in (tmp_path / folder / "raw").iterdir())
    ds = load_dataset(DataConfig(name=name, root=str(tmp_path), val_fraction=0.25), seed=0)
    assert len(ds.train) == 90 and len(ds.val) == 30 and len(ds.test) == 40
    images, labels = synthetic_digits(40, 1)
    assert torch.equal(ds.test.x[:, 0], torch.from_numpy(images))
    assert torch.equal(ds.test.y, torch.from_numpy(labels).long())
    assert sorted(p.name for p in (tmp_path / folder / "raw").iterdir()) == before   # the root is only read


def test_unpacked_idx_files_and_limits(tmp_path):
    write_mnist(tmp_path, n_train=200, n_test=60, gz=False)
    ds = load_dataset(DataConfig(name="mnist", root=str(tmp_path), val_fraction=0.1, limit=100, test_limit=30))
    assert len(ds.train) + len(ds.val) == 100 and len(ds.test) == 30
    assert torch.bincount(ds.test.y, minlength=10).tolist() == [3] * 10


def test_missing_dataset_names_the_root(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_dataset(DataConfig(name="mnist", root=str(tmp_path)), source="run.yaml")
    assert err.value.field == "data.root" and "run.yaml" in str(err.value) and "download" in str(err.value)


def test_translate_shifts_whole_images():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.uint8).view(2, 1, 5, 5) + 1
    gen = torch.Generator().manual_seed(3)
    y = translate(x, 1, gen)
    assert y.shape == x.shape
    for i in range(2):
        padded = torch.nn.functional.pad(x[i], (1, 1, 1, 1))
        assert any(torch.equal(y[i], padded[:, dy:dy + 5, dx:dx + 5]) for dy in range(3) for dx in range(3))
    assert torch.equal(translate(x, 0, gen), x)
    again = translate(x, 1, torch.Generator().manual_seed(3))
    assert torch.equal(again, y)                                   # reproducible from the generator state


def test_flip_and_augment_settings():
    x = torch.rand(64, 3, 4, 4)
    y = hflip(x, torch.Generator().manual_seed(0))
    flipped = [(y[i] == x[i].flip(-1)).all() and not (y[i] == x[i]).all() for i in range(64)]
    kept = [(y[i] == x[i]).all() for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54
    assert Augment().translate == 0 and not Augment().flip
