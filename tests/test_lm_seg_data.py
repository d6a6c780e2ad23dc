"""Language-modelling text, segmentation scenes, the losses and metrics that follow the output, and the staged
method: units on the data and metric functions, and a segmentation run end to end with a conv2d-only seed."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import archgraph
from archgraph.data.feed import load_data as load_dataset
from archgraph.data.scenes import compose
from archgraph.data.text import UNKNOWN, default_corpus
from archgraph.errors import ConfigError
from archgraph.train.config import DataConfig, config_from_data
from archgraph.train.tasks import TASKS, check_seed


def load_text(cfg, window):
    return load_dataset(cfg, input_shape=(window,))

FCN = {"archgraph": 1, "name": "fcn", "inputs": {"image": [1, 32, 32]}, "nodes": {
    "c1": {"op": "conv2d", "in": "image", "out_channels": 4, "kernel_size": 3, "padding": 1},
    "r1": {"op": "relu", "in": "c1"},
    "out": {"op": "conv2d", "in": "r1", "out_channels": 11, "kernel_size": 1}}, "outputs": ["out"]}


# ---- text -------------------------------------------------------------------------------------------------------

def test_default_corpus_splits_contiguously_with_next_token_targets():
    ds = load_text(DataConfig(name="text"), window=16)
    text = default_corpus()
    n = len(text)
    assert len(ds.train.tokens) == int(0.9 * n) and len(ds.val.tokens) + len(ds.test.tokens) == n - int(0.9 * n)
    assert ds.symbols[UNKNOWN] is None and ds.vocab_size == len(set(text[:int(0.9 * n)])) + 1
    x, y = ds.batch(ds.train, torch.tensor([0, 5]))
    assert x.shape == y.shape == (2, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert "".join(ds.symbols[i] for i in x[0].tolist()) == text[:16]
    assert "".join(ds.symbols[i] for i in x[1].tolist()) == text[5 * 16:6 * 16]   # stride T: no overlap


def test_path_split_fractions_unknown_characters_and_bytes(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("ab" * 40 + "cé" * 10, encoding="utf-8")    # c and é only in the last fifth
    ds = load_text(DataConfig(name="text", path=str(f), split=[0.8, 0.1, 0.1]), window=4)
    assert ds.symbols == [None, "a", "b"]
    assert set(ds.test.tokens.tolist()) == {UNKNOWN}
    bs = load_text(DataConfig(name="text", path=str(f), tokens="bytes", split=[0.8, 0.1, 0.1], stride=2), window=4)
    assert len(bs.train.tokens) == int(0.8 * 110)                      # é is two bytes, 0xc3 0xa9
    assert bs.symbols == [None, ord("a"), ord("b"), ord("c"), 0xa9, 0xc3]
    assert bs.train.starts[:3].tolist() == [0, 2, 4]
    assert load_text(DataConfig(name="text", path=str(f), split=[0.9, 0.0, 0.1]), window=4).val is None


def test_text_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_text(DataConfig(name="text", path=str(tmp_path / "nope.txt")), window=4)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff world" * 10)
    with pytest.raises(ConfigError, match="not UTF-8: byte 6"):
        load_text(DataConfig(name="text", path=str(bad)), window=4)
    with pytest.raises(ConfigError, match="more than data.max_bytes = 10"):
        load_text(DataConfig(name="text", path=str(bad), max_bytes=10), window=4)
    short = tmp_path / "short.txt"
    short.write_text("x" * 100)
    with pytest.raises(ConfigError, match="the val split of the corpus has 5 tokens, fewer than one window of 8"):
        load_text(DataConfig(name="text", path=str(short)), window=8)
    with pytest.raises(ConfigError, match="sum to 1"):
        config_from_data({"seed": "s.yaml", "data": {"name": "text", "split": [0.5, 0.2, 0.2]}})


def test_seed_checks_name_both_vocabularies():
    class Tokens(tuple):   # the seq branch's TokenShape: a shape that carries its vocabulary
        vocab = 50
    ds = load_text(DataConfig(name="text"), window=8)
    g = archgraph.load("examples/seeds/digits_cnn.yaml")
    with pytest.raises(ConfigError, match=f"declares vocab 50, but the training text has {ds.vocab_size} symbols"):
        check_seed(TASKS["language_model"], ds, Tokens((8,)), g)
    with pytest.raises(ConfigError, match="token input"):
        check_seed(TASKS["language_model"], ds, (8,), g)
    with pytest.raises(ConfigError, match=r"must have shape \[11, 32, 32\]"):
        check_seed(TASKS["segmentation"], load_dataset(DataConfig(name="digits_scenes", limit=8, test_limit=4)),
                   (1, 32, 32), g)


# ---- losses and metrics -----------------------------------------------------------------------------------------

def test_losses_follow_the_output():
    torch.manual_seed(0)
    out, y = torch.randn(3, 5, 7), torch.randint(0, 7, (3, 5))
    lm = TASKS["language_model"]
    assert torch.allclose(lm.loss(out, y), F.cross_entropy(out.transpose(1, 2), y))
    assert torch.allclose(lm.loss(out, y, reduction="sum"), 3 * F.cross_entropy(out.transpose(1, 2), y))
    stats = lm.stats(out, y)
    assert math.isclose(lm.metrics(stats)["bpc"], float(F.cross_entropy(out.transpose(1, 2), y)) / math.log(2),
                        rel_tol=1e-6)
    assert math.isclose(float(lm.correct(out, y)), float((out.argmax(-1) == y).float().mean()) * 3, rel_tol=1e-6)
    seg = TASKS["segmentation"]
    out, y = torch.randn(2, 11, 4, 4), torch.randint(0, 11, (2, 4, 4))
    assert torch.allclose(seg.loss(out, y, 0.1), F.cross_entropy(out, y, label_smoothing=0.1))
    m = seg.metrics(seg.stats(out, y))
    assert math.isclose(m["pixel_acc"], float((out.argmax(1) == y).float().mean()), rel_tol=1e-6)
    pred = out.argmax(1)
    ious = [((pred == k) & (y == k)).sum() / ((pred == k) | (y == k)).sum() for k in range(11)
            if ((pred == k) | (y == k)).any()]
    assert math.isclose(m["miou"], float(torch.stack(ious).mean()), rel_tol=1e-6)
    assert m == seg.metrics(seg.stats(out[:1], y[:1]) + seg.stats(out[1:], y[1:]))   # sums add over batches


# ---- scenes -----------------------------------------------------------------------------------------------------

def test_scenes_are_deterministic_and_labelled():
    a = load_dataset(DataConfig(name="digits_scenes", limit=40, test_limit=10), seed=3)
    b = load_dataset(DataConfig(name="digits_scenes", limit=40, test_limit=10), seed=3)
    c = load_dataset(DataConfig(name="digits_scenes", limit=40, test_limit=10), seed=4)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x, c.train.x)
    assert a.train.x.shape == (36, 1, 32, 32) and len(a.val) == 4 and a.num_classes == 11
    assert int(a.train.y.max()) <= 10 and bool((a.train.y[a.train.x[:, 0] == 0] == 0).all())   # ink-free = bg
    x, y = a.batch(a.train, torch.arange(4))
    assert x.shape == (4, 1, 32, 32) and y.shape == (4, 32, 32) and y.dtype == torch.long


def test_compose_places_one_to_three_digits():
    imgs = np.zeros((10, 4, 4), np.uint8)
    imgs[:, 1:3, 1:3] = 200
    x, y = compose(imgs, np.arange(10), 200, 12, np.random.RandomState(0))
    digits = [len(set(np.unique(s)) - {0}) for s in y]
    assert min(digits) >= 1 and max(digits) <= 3 and max(x.reshape(200, -1).max(1)) == 200


def test_max_digits_bounds_the_digits_per_scene():
    """``data.max_digits`` (the task's difficulty): 1 gives scenes of exactly one digit class, a larger value more."""
    one = load_dataset(DataConfig(name="digits_scenes", limit=30, test_limit=10, max_digits=1), seed=0)
    three = load_dataset(DataConfig(name="digits_scenes", limit=30, test_limit=10), seed=0)
    count = [[len(set(torch.unique(s).tolist()) - {0}) for s in d.train.y] for d in (one, three)]
    assert set(count[0]) == {1} and max(count[1]) >= 2
    with pytest.raises(Exception, match="max_digits"):
        DataConfig(name="digits_scenes", max_digits=0)


def test_augmentation_moves_labels_with_images():
    ds = load_dataset(DataConfig(name="digits_scenes", limit=16, test_limit=4, val_fraction=0.0))
    from archgraph.train.config import Augment
    x, y = ds.batch(ds.train, torch.arange(16), Augment(translate=3, flip=True), torch.Generator().manual_seed(0))
    ink = x[:, 0] > x.min()
    assert bool((y[~ink] == 0).all()) and bool((y > 0).any())


# ---- runs -------------------------------------------------------------------------------------------------------

def _run(tmp_path, method, **data):
    cfg = {"seed": FCN, "data": {"name": "digits_scenes", "limit": 64, "test_limit": 16, "batch_size": 32, **data},
           "method": method, "schedule": {"epochs": 2, "lr": 0.01, "device": "cpu", "threads": 1}}
    return archgraph.grow(cfg, tmp_path / "run", quiet=True)


def test_segmentation_run_reports_miou_and_pixel_accuracy(tmp_path):
    s = _run(tmp_path, {"name": "dense"})
    assert 0 <= s["test_miou"] <= 1 and s["test_pixel_acc"] == s["test_acc"] and s["val_miou"] is not None
    events = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert "val_miou" in [e for e in events if e["event"] == "epoch"][-1]["metrics"]


def test_staged_applies_its_schedule_once(tmp_path):
    stages = [{"step": 1, "rules": [{"rule": "add_filters", "args": {"node": "c1", "count": 2}}]},
              {"epoch": 1, "rules": [{"rule": "insert_layer", "args": {"after": "r1"}}]}]
    s = _run(tmp_path, {"name": "staged", "stages": stages})
    assert s["growth_events"] == 2 and s["stages_applied"] == 2 and s["versions"] == 3


def test_staged_refuses_bad_stages(tmp_path):
    with pytest.raises(ConfigError, match="unknown rule"):
        config_from_data({"seed": "s.yaml", "method": {"name": "staged", "stages": [
            {"step": 1, "rules": [{"rule": "grow_everything"}]}]}})
    with pytest.raises(ConfigError, match="exactly one of step and epoch"):
        config_from_data({"seed": "s.yaml", "method": {"name": "staged", "stages": [
            {"rules": [{"rule": "add_filters", "args": {"node": "c1", "count": 2}}]}]}})
    with pytest.raises(ConfigError, match="does not keep the network's function"):
        _run(tmp_path, {"name": "staged", "stages": [
            {"step": 1, "rules": [{"rule": "add_filters", "args": {"node": "c1", "count": 2, "init": "random"}}]}]})
