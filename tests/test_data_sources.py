"""The data sources of archgraph/data/ on small data each test makes: an ImageFolder tree of PNGs, arrays in .npz
and .safetensors files, nanoGPT token files, a text with a tokenizer trained here, the user's own Datasets; the
registry and the run-file errors; and the streamed path's draws (the same whatever the workers or the split among
processes)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from data_helpers import CLASSES, IMAGE_SEED, TOKEN_SEED, run_config, write_folder, write_tokens

import archgraph
from archgraph.cli import main
from archgraph.data import SOURCES, data_config
from archgraph.data.feed import Streamed, TextDataset, load_data
from archgraph.errors import ConfigError
from archgraph.train.config import config_from_data


def test_every_source_is_registered_once_with_its_settings():
    assert {"digits", "mnist", "text", "digits_scenes", "folder", "arrays", "tokens", "python"} <= set(SOURCES)
    for name, src in SOURCES.items():
        assert name in src.names and src.settings.model_fields["name"].annotation.__args__ == src.names


@pytest.mark.parametrize("data,field,match", [
    ({"name": "imagenet"}, "data.name", "unknown data source 'imagenet'"),
    ({"name": "folder"}, "data.path", "required"),
    ({"name": "folder", "path": "x", "tokens": "bytes"}, "data.tokens", "unknown field"),
    ({"name": "tokens", "path": "x", "dtype": "int8"}, "data.dtype", "int8"),
    ({"name": "python", "factory": "not a factory"}, "data.factory", "pattern"),
    ({"name": "folder", "path": "x", "augment": {"color_jitter": 2.0}}, "data.augment.color_jitter", "less than 1"),
])
def test_run_file_errors_name_the_data_field(data, field, match):
    with pytest.raises(ConfigError, match=match) as err:
        config_from_data({"seed": "s.yaml", "data": data})
    assert err.value.field == field


def test_a_data_mapping_without_name_is_digits():
    cfg = config_from_data({"seed": "s.yaml", "data": {"batch_size": 8}})
    assert cfg.data.name == "digits" and cfg.data.batch_size == 8


# ---- folder -------------------------------------------------------------------------------------------------------

def test_folder_reads_any_size_and_mode_with_sorted_classes_and_a_carved_val(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=(10, 0, 3))
    ds = load_data(data_config(name="folder", path=str(root), val_fraction=0.2, workers=0), seed=0,
                   input_shape=(3, 8, 8))
    assert isinstance(ds, Streamed) and ds.num_classes == 3 and ds.task == "classification"
    assert len(ds.train) == 24 and len(ds.val) == 6 and len(ds.test) == 9
    assert sorted(np.bincount(ds.val.labels).tolist()) == [2, 2, 2]                      # stratified
    assert [Path(p).parent.name for p in ds.test.files][::3] == list(CLASSES)                   # sorted classes
    x, y = next(ds.batches(ds.train, [torch.arange(24)]))
    assert x.shape == (24, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(float(x.mean())) < 0.3                                                     # normalised
    again = load_data(data_config(name="folder", path=str(root), val_fraction=0.2, workers=0), seed=0,
                      input_shape=(3, 8, 8))
    assert again.val.files == ds.val.files                                                # fixed by the seed
    grey = load_data(data_config(name="folder", path=str(root), workers=0), input_shape=(1, 8, 8))
    assert next(grey.batches(grey.test, [torch.arange(2)]))[0].shape == (2, 1, 8, 8)


def test_folder_val_dir_test_none_and_errors(tmp_path):
    root = write_folder(tmp_path / "a", per_class=(6, 2, 0))
    with pytest.raises(ConfigError, match="test.* does not exist.*data.test: none") as err:
        load_data(data_config(name="folder", path=str(root)), input_shape=(3, 8, 8), source="run.yaml")
    assert err.value.field == "data.test" and "run.yaml" in str(err.value)
    ds = load_data(data_config(name="folder", path=str(root), test="none", workers=0), input_shape=(3, 8, 8))
    assert len(ds.train) == 18 and len(ds.val) == 6 and ds.test is ds.val                # val/ used as it is
    (root / "val" / "dog").mkdir()
    with pytest.raises(ConfigError, match="class that train/ does not have"):
        load_data(data_config(name="folder", path=str(root), test="none"), input_shape=(3, 8, 8))
    with pytest.raises(ConfigError, match="does not exist"):
        load_data(data_config(name="folder", path=str(tmp_path / "nope")), input_shape=(3, 8, 8))
    with pytest.raises(ConfigError, match="image \\[C, H, W\\]"):
        load_data(data_config(name="folder", path=str(root), test="none"), input_shape=(64,))
    with pytest.raises(ConfigError, match="smaller than the seed's input"):
        load_data(data_config(name="folder", path=str(root), test="none", image_size=4), input_shape=(3, 8, 8))


def test_folder_image_size_crops_randomly_when_training_and_centrally_when_evaluating(tmp_path):
    root = write_folder(tmp_path / "a", per_class=(4, 0, 2), sizes=((20, 30),))
    ds = load_data(data_config(name="folder", path=str(root), image_size=12, val_fraction=0.0, workers=0,
                               normalize=False), input_shape=(3, 8, 8))
    idx = [torch.arange(12)]
    a = next(ds.batches(ds.train, idx))[0]
    assert torch.equal(a, next(ds.batches(ds.train, idx))[0])                            # evaluation: centre crop
    e0, e1 = (next(ds.batches(ds.train, idx, epoch=e))[0] for e in (0, 1))
    assert not torch.equal(e0, e1) and torch.equal(e0, next(ds.batches(ds.train, idx, epoch=0))[0])


def test_streamed_draws_do_not_depend_on_workers_or_the_split_among_processes(tmp_path):
    root = write_folder(tmp_path / "a", per_class=(6, 0, 2))
    aug = {"flip": True, "translate": 1, "random_resized_crop": 0.5, "color_jitter": 0.3}
    one = load_data(data_config(name="folder", path=str(root), workers=0, augment=aug), seed=3, input_shape=(3, 8, 8))
    two = load_data(data_config(name="folder", path=str(root), workers=2, augment=aug), seed=3, input_shape=(3, 8, 8))
    order = one.epoch_order(torch.Generator().manual_seed(0))
    batches = [order[:8], order[8:16]]
    whole = list(one.batches(one.train, batches, one_aug := data_config(name="folder", path="x", augment=aug).augment,
                             epoch=4))
    workers = list(two.batches(two.train, batches, one_aug, epoch=4))
    shares = [list(one.batches(one.train, batches, one_aug, part=slice(r, None, 2), epoch=4)) for r in (0, 1)]
    two.close()
    for b, (x, y) in enumerate(whole):
        assert torch.equal(x, workers[b][0]) and torch.equal(y, workers[b][1])
        assert torch.equal(x[0::2], shares[0][b][0]) and torch.equal(x[1::2], shares[1][b][0])
    plain = next(one.batches(one.train, batches[:1]))[0]
    assert not torch.equal(plain, whole[0][0])                                            # augmented when training


def test_folder_run_end_to_end(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=(8, 0, 3))
    cfg = run_config(IMAGE_SEED, {"name": "folder", "path": str(root), "batch_size": 8, "workers": 1,
                                  "augment": {"flip": True, "color_jitter": 0.2}})
    summary = archgraph.grow(cfg, tmp_path / "run", quiet=True)
    assert summary["dataset"] == "folder" and summary["epochs"] == 2 and 0 <= summary["test_acc"] <= 1
    assert summary["steps"] == 2 * 3                                                      # 22 training images / 8


# ---- arrays -------------------------------------------------------------------------------------------------------

def _batch(ds, split, n):
    return next(ds.batches(split, [torch.arange(n)]))


def test_arrays_npz_layouts_vectors_and_segmentation(tmp_path):
    rng = np.random.RandomState(0)
    nhwc = tmp_path / "nhwc.npz"
    x_train = rng.randint(0, 255, (20, 8, 8, 3)).astype(np.uint8)
    np.savez(nhwc, x_train=x_train, y_train=np.arange(20) % 3,
             x_test=rng.randint(0, 255, (6, 8, 8, 3)).astype(np.uint8), y_test=np.arange(6) % 3)
    ds = load_data(data_config(name="arrays", path=str(nhwc), val_fraction=0.2, workers=0), input_shape=(3, 8, 8))
    assert isinstance(ds, Streamed) and len(ds.train) == 16 and len(ds.val) == 4 and ds.num_classes == 3
    assert ds.task == "classification" and ds.scale == 1 / 255
    x, y = ds.train.get(0, None)
    assert x.shape == (3, 8, 8) and np.array_equal(x, x_train[ds.train.index[0]].transpose(2, 0, 1))
    vec = tmp_path / "vec.npz"
    np.savez(vec, x_train=rng.randn(30, 5).astype(np.float32), y_train=np.arange(30) % 2,
             x_test=rng.randn(8, 5).astype(np.float32), y_test=np.arange(8) % 2, x_val=rng.randn(4, 5).astype(
                 np.float32), y_val=np.arange(4) % 2)
    ds = load_data(data_config(name="arrays", path=str(vec), workers=0), input_shape=(5,))
    x, y = _batch(ds, ds.train, 30)
    # float vectors are standardised per feature with the training split's statistics (all 30 examples here)
    assert x.shape == (30, 5) and len(ds.val) == 4 and abs(float(x.mean())) < 1e-5
    seg = tmp_path / "seg.npz"
    np.savez(seg, x_train=rng.rand(10, 1, 6, 6).astype(np.float32), y_train=rng.randint(0, 4, (10, 6, 6)),
             x_test=rng.rand(3, 1, 6, 6).astype(np.float32), y_test=rng.randint(0, 4, (3, 6, 6)))
    ds = load_data(data_config(name="arrays", path=str(seg), val_fraction=0.2, workers=0), input_shape=(1, 6, 6))
    assert ds.task == "segmentation" and ds.num_classes == 4 and tuple(_batch(ds, ds.test, 3)[1].shape) == (3, 6, 6)


def test_arrays_are_read_an_example_at_a_time_the_same_from_every_format(tmp_path):
    """np.savez members are memory-mapped where they lie in the zip, safetensors read through slices, a compressed
    .npz decompressed: the three give the same batches, and pickling an item set (a worker's copy) drops the open
    handle."""
    import pickle

    from safetensors.numpy import save_file
    rng = np.random.RandomState(1)
    arrays = {"x_train": rng.randint(0, 255, (24, 3, 8, 8)).astype(np.uint8), "y_train": np.arange(24) % 3,
              "x_test": rng.randint(0, 255, (6, 3, 8, 8)).astype(np.uint8), "y_test": np.arange(6) % 3}
    np.savez(tmp_path / "plain.npz", **arrays)
    np.savez_compressed(tmp_path / "small.npz", **arrays)
    save_file(arrays, str(tmp_path / "d.safetensors"))
    made = {}
    for name in ("plain.npz", "small.npz", "d.safetensors"):
        ds = load_data(data_config(name="arrays", path=str(tmp_path / name), val_fraction=0.25, workers=0),
                       input_shape=(3, 8, 8))
        made[name] = (ds.train.x.how, [t.tolist() for t in _batch(ds, ds.train, 18)], ds.mean.tolist())
        copy = pickle.loads(pickle.dumps(ds.train))
        assert copy.x._handle is None and np.array_equal(copy.get(3, None)[0], ds.train.get(3, None)[0])
    assert [m[0] for m in made.values()] == ["mmap", "npz", "safetensors"]
    assert made["plain.npz"][1:] == made["small.npz"][1:] == made["d.safetensors"][1:]


def test_arrays_safetensors_and_errors(tmp_path):
    from safetensors.numpy import save_file
    rng = np.random.RandomState(0)
    arrays = {"x_train": rng.randint(0, 255, (12, 1, 4, 4)).astype(np.uint8), "y_train": np.arange(12) % 2,
              "x_test": rng.randint(0, 255, (4, 1, 4, 4)).astype(np.uint8), "y_test": np.arange(4) % 2}
    save_file(arrays, str(tmp_path / "d.safetensors"))
    ds = load_data(data_config(name="arrays", path=str(tmp_path / "d.safetensors"), val_fraction=0.0, workers=0),
                   input_shape=(16,))
    assert _batch(ds, ds.train, 2)[0].shape == (2, 16)                # the seed's input shape
    with pytest.raises(ConfigError, match=r"input shape \[15\] does not fit arrays examples"):
        load_data(data_config(name="arrays", path=str(tmp_path / "d.safetensors"), workers=0), input_shape=(15,))
    np.savez(tmp_path / "short.npz", x_train=arrays["x_train"], y_train=arrays["y_train"])
    with pytest.raises(ConfigError, match="lacks x_test, y_test"):
        load_data(data_config(name="arrays", path=str(tmp_path / "short.npz")), input_shape=(1, 4, 4))
    np.savez(tmp_path / "pickled.npz", x_train=np.array([{"a": 1}] * 3, dtype=object), y_train=np.arange(3),
             x_test=arrays["x_test"], y_test=arrays["y_test"])
    with pytest.raises(ConfigError, match="cannot read arrays file"):          # allow_pickle=False
        load_data(data_config(name="arrays", path=str(tmp_path / "pickled.npz")), input_shape=(1, 4, 4))
    np.savez(tmp_path / "float_labels.npz", **{**arrays, "y_train": np.zeros(12, np.float32)})
    with pytest.raises(ConfigError, match="integer class ids"):
        load_data(data_config(name="arrays", path=str(tmp_path / "float_labels.npz")), input_shape=(1, 4, 4))


# ---- tokens -------------------------------------------------------------------------------------------------------

def test_tokens_memmap_windows_vocab_and_dtype(tmp_path):
    root = write_tokens(tmp_path / "corpus", n_test=0)
    ds = load_data(data_config(name="tokens", path=str(root), workers=0), input_shape=(8,))
    assert ds.task == "token_model" and ds.vocab_size == 40 and ds.test.path == ds.val.path    # val is the test
    assert len(ds.train) == (2000 - 1) // 8 and len(ds.val) == (400 - 1) // 8
    x, y = next(ds.batches(ds.val, [torch.tensor([0, 1])]))
    ids = np.fromfile(root / "val.bin", dtype=np.uint16).astype(np.int64)
    assert x.tolist() == [ids[:8].tolist(), ids[8:16].tolist()] and y[0].tolist() == ids[1:9].tolist()
    a, _ = next(ds.batches(ds.train, [torch.arange(4)], epoch=0))    # random windows, fixed by seed and epoch
    b, _ = next(ds.batches(ds.train, [torch.arange(4)], epoch=1))
    assert not torch.equal(a, b) and torch.equal(a, next(ds.batches(ds.train, [torch.arange(4)], epoch=0))[0])
    (root / "meta.json").write_text(json.dumps({"vocab_size": 64}))
    assert load_data(data_config(name="tokens", path=str(root)), input_shape=(8,)).vocab_size == 64
    assert load_data(data_config(name="tokens", path=str(root), vocab=50), input_shape=(8,)).vocab_size == 50
    big = write_tokens(tmp_path / "big", vocab=70000, dtype=np.uint32)
    with pytest.raises(ConfigError, match="not a whole number of uint32"):
        (big / "odd.bin").write_bytes(b"")
        (big / "train.bin").write_bytes((big / "train.bin").read_bytes()[:-2])
        load_data(data_config(name="tokens", path=str(big), dtype="uint32"), input_shape=(8,))
    with pytest.raises(ConfigError, match="train.bin and val.bin"):
        load_data(data_config(name="tokens", path=str(tmp_path)), input_shape=(8,))


def test_tokens_vocab_is_checked_against_the_seed(tmp_path):
    root = write_tokens(tmp_path / "corpus")
    cfg = run_config(TOKEN_SEED, {"name": "tokens", "path": str(root), "vocab": 41})
    with pytest.raises(ConfigError, match="declares vocab 40, but the data's vocabulary has 41 tokens"):
        archgraph.grow(cfg, tmp_path / "run", quiet=True)


def test_tokens_run_reports_loss_in_nats_and_perplexity(tmp_path):
    root = write_tokens(tmp_path / "corpus")
    cfg = run_config(TOKEN_SEED, {"name": "tokens", "path": str(root), "batch_size": 16, "workers": 0,
                                  "limit": 64})
    summary = archgraph.grow(cfg, tmp_path / "run", quiet=True)
    assert summary["steps"] == 2 * 4 and summary["test_ppl"] == pytest.approx(np.exp(summary["test_loss"]))
    assert summary["test_ppl"] < 40                      # learned something: uniform over 40 ids is 40
    assert "test_bpc" not in summary and "train_ppl" in json.loads(
        (tmp_path / "run" / "history.jsonl").read_text().splitlines()[1])["metrics"]


# ---- text ---------------------------------------------------------------------------------------------------------

def make_tokenizer(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"], show_progress=False)
    from archgraph.data.text import default_corpus
    tok.train_from_iterator([default_corpus()[:60000]], trainer)
    tok.save(str(path))
    return tok


def test_text_with_a_tokenizer_gives_its_ids_and_perplexity(tmp_path):
    tok = make_tokenizer(tmp_path / "tokenizer.json")
    corpus = tmp_path / "t.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    ds = load_data(data_config(name="text", path=str(corpus), tokenizer=str(tmp_path)), input_shape=(8,))
    assert isinstance(ds, TextDataset) and ds.task == "token_model" and ds.vocab_size == tok.get_vocab_size()
    x, _ = ds.batch(ds.train, torch.tensor([0]))
    assert tok.decode(x[0].tolist()).startswith("the quick")
    with pytest.raises(ConfigError, match="tokenizer file"):
        load_data(data_config(name="text", tokenizer=str(tmp_path / "nope")), input_shape=(8,))
    seed = {**TOKEN_SEED, "inputs": {"tokens": {"shape": [8], "vocab": 300}}}
    seed["nodes"] = {**seed["nodes"], "head": {**seed["nodes"]["head"], "out_features": 300}}
    summary = archgraph.grow(run_config(seed, {"name": "text", "path": str(corpus), "tokenizer": str(
        tmp_path / "tokenizer.json"), "batch_size": 16}, epochs=1), tmp_path / "run", quiet=True)
    assert "test_ppl" in summary and "test_bpc" not in summary


def test_text_limit_draws_fresh_windows_each_epoch():
    ds = load_data(data_config(name="text", limit=50), input_shape=(16,))
    gen = torch.Generator().manual_seed(0)
    first, second = ds.epoch_order(gen), ds.epoch_order(gen)
    assert len(first) == len(second) == 50 and len(ds.train) > 10_000
    assert set(first.tolist()) != set(second.tolist())
    again = torch.Generator().manual_seed(0)
    assert torch.equal(ds.epoch_order(again), first)        # seeded (and the generator is checkpointed)


# ---- python -------------------------------------------------------------------------------------------------------

FACTORY = '''
import torch
from torch.utils.data import TensorDataset

def make():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + (x[:, 0].mean(dim=(1, 2)) > 0.2).long()
    return {"train": TensorDataset(x[:48], y[:48]), "test": TensorDataset(x[48:], y[48:]), "task": "classification"}
'''


def test_python_factory_runs_and_validate_never_imports_it(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_data.py").write_text(FACTORY)
    (tmp_path / "booby_trap.py").write_text("raise SystemExit('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = run_config(IMAGE_SEED, {"name": "python", "factory": "my_data:make", "batch_size": 16, "workers": 0})
    summary = archgraph.grow(cfg, tmp_path / "run", quiet=True)
    assert summary["dataset"] == "python" and summary["steps"] == 2 * 3     # 48 - 5 carved for val, batches of 16
    trap = run_config(IMAGE_SEED, {"name": "python", "factory": "booby_trap:make"})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(trap))
    assert main(["validate", str(tmp_path / "run.yaml")]) in (0, None)
    assert "booby_trap" not in sys.modules
    bad = run_config(IMAGE_SEED, {"name": "python", "factory": "my_data:nothing"})
    with pytest.raises(ConfigError, match="has no function 'nothing'"):
        archgraph.grow(bad, tmp_path / "run2", quiet=True)


def test_a_data_path_may_be_relative_to_the_run_file(tmp_path, monkeypatch):
    write_folder(tmp_path / "project" / "pets", per_class=(6, 0, 2))
    run = tmp_path / "project" / "run.yaml"
    run.write_text(yaml.safe_dump(run_config(IMAGE_SEED, {"name": "folder", "path": "pets", "workers": 0,
                                                          "batch_size": 8}, epochs=1)))
    monkeypatch.chdir(tmp_path)   # "pets" is not in the working directory, but beside the run file
    assert archgraph.grow(run, tmp_path / "run", quiet=True)["dataset"] == "folder"


def test_a_factory_may_return_a_tuple_and_augment_switches_take_true(tmp_path, monkeypatch):
    (tmp_path / "tuple_data.py").write_text(FACTORY + "\n\ndef as_tuple():\n    d = make()\n"
                                            "    return d['train'], d['test'], d['task']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = run_config(IMAGE_SEED, {"name": "python", "factory": "tuple_data:as_tuple", "batch_size": 16,
                                  "workers": 0, "val_fraction": 0.0}, epochs=1)
    assert archgraph.grow(cfg, tmp_path / "run", quiet=True)["steps"] == 3
    aug = data_config(name="folder", path="x", augment={"random_resized_crop": True, "color_jitter": True}).augment
    assert (aug.random_resized_crop, aug.color_jitter) == (0.08, 0.4)
