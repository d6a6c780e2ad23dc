"""Streamed sources resume exactly: a `folder` run (DataLoader workers, augmentation), a `tokens` run (random
windows) and an `arrays` run (a memory-mapped .npz, augmentation) killed at a write - including the checkpoint a
rewrite writes in the middle of an epoch, so the run resumes at that batch - end with the same summary, history,
versions and weights as an uninterrupted run."""
import pytest
from data_helpers import IMAGE_SEED, TOKEN_SEED, run_config, write_arrays, write_folder, write_tokens
from test_resume import Crash, assert_same_run, count_writes, crash_before_write, strip

import archgraph
from archgraph import rules
from archgraph.history.rundir import RunDir
from archgraph.train.strategies.dense import DenseStrategy

REWRITE_STEP = 4


def configs(tmp_path):
    pets = write_folder(tmp_path / "pets", per_class=(10, 0, 3))
    corpus = write_tokens(tmp_path / "corpus", n_train=1200)
    arrays = write_arrays(tmp_path / "pets.npz", n_train=30, n_test=9)
    return {
        "folder": (run_config(IMAGE_SEED, {"name": "folder", "path": str(pets), "batch_size": 4, "workers": 1,
                                           "augment": {"flip": True, "translate": 1, "color_jitter": 0.2}},
                              epochs=3), "c2"),
        "tokens": (run_config(TOKEN_SEED, {"name": "tokens", "path": str(corpus), "batch_size": 16, "workers": 1,
                                           "limit": 96}, epochs=3), "fc"),
        "arrays": (run_config(IMAGE_SEED, {"name": "arrays", "path": str(arrays), "batch_size": 4, "workers": 1,
                                           "augment": {"flip": True, "translate": 1}}, epochs=3), "c2"),
    }


@pytest.mark.parametrize("source", ["folder", "tokens", "arrays"])
def test_streamed_run_killed_anywhere_resumes_like_an_uninterrupted_one(source, tmp_path, monkeypatch):
    cfg, node = configs(tmp_path)[source]

    def widen_mid_epoch(self, trainer):
        return [rules.AddFilters(node=node, count=2)] if trainer.step == REWRITE_STEP else []
    monkeypatch.setattr(DenseStrategy, "on_step_end", widen_mid_epoch)
    ref = tmp_path / "ref"
    archgraph.grow(cfg, ref, quiet=True)
    rewrite = [e for e in RunDir(ref).events() if e["event"] == "rewrite"][0]
    assert rewrite["step"] == REWRITE_STEP and rewrite["epoch"] == 0
    total = count_writes(ref)
    # 4-6: version 1, rewrite event, the mid-epoch checkpoint (batch 4); 7: the first epoch's event; and the end
    for k in (7, total - 2):
        out = tmp_path / f"crash{k}"
        with monkeypatch.context() as patch:
            crash_before_write(patch, k)
            with pytest.raises(Crash):
                archgraph.grow(cfg, out, quiet=True)
        if k == 7:
            assert RunDir(out).load_checkpoint()["loop"]["epoch_state"]["batch"] == REWRITE_STEP
        summary = archgraph.grow(cfg, out, quiet=True, resume=True)
        assert strip(summary) == strip(RunDir(ref).events()[-1]["summary"]), f"crash at write {k}"
        assert_same_run(out, ref)
