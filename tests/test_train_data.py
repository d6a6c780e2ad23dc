"""Datasets: the bundled digits, and MNIST-style IDX files generated here, read through torchvision's loaders."""
import pytest
import torch
from train_helpers import synthetic_digits, write_mnist

from archgraph.data.augment import hflip, translate
from archgraph.data.feed import load_data as load_dataset
from archgraph.errors import ConfigError
from archgraph.train.config import Augment, DataConfig


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


def test_rotate_scale_moves_ink_about_the_centre_and_keeps_labels():
    from archgraph.data.augment import rotate_scale
    yy, xx = torch.meshgrid(torch.arange(15.0), torch.arange(15.0), indexing="ij")
    disc = ((yy - 7) ** 2 + (xx - 7) ** 2 <= 16).to(torch.uint8) * 200     # round, centred: rotation keeps it
    dot = torch.zeros(15, 15, dtype=torch.uint8)
    dot[7, 13] = 255                                                       # off centre: rotation moves it
    x = torch.stack([disc, dot])[:, None].repeat(8, 1, 1, 1)
    gen = torch.Generator().manual_seed(0)
    y = rotate_scale(x, 30.0, 0.0, gen)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    discs, dots = y[0::2, 0].float(), y[1::2, 0].float()
    ink = discs.sum((1, 2)) / disc.float().sum()
    assert bool(((ink > 0.9) & (ink < 1.1)).all())                       # the disc keeps its ink and its centre
    rows = (discs * yy).sum((1, 2)) / discs.sum((1, 2))
    cols = (discs * xx).sum((1, 2)) / discs.sum((1, 2))
    assert float((rows - 7).abs().max()) < 0.5 and float((cols - 7).abs().max()) < 0.5
    peaks = [divmod(int(d.argmax()), 15) for d in dots]
    assert len(set(peaks)) > 1                                             # different angles per image
    for r, c in peaks:                                                     # still 6 pixels from the centre
        assert abs(((r - 7) ** 2 + (c - 7) ** 2) ** 0.5 - 6) < 1.5
    assert torch.equal(rotate_scale(x, 30.0, 0.0, torch.Generator().manual_seed(0)), y)   # reproducible
    zoomed = rotate_scale(disc[None, None].repeat(16, 1, 1, 1), 0.0, 0.3, torch.Generator().manual_seed(1))
    ink = (zoomed > 100).sum((1, 2, 3)).float()
    assert ink.max() > ink.min() * 1.2                                     # zooms differ per image
    labels = torch.randint(0, 11, (4, 1, 15, 15), dtype=torch.uint8)
    both = rotate_scale(torch.cat([x[:4], labels], 1), 45.0, 0.2, gen, label_channels=1)
    assert set(both[:, 1].unique().tolist()) <= set(labels.unique().tolist()) | {0}   # nearest: labels stay labels


def test_rotation_settings_are_validated_and_used():
    from archgraph.data.augment import augment
    from archgraph.train.config import Augment
    with pytest.raises(Exception):
        Augment(rotate=-1)
    with pytest.raises(Exception):
        Augment(scale=1.5)
    x = torch.rand(32, 1, 9, 9)
    assert torch.equal(augment(x, Augment(), torch.Generator()), x)
    assert not torch.equal(augment(x, Augment(rotate=20), torch.Generator().manual_seed(0)), x)
