"""CGaP, SCS and GbP runs killed at a write and resumed end exactly like uninterrupted ones (their strategy state
- saliencies, gate logits and momentum, annealing, training MACs - goes through the checkpoint)."""
import json

import pytest

import archgraph
from method_helpers import method_config
from train_helpers import events
from test_resume import Crash, assert_nothing_corrupt, assert_same_run, count_writes, crash_before_write, strip


@pytest.mark.parametrize("method", ["cgap", "scs", "gbp"])
def test_crash_then_resume_ends_like_an_uninterrupted_run(method, data_root, tmp_path, monkeypatch):
    cfg = method_config(data_root, method, epochs=5)
    reference = tmp_path / "reference"
    archgraph.grow(cfg, reference, quiet=True)
    total = count_writes(reference)
    log = events(reference)
    assert any(e["event"] == "rewrite" for e in log)
    for k in (total // 3, total // 2, total - 3):      # mid-run, around the rewrites, in the final steps
        out = tmp_path / f"crash{k}"
        with monkeypatch.context() as patch:
            crash_before_write(patch, k)
            with pytest.raises(Crash):
                archgraph.grow(cfg, out, quiet=True)
        assert_nothing_corrupt(out)
        summary = archgraph.grow(cfg, out, quiet=True, resume=True)
        assert strip(summary) == strip(json.loads((reference / "summary.json").read_text())), f"crash at {k}"
        assert_same_run(out, reference)
