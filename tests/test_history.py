"""Reading run directories and drawing them: the log, versions, metrics, history timeline, diff, plot, report."""
import json
import re
from pathlib import Path

import pytest
from rundir_fixture import edit_steps, insert_after, widen, write_run

import archgraph
from archgraph.cli import main
from archgraph.history.diff import diff_dot, graph_diff
from archgraph.history.run import HistoryError, Run, read_events

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "seeds" / "tiny_cnn.yaml"


def _drop(graph, nid):
    """``nid`` removed, its readers reading its input instead (a hand edit standing in for delete_node)."""
    nodes = dict(graph.nodes)
    src = nodes.pop(nid).inputs[0]
    nodes = {k: n.replace(inputs=[src if i == nid else i for i in n.inputs]) if nid in n.inputs else n
             for k, n in nodes.items()}
    return graph.replace(nodes=nodes)


@pytest.fixture
def run_dir(tmp_path):
    seed = archgraph.load(SEED)
    steps = edit_steps(seed, [
        ("add_filters", {"node": "c1", "count": 4, "init": "preserve"}, lambda g: widen(g, "c1", 4)),
        ("insert_layer", {"after": "r3", "op": "conv2d", "kernel_size": 3, "norm": None, "activation": None,
                          "init": "identity"},
         lambda g: insert_after(g, "r3", "c4", {"op": "conv2d", "out_channels": 8, "kernel_size": 3,
                                                "padding": 1})),
        ("prune_channels", {"node": "c2", "indices": [0, 2, 5]}, lambda g: widen(g, "c2", -3)),
        ("delete_node", {"node": "p2"}, lambda g: _drop(g, "p2")),
    ])
    return write_run(tmp_path / "run", seed, steps)


def test_run_reads_versions_events_and_metrics(run_dir):
    run = Run(run_dir)
    assert [v.version for v in run.versions] == [0, 1, 2, 3, 4] and run.latest == 4
    assert run.stored_versions() == [0, 1, 2, 3, 4]
    v1 = run.version(1)
    assert v1.rule == "add_filters" and v1.args == {"node": "c1", "count": 4, "init": "preserve"}
    assert v1.kind == "growth" and run.version(3).kind == "prune"
    assert v1.rule_label() == "add_filters(node=c1, count=4, init=preserve)"
    assert run.graph(1).nodes["c1"].out_channels == 8
    assert archgraph.graph.content_hash(run.graph(2)) == run.version(2).hash
    # metrics when version 2 was made: the last epoch before its rewrite, overlaid with the rewrite's own numbers
    made = run.metrics_at(2)
    assert made["params"] == run.graph(2).params
    assert made["val_acc"] == run.epochs_of(1)[-1]["metrics"]["val_acc"]
    assert run.metrics_end(2)["val_acc"] == run.epochs_of(2)[-1]["metrics"]["val_acc"]
    assert run.x_axis == "step"
    xs, ys = run.series("val_acc")
    assert len(xs) == len(run.epochs) and xs == sorted(xs) and ys[-1] > ys[0]
    xs, _ = run.series("params", with_rewrites=True)
    assert len(xs) == len(run.epochs) + len(run.rewrites)
    assert run.summary["versions"] == 5 and run.end["summary"] == run.summary
    with pytest.raises(HistoryError, match="version 9 does not exist"):
        run.version(9)


def test_cut_short_last_line_and_a_bad_line_are_errors_naming_the_line(run_dir):
    log = run_dir / "history.jsonl"
    whole = len(read_events(log))
    text = log.read_text()
    with open(log, "a") as fh:
        fh.write('{"event": "epoch", "epoch": 99, "st')  # a crash in the middle of a write, or a truncated file
    with pytest.raises(HistoryError, match=f"line {whole + 1} is cut short") as err:
        read_events(log)
    assert err.value.file == str(log)
    log.write_text(text.rstrip("\n"))  # a whole last line without its newline is still read
    assert len(read_events(log)) == whole
    lines = log.read_text().splitlines()
    lines[3] = lines[3][:-5]
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(HistoryError, match="line 4 is not valid JSON"):
        read_events(log)
    log.write_text('{"event": "party"}\n')
    with pytest.raises(HistoryError, match="line 1 is not an event"):
        read_events(log)


def test_broken_version_chain_is_an_error(run_dir):
    log = run_dir / "history.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    rewrites = [e for e in events if e["event"] == "rewrite"]
    rewrites[1]["version"] = 5
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    with pytest.raises(HistoryError, match="makes version 5 from 1, but the next version should be 2") as err:
        Run(run_dir).versions
    assert err.value.rule == "insert_layer"


