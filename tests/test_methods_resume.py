"""CGaP, SCS and GbP runs killed at a write and resumed end exactly like uninterrupted ones (their strategy state
- saliencies, gate logits and momentum, annealing, training MACs - goes through the checkpoint)."""
import pytest
from method_helpers import method_config
from test_resume import count_writes, crash_then_resume
from train_helpers import events

import archgraph


@pytest.mark.parametrize("method", ["cgap", "scs", "gbp"])
def test_crash_then_resume_ends_like_an_uninterrupted_run(method, data_root, tmp_path, monkeypatch):
    cfg = method_config(data_root, method, epochs=5)
    reference = tmp_path / "reference"
    archgraph.grow(cfg, reference, quiet=True)
    total = count_writes(reference)
    log = events(reference)
    assert any(e["event"] == "rewrite" for e in log)
    for k in (total // 3, total // 2, total - 3):      # mid-run, around the rewrites, in the final steps
        crash_then_resume(cfg, tmp_path / f"crash{k}", k, monkeypatch, reference)
