"""Replay rebuilds every version of a run from its seed and rule log alone, and refuses a log that does not match."""
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rundir_fixture import edit_steps, steps_from_rules, widen, write_run
from strategies import graphs

import archgraph
from archgraph import rules
from archgraph.cli import main
from archgraph.errors import RuleError
from archgraph.graph import content_hash
from archgraph.history.run import HistoryError, Run, replay, replay_steps

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "seeds" / "tiny_cnn.yaml"


def _rules():
    return [
        rules.AddFilters(node="c1", count=4, init="preserve"),
        rules.InsertLayer(after="r2", op="conv2d", kernel_size=3, norm="batchnorm", activation="relu"),
        rules.PruneChannels(node="c2", indices=(0, 2, 5)),
        rules.SplitFilters(node="c3", indices=(1,)),
        rules.AddFilters(node="c2", count=2, init="net2net"),
    ]


@pytest.fixture
def run_dir(tmp_path):
    seed = archgraph.load(SEED)
    return write_run(tmp_path / "run", seed, steps_from_rules(seed, _rules()))


def test_every_version_replays_to_its_stored_graph(run_dir):
    run = Run(run_dir)
    assert run.latest == 5
    seen = []
    for record, graph in replay_steps(run_dir):
        assert graph == run.graph(record.version)
        assert content_hash(graph) == record.hash
        seen.append(record.version)
    assert seen == [0, 1, 2, 3, 4, 5]
    assert archgraph.replay(run_dir, 3) == run.graph(3)
    assert replay(run_dir) == run.graph(5)


def test_replay_does_not_read_the_stored_versions(run_dir):
    # only the seed and the log: remove every other version file
    for path in (run_dir / "versions").glob("*.yaml"):
        if path.name != "0000.yaml":
            path.unlink()
    g = replay(run_dir, 5, check_files=False)
    assert content_hash(g) == Run(run_dir).version(5).hash


def test_a_deleted_version_file_is_an_error_naming_it(run_dir, capsys):
    """The CLI's help says replay checks every stored file: a missing one is not 'ok'."""
    (run_dir / "versions" / "0003.yaml").unlink()
    with pytest.raises(HistoryError, match="version 3 .* has no stored file") as err:
        replay(run_dir)
    assert err.value.file.endswith("0003.yaml")
    assert main(["replay", str(run_dir)]) == 2
    captured = capsys.readouterr()
    assert "0003.yaml" in captured.err and "v3 " not in captured.out