def test_not_a_run_directory(tmp_path, capsys):
    with pytest.raises(HistoryError, match="history.jsonl is missing"):
        Run(tmp_path)
    assert main(["plot", str(tmp_path), "-o", str(tmp_path / "x.png")]) == 2
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert main(["render", str(tmp_path), "-o", str(tmp_path / "x.svg")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "history.jsonl is missing" in err


def test_history_picture_labels_every_edge_with_its_rule(run_dir, tmp_path):
    out = tmp_path / "history.svg"
    assert main(["render", str(run_dir), "-o", str(out)]) == 0
    text = out.read_text()
    for k in range(5):
        assert f">v{k}<" in text
    for label in ("add_filters", "insert_layer", "prune_channels", "delete_node", "node=c1", "count=4",
                  "indices=[0,2,5]", "val_acc"):
        assert label in text, label
    run = Run(run_dir)
    assert f"{run.graph(3).params:,} params" in text
    # four rule edges, coloured by kind (growth green, prune red)
    assert len(re.findall(r'class="edge"', text)) == 4
    assert text.count('<path fill="none" stroke="#dc3545"') == 2
    assert text.count('<path fill="none" stroke="#198754"') == 2


def test_graph_diff_classifies_changes():
    a = archgraph.load(SEED)
    b = _drop(widen(widen(a, "c1", 4), "c2", -3), "p2")
    b = insert_after(b, "r3", "c4", {"op": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1})
    d = graph_diff(a, b)
    assert d.added == ("c4",) and d.removed == ("p2",)
    assert d.widened == {"c1": 4} and d.pruned == {"c2": 3}
    assert d.changed == {"c3": "in p2 -> r2", "gap": "in r3 -> c4"}
    assert not graph_diff(a, a) and graph_diff(a, a).lines() == []
    src = diff_dot(a, b)
    for mark in ("widened +4", "pruned -3", "added", "removed", "changed: in p2 -> r2", "style=dashed"):
        assert mark in src, mark


def test_diff_cli_draws_and_prints(tmp_path, capsys):
    a = archgraph.load(SEED)
    archgraph.save(widen(a, "c1", 4), tmp_path / "b.yaml")
    out = tmp_path / "d.svg"
    assert main(["diff", str(SEED), str(tmp_path / "b.yaml"), "-o", str(out)]) == 0
    assert "widened: c1 +4" in capsys.readouterr().out
    svg = out.read_text()
    assert "widened +4" in svg and "#9ec5fe" in svg
    assert main(["diff", str(SEED), str(tmp_path / "b.yaml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["widened"] == {"c1": 4}
    assert main(["diff", str(SEED), str(tmp_path / "missing.yaml")]) == 2


def test_render_graph_is_unchanged_by_the_diff_options():
    g = archgraph.load(SEED)
    from archgraph.history.render import to_dot
    plain = to_dot(g)
    assert "__legend" not in plain and "dashed" not in plain


def test_plot_writes_a_picture_with_events(run_dir, tmp_path):
    from PIL import Image
    out = tmp_path / "curves.png"
    assert main(["plot", str(run_dir), "-o", str(out)]) == 0
    img = Image.open(out).convert("RGB")
    assert img.size[0] > 500 and len(set(img.get_flattened_data())) > 50
    svg = tmp_path / "curves.svg"
    from archgraph.history.plots import history_figure, plot_history
    plot_history(run_dir, svg)
    assert "<svg" in svg.read_text()
    fig = history_figure(run_dir)
    acc = fig.axes[0]
    # two curves, plus one vertical line per rewrite event
    assert len(acc.lines) == 2 + 4
    assert main(["plot", str(run_dir), "-o", str(tmp_path / "x.gif")]) == 2


def test_report_is_one_self_contained_page(run_dir):
    from archgraph.history.report import report_data
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    assert "{{" not in page
    # nothing is loaded from anywhere: no external src/href, and the page forbids fetching by policy
    assert not re.search(r'(src|href)\s*=\s*["\'](?!data:|#)', page)
    assert "default-src 'none'" in page
    blob = re.search(r'<script id="report-data" type="application/json">(.*?)</script>', page, re.S).group(1)
    data = json.loads(blob)
    assert [v["version"] for v in data["versions"]] == [0, 1, 2, 3, 4]
    assert data["versions"][1]["label"] == "add_filters(node=c1, count=4, init=preserve)"
    assert data["versions"][1]["changes"] == ["widened: c1 +4"]
    assert data["versions"][2]["focus"] == "c4"
    assert data["versions"][0]["diff_svg"] is None
    for v in data["versions"]:
        assert v["graph_svg"].startswith("<svg")
        assert v["version"] == 0 or "<svg" in v["diff_svg"]
    assert len(data["events"]) == 4 and {e["kind"] for e in data["events"]} == {"growth", "prune"}
    assert data["series"]["val_acc"] and data["x_axis"] == "step"
    assert data == json.loads(json.dumps(report_data(run_dir)))


def test_report_data_cannot_close_its_script_element(tmp_path):
    from archgraph.history.report import render_report
    page = render_report({"run": "x", "versions": [], "note": "</script><script>alert(1)</script> {{js}}"})
    assert page.count("</script>") == 2  # the data element's and the code's own
    assert "{{js}}" in json.loads(re.search(r'application/json">(.*?)</script>', page, re.S).group(1))["note"]


def test_template_is_found_in_the_checkout():
    from archgraph.history.report import TEMPLATE_FILES, template_dir
    folder = template_dir()
    assert all((folder / name).is_file() for name in TEMPLATE_FILES)
    assert folder.resolve() == (ROOT / "viz").resolve()
