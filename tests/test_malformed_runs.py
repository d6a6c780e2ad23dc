"""A malformed-run-folder corpus (like ``tests/malformed`` for graphs): one real run, damaged one way per case, then
read by every tool that reads a run (replay, report, plot, render) and continued with ``grow --resume``. Each must
answer with a result or a one-line error (exit 2), never a traceback; damage that would make a resume silently
wrong (a negative ``history_lines``, swapped version files) must be refused."""
import json
import shutil

import pytest
import torch
import yaml
from train_helpers import tiny_config

import archgraph
from archgraph.cli import main as cli


def _lines(run):
    return (run / "history.jsonl").read_bytes().splitlines()


def _write_lines(run, lines):
    (run / "history.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))


def _edit_event(run, kind, edit):
    lines = _lines(run)
    for i, raw in enumerate(lines):
        event = json.loads(raw)
        if event["event"] == kind:
            edit(event)
            lines[i] = json.dumps(event).encode()
            break
    else:
        raise AssertionError(f"no {kind} event")
    _write_lines(run, lines)


def _edit_checkpoint(run, edit):
    path = run / "checkpoints" / "last.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt = edit(ckpt)
    torch.save(ckpt, path)


def _set(d, key, value):
    d[key] = value
    return d


def _swap_versions(run):
    a, b = run / "versions" / "0000.yaml", run / "versions" / "0001.yaml"
    text = a.read_text()
    a.write_text(b.read_text())
    b.write_text(text)


DAMAGES = {
    "rewrite_args_string": lambda r: _edit_event(r, "rewrite", lambda e: _set(e, "args", "oops")),
    "rewrite_args_list": lambda r: _edit_event(r, "rewrite", lambda e: _set(e, "args", [1, 2])),
    "epoch_metrics_list": lambda r: _edit_event(r, "epoch", lambda e: _set(e, "metrics", [1, 2])),
    "rewrite_metrics_string": lambda r: _edit_event(r, "rewrite", lambda e: _set(e, "metrics", "x")),
    "start_config_string": lambda r: _edit_event(r, "start", lambda e: _set(e, "config", "x")),
    "rewrite_version_string": lambda r: _edit_event(r, "rewrite", lambda e: _set(e, "version", "1")),
    "history_invalid_utf8": lambda r: _write_lines(r, _lines(r)[:2] + [b'{"event": "epoch\xff\xfe"}'] + _lines(r)[3:]),
    "history_line_not_object": lambda r: _write_lines(r, _lines(r)[:2] + [b"[1, 2]"] + _lines(r)[3:]),
    "history_unknown_event": lambda r: _write_lines(r, _lines(r)[:2] + [b'{"event": "boom"}'] + _lines(r)[3:]),
    "history_cut_short": lambda r: (r / "history.jsonl").write_bytes((r / "history.jsonl").read_bytes()[:-7]),
    "history_empty": lambda r: (r / "history.jsonl").write_bytes(b""),
    "end_without_summary": lambda r: _write_lines(r, _lines(r) + [b'{"event": "end"}']),
    "checkpoint_bare_tensor": lambda r: torch.save(torch.zeros(3), r / "checkpoints" / "last.pt"),
    "checkpoint_garbage": lambda r: (r / "checkpoints" / "last.pt").write_bytes(b"\x80\x04garbage"),
    "checkpoint_without_config": lambda r: _edit_checkpoint(r, lambda c: {k: v for k, v in c.items() if k != "config"}),
    "checkpoint_without_loop": lambda r: _edit_checkpoint(r, lambda c: {k: v for k, v in c.items() if k != "loop"}),
    "checkpoint_rng_wrong_size": lambda r: _edit_checkpoint(
        r, lambda c: _set(c, "rng", _set(dict(c["rng"]), "torch", torch.zeros(7, dtype=torch.uint8)))),
    "checkpoint_history_lines_negative": lambda r: _edit_checkpoint(
        r, lambda c: _set(c, "loop", _set(dict(c["loop"]), "history_lines", -5))),
    "checkpoint_version_negative": lambda r: _edit_checkpoint(r, lambda c: _set(c, "version", -1)),
    "versions_swapped": _swap_versions,
    "version_not_yaml": lambda r: (r / "versions" / "0001.yaml").write_text("nodes: [\n"),
    "version_missing": lambda r: (r / "versions" / "0001.yaml").unlink(),
    "summary_not_json": lambda r: (r / "summary.json").write_text("{"),
}
#: damage a resume must refuse (continuing would silently lose events or build on the wrong graph)
MUST_REFUSE_RESUME = {"checkpoint_bare_tensor", "checkpoint_garbage", "checkpoint_without_config",
                      "checkpoint_without_loop", "checkpoint_rng_wrong_size", "checkpoint_history_lines_negative",
                      "checkpoint_version_negative", "versions_swapped", "version_not_yaml", "version_missing",
                      "rewrite_args_string", "start_config_string", "history_invalid_utf8", "end_without_summary",
                      "history_line_not_object", "history_unknown_event"}


@pytest.fixture(scope="module")
def interrupted(data_root, tmp_path_factory):
    """A real run with a rewrite, made to look killed after its last checkpoint (no end event, no summary)."""
    root = tmp_path_factory.mktemp("malformed_runs")
    cfg = tiny_config(data_root, epochs=6)
    run_file = root / "run.yaml"
    run_file.write_text(yaml.safe_dump(cfg))
    run = root / "run"
    archgraph.grow(cfg, run, quiet=True)
    assert any(json.loads(line)["event"] == "rewrite" for line in _lines(run)), "the fixture run must rewrite"
    return run_file, run


def _interrupt(run):
    """The run as a kill just before its end event would leave it."""
    lines = _lines(run)
    assert json.loads(lines[-1])["event"] == "end"
    _write_lines(run, lines[:-1])
    (run / "weights" / "final.safetensors").unlink()


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_every_tool_answers_a_damaged_run_folder_in_one_line(interrupted, tmp_path, capsys, damage):
    run_file, base = interrupted
    run = tmp_path / "run"
    shutil.copytree(base, run)
    if damage != "summary_not_json":
        _interrupt(run)
        (run / "summary.json").unlink()
    DAMAGES[damage](run)
    argvs = {"replay": ["replay", str(run), "-o", str(tmp_path / "replayed")],
             "report": ["report", str(run), "-o", str(tmp_path / "r.html")],
             "plot": ["plot", str(run), "-o", str(tmp_path / "p.png")],
             "render": ["render", str(run), "-o", str(tmp_path / "h.svg")],
             "resume": ["grow", str(run_file), "--out", str(run), "--resume", "--quiet"]}
    for name, argv in argvs.items():
        capsys.readouterr()
        code = cli(argv)
        err = capsys.readouterr().err
        assert code in (0, 2), (name, code, err)
        if code == 2:
            assert err.startswith("archgraph: error:") and err.count("\n") == 1, (name, err)
        if name == "resume" and damage in MUST_REFUSE_RESUME:
            assert code == 2, f"grow --resume accepted {damage}"