@pytest.mark.parametrize("command", ["replay", "report", "plot"])
def test_a_truncated_history_is_an_error_naming_file_and_line(run_dir, tmp_path, capsys, command):
    log = run_dir / "history.jsonl"
    data = log.read_bytes()
    log.write_bytes(data[:len(data) - 20])  # cut in the middle of the last line
    lines = data[:len(data) - 20].count(b"\n") + 1
    argv = [command, str(run_dir)] + (["-o", str(tmp_path / "p.png")] if command == "plot" else
                                      ["-o", str(tmp_path / "r.html")] if command == "report" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(log) in err and f"line {lines} is cut short" in err


def test_replay_cli_writes_the_graph(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["replay", str(run_dir), "--version", "4", "-o", str(out)]) == 0
    assert archgraph.load(out / "graph.yaml") == Run(run_dir).graph(4)
    printed = capsys.readouterr().out
    assert [line.split()[0] for line in printed.splitlines()[:-1]] == ["v0", "v1", "v2", "v3", "v4"]
    assert f"wrote {out / 'graph.yaml'}" in printed
    assert main(["replay", str(run_dir), "--version", "9"]) == 2
    assert "version 9 does not exist" in capsys.readouterr().err


def _rewrite_log(run_dir, change):
    log = run_dir / "history.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    change([e for e in events if e["event"] == "rewrite"])
    log.write_text("".join(json.dumps(e) + "\n" for e in events))


def test_a_changed_rule_argument_is_caught(run_dir, capsys):
    _rewrite_log(run_dir, lambda rw: rw[0]["args"].update(count=5))
    with pytest.raises(HistoryError) as err:
        replay(run_dir)
    assert err.value.rule == "add_filters"
    assert "version 1 replays to hash" in str(err.value)
    assert "nodes that differ from the stored graph: c1" in str(err.value)
    replay(run_dir, 0)  # the versions before the bad one still replay
    assert main(["replay", str(run_dir)]) == 2
    message = capsys.readouterr().err
    assert "version 1" in message and "add_filters" in message and "Traceback" not in message


def test_a_stored_version_that_differs_is_caught(run_dir):
    run = Run(run_dir)
    archgraph.save(widen(run.graph(3), "c1", 1), run_dir / "versions" / "0003.yaml")
    with pytest.raises(HistoryError, match="version 3 replays to hash .* but the stored file has") as err:
        replay(run_dir)
    assert err.value.rule == "prune_channels"  # the rule that made version 3
    replay(run_dir, check_files=False)


def test_an_edited_seed_is_caught(run_dir):
    seed = archgraph.load(run_dir / "versions" / "0000.yaml")
    archgraph.save(widen(seed, "c3", 1), run_dir / "versions" / "0000.yaml")
    with pytest.raises(HistoryError, match="version 0 .* recorded"):
        replay(run_dir, 0)


def test_a_rule_that_no_longer_applies_names_version_and_rule(run_dir):
    _rewrite_log(run_dir, lambda rw: rw[2]["args"].update(node="nope"))
    with pytest.raises(HistoryError, match="version 3 does not replay") as err:
        replay(run_dir)
    assert err.value.rule == "prune_channels"
    _rewrite_log(run_dir, lambda rw: rw[0].update(rule="grow_a_tail"))
    with pytest.raises(HistoryError, match="version 1 does not replay: unknown rule"):
        replay(run_dir)


def test_a_log_that_lies_about_the_rule_is_caught(tmp_path):
    # the graphs say c1 grew by 4, the log says by 2: replay follows the log and notices
    seed = archgraph.load(SEED)
    steps = edit_steps(seed, [("add_filters", {"node": "c1", "count": 2}, lambda g: widen(g, "c1", 4))])
    run_dir = write_run(tmp_path / "run", seed, steps)
    with pytest.raises(HistoryError, match="version 1 replays to hash"):
        replay(run_dir)


# ---- property: random rule sequences on random graphs -----------------------------------------------------------
def _width(node):
    f = node.fields()
    return f.get("out_channels", f.get("out_features"))


@st.composite
def rule_for(draw, graph):
    """One rule with arguments that make sense for ``graph`` (it may still refuse; the test then skips it)."""
    ids = list(graph.nodes)
    wide = [n for n in ids if _width(graph.nodes[n]) is not None]
    name = draw(st.sampled_from(sorted(rules.RULES)))
    node = draw(st.sampled_from(wide or ids))
    width = _width(graph.nodes[node]) or 1
    if name == "add_filters":
        return rules.AddFilters(node=node, count=draw(st.integers(1, 3)),
                                init=draw(st.sampled_from(["preserve", "random", "net2net", "zero"])))
    if name == "prune_channels":
        idx = draw(st.lists(st.integers(0, max(0, width - 1)), min_size=1, max_size=max(1, width - 1), unique=True))
        return rules.PruneChannels(node=node, indices=tuple(sorted(idx)))
    if name == "split_filters":
        return rules.SplitFilters(node=node, indices=(draw(st.integers(0, max(0, width - 1))),))
    if name in ("insert_layer", "insert_block"):
        after = draw(st.sampled_from(ids))
        cls = rules.RULES[name]
        return cls(after=after)
    if name == "prune_heads":   # refused (and skipped) on a node that is not an attention
        return rules.PruneHeads(node=draw(st.sampled_from(ids)), indices=(0,))
    if name == "prune_experts":   # refused (and skipped) on a node that is not a moe
        return rules.PruneExperts(node=draw(st.sampled_from(ids)), indices=(0,))
    if name == "stack_block":     # a copy of the nodes between two values (refused where they are no block)
        return rules.StackBlock(start=draw(st.sampled_from([*graph.inputs, *ids])), end=draw(st.sampled_from(ids)),
                                init=draw(st.sampled_from(["copy", "zero"])))
    return rules.RULES[name](node=draw(st.sampled_from(ids)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(seed=graphs(max_blocks=4), data=st.data())
def test_random_rule_sequences_replay_to_every_stored_hash(seed, data, tmp_path_factory):
    chosen, g = [], seed
    for _ in range(data.draw(st.integers(1, 6), label="rules")):
        for _attempt in range(4):  # many random rules do not fit (e.g. widening the output); try another
            rule = data.draw(rule_for(g), label="rule")
            try:
                g = archgraph.apply(g, rule).graph
            except RuleError:
                continue
            chosen.append(rule)
            break
    event(f"rules applied: {len(chosen)}")
    event("rules: " + " ".join(sorted({r.name for r in chosen})))
    run_dir = write_run(tmp_path_factory.mktemp("run"), seed, steps_from_rules(seed, chosen), epochs_per_version=1)
    run = Run(run_dir)
    assert run.latest == len(chosen)
    for record, graph in replay_steps(run_dir):
        assert content_hash(graph) == record.hash == content_hash(run.graph(record.version))
