"""schedule.log: [tensorboard] writes event files beside the history: step and epoch scalars, params and MACs per
version, each rewrite as text with its rule and exactness."""
import pytest

import archgraph

pytest.importorskip("tensorboard")


def test_event_files_hold_steps_epochs_versions_and_rewrites(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = {"seed": "examples/seeds/digits_cnn.yaml",
           "data": {"name": "digits", "limit": 128, "batch_size": 32},
           "method": {"name": "staged", "stages": [{"epoch": 1, "rules": [
               {"rule": "add_filters", "args": {"node": "c2", "count": 2, "init": "preserve"}}]}]},
           "schedule": {"epochs": 2, "device": "cpu", "threads": 1, "log": ["tensorboard"]}}
    summary = archgraph.grow(run, tmp_path / "run", quiet=True)
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert {"step/loss", "step/lr", "epoch/val_loss", "epoch/train_acc", "version/params",
            "version/macs", "epoch/test_acc"} <= set(scalars)
    assert len(acc.Scalars("step/loss")) == summary["steps"]
    params = [e.value for e in acc.Scalars("version/params")]
    assert params[0] < params[-1] == summary["params"] and len(params) == summary["versions"]
    texts = [t.tensor_proto.string_val[0].decode() for t in acc.Tensors("rewrites/text_summary")]
    assert len(texts) == 1 and "add_filters(node=c2, count=2" in texts[0] and ", exact" in texts[0]
