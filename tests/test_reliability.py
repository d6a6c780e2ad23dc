"""Reliability and security (issue 26): each test closes a class of fault, not one case.

* generated code: nothing from a graph file reaches exported Python except as an escaped literal;
* run folders: resume only a run, never delete what a run did not write, never write through a link, one writer;
* output folders: written as one unit, a full disk named as such.
"""
import contextlib
import errno
import importlib.util
import os
import sys

import pytest
from graph_texts import MLP, mlp_named

import archgraph
from archgraph.history import rundir
from archgraph.interop.export import export_python

HOSTILE_NAMES = [
    'x"""+str(__import__("os").system("touch PWNED"))+"""',
    "x'''+str(__import__('os').system('touch PWNED'))+'''",
    'a\\"""\nimport os; os.system("touch PWNED")\n"""',
    "<net> javascript:alert(1) \x1b[31mred\x1b[0m \u202e\u00e9\u4e2d",
    "None", "class", "self", "\\", "\r\n\"\"\"\\N{", "",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_exported_python_with_a_hostile_graph_name_imports_without_running_it(tmp_path, monkeypatch, name):
    graph = mlp_named(name)
    path = tmp_path / "m.py"
    export_python(graph, path)
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location(f"hostile_{abs(hash(name))}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert not (tmp_path / "PWNED").exists()
    assert mod.GRAPH_NAME == name                       # the name survives, as data
    assert mod.__doc__.count('"') == 0 and "\\" not in mod.__doc__
    import torch
    (cls,) = [v for v in vars(mod).values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
              and v.__module__ == mod.__name__]
    assert cls.__name__.isidentifier() and cls.__name__.isascii()
    assert cls()(torch.zeros(1, 4)).shape == (1, 2)


# ---- run folders: resume only a run, no links, one writer ---------------------------------------------------------
from train_helpers import tiny_config  # noqa: E402

from archgraph.cli import main as cli  # noqa: E402
from archgraph.errors import ArchgraphError, ConfigError  # noqa: E402
from archgraph.history.rundir import RunDir  # noqa: E402


def user_folder(root):
    """A folder that looks like a run's output but was never one (the user's own files)."""
    (root / "versions").mkdir(parents=True)
    (root / "weights").mkdir()
    (root / "versions" / "0001.yaml").write_text("mine\n")
    (root / "summary.json").write_text('{"mine": 1}\n')
    (root / "weights" / "final.safetensors").write_bytes(b"mine")
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_resume_on_a_folder_that_is_not_a_run_is_refused_and_deletes_nothing(data_root, tmp_path):
    folder = tmp_path / "mine"
    before = user_folder(folder)
    with pytest.raises(ConfigError, match="not a run folder"):
        archgraph.grow(tiny_config(data_root, epochs=1), folder, quiet=True, resume=True)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    with pytest.raises(ConfigError, match="does not exist"):          # a typo in --out
        archgraph.grow(tiny_config(data_root, epochs=1), tmp_path / "typo", quiet=True, resume=True)
    assert not (tmp_path / "typo").exists()
    assert not (folder / ".lock").exists()


def test_resume_cli_on_a_non_run_exits_2(data_root, tmp_path, capsys):
    import yaml
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(tiny_config(data_root, epochs=1)))
    folder = tmp_path / "mine"
    user_folder(folder)
    assert cli(["grow", str(run_file), "--out", str(folder), "--resume", "--quiet"]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_links_inside_a_run_folder_are_refused(data_root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "0007.yaml").write_text("victim\n")
    for planted in ("history.jsonl", "versions"):
        out = tmp_path / f"run_{planted}"
        out.mkdir()
        target = outside / "dangling" if planted == "history.jsonl" else outside
        os.symlink(target, out / planted)
        for resume in (False, True):
            with pytest.raises(ConfigError, match="symbolic link"):
                archgraph.grow(tiny_config(data_root, epochs=1), out, quiet=True, resume=resume)
    assert sorted(p.name for p in outside.iterdir()) == ["0007.yaml"]
    run = RunDir(tmp_path / "run_versions")       # and each write checks again (a link planted during a run)
    with pytest.raises(ArchgraphError, match="symbolic link"):
        run.write_version(0, archgraph.loads(MLP))
    with pytest.raises(ArchgraphError, match="symbolic link"):
        run.rewind(0, -1)
    assert sorted(p.name for p in outside.iterdir()) == ["0007.yaml"]


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(data_root, tmp_path):
    import socket
    import subprocess
    out = tmp_path / "run"
    with RunDir(out).locked():
        assert (out / ".lock").read_text().split()[0] == str(os.getpid())
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            archgraph.grow(tiny_config(data_root, epochs=1), out, quiet=True)
        with pytest.raises(ConfigError, match="another archgraph process"):
            with RunDir(out).locked():
                pass
    assert not (out / ".lock").exists()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / ".lock").write_text(f"{gone.stdout.strip()} {socket.gethostname()}\n")   # its process has ended
    summary = archgraph.grow(tiny_config(data_root, "dense", epochs=1), out, quiet=True)
    assert summary["versions"] >= 1 and not (out / ".lock").exists()


def test_a_lock_held_by_a_killed_but_unreaped_process_is_stale(tmp_path):
    """A SIGKILLed writer whose parent has not reaped it yet (a zombie: a killed torchrun job's ranks) holds no lock."""
    import signal
    import socket
    import subprocess
    import time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / ".lock"
        lock.write_text(f"{child.pid} {socket.gethostname()}\n")
        assert rundir._lock_holder(lock) == f"pid {child.pid} on {socket.gethostname()}"   # alive: held
        child.send_signal(signal.SIGKILL)
        for _ in range(200):                          # not waited for: it stays a zombie of this process
            if rundir._is_zombie(child.pid):
                break
            time.sleep(0.01)
        assert rundir._is_zombie(child.pid)
        assert rundir._lock_holder(lock) is None
    finally:
        child.kill()
        child.wait()


# ---- output folders: one unit, a full disk named ------------------------------------------------------------------
def test_a_full_disk_leaves_the_previous_output_folder_whole(tmp_path, monkeypatch, capsys):
    from archgraph.fx import weights
    graph = tmp_path / "g.yaml"
    graph.write_text(MLP)
    out = tmp_path / "out"
    assert cli(["apply", str(graph), "add_filters", "node=fc1", "count=2", "-o", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(tensors, fh, *args, **kwargs):   # the weights are the second file written: the graph is staged
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(weights, "write_safetensors", full_disk)
    for argv in (["apply", str(graph), "add_filters", "node=fc1", "count=5", "-o", str(out), "--force"],
                 ["prune", str(out / "graph.yaml"), "--weights", str(out / "weights.safetensors"), "--ratio", "0.5",
                  "-o", str(out), "--force"]):
        capsys.readouterr()
        assert cli(argv) == 2
        err = capsys.readouterr().err
        assert "weights.safetensors" in err and "no space left" in err and "Traceback" not in err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before   # no new graph, no temporary left


# ---- pictures: every text a plain label ---------------------------------------------------------------------------
PICTURE_NAMES = [
    '<<TABLE><TR><TD HREF="javascript:alert(1)">click</TD></TR></TABLE>>',
    '<x>]; injected [label="click" URL="javascript:alert(1)" href="javascript:alert(1)"]; y [label=<y>',
    "<net>", 'x" URL="javascript:alert(1)', 'a"]; evil [URL="javascript:alert(1)" label="', "back\\", "\\N\\G\\L",
    "tab\there\x1b[31m",
]


def no_link(svg: str) -> None:
    """No link element or attribute in the picture (the hostile text shows, escaped, as text)."""
    import xml.etree.ElementTree as ET
    for element in ET.fromstring(svg[svg.index("<svg"):]).iter():
        assert not element.tag.endswith("}a") and element.tag != "a"
        assert not any("href" in key.lower() for key in element.attrib)


@pytest.mark.parametrize("name", PICTURE_NAMES)
def test_hostile_names_in_every_picture_are_plain_text(tmp_path, name, capsys):
    from rundir_fixture import steps_from_rules, write_run

    from archgraph.format.yaml_io import dumps
    from archgraph.history.report import report_data
    from archgraph.rules import AddFilters
    seed = mlp_named(name)
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(dumps(seed))
    b.write_text(dumps(archgraph.apply(seed, AddFilters(node="fc1", count=2)).graph))
    assert cli(["render", str(a), "-o", str(tmp_path / "g.svg")]) == 0, capsys.readouterr().err
    assert cli(["diff", str(a), str(b), "-o", str(tmp_path / "d.svg")]) == 0, capsys.readouterr().err
    run = write_run(tmp_path / "run", seed, steps_from_rules(seed, [AddFilters(node="fc1", count=2)]),
                    config={"name": name, "seed": 0})
    assert cli(["render", str(run), "-o", str(tmp_path / "h.svg")]) == 0, capsys.readouterr().err
    assert cli(["report", str(run), "-o", str(tmp_path / "r.html")]) == 0, capsys.readouterr().err
    for svg in ("g.svg", "d.svg", "h.svg"):
        no_link((tmp_path / svg).read_text())
    data = report_data(run)
    pictures = [p for v in data["versions"] for k, p in v.items() if isinstance(p, str) and "<svg" in p]
    assert pictures
    for svg in pictures:
        no_link(svg)


# ---- sweeps: paths and values read from a study are checked -------------------------------------------------------
def tampered_study(tmp_path, record=None, values=(0.9, 100.0), attr=None):
    import optuna

    from archgraph.sweep import plan
    from archgraph.sweep.front import front_data
    root = os.path.join(os.path.dirname(__file__), "..", "examples", "digits_gnap.yaml")
    out = tmp_path / "sweep"
    (out / "trials" / "0000" / "seed-0").mkdir(parents=True)
    spec = plan(root, out, ["method.param_cost=loguniform:0.0005:0.5"], trials=1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name=spec.study_name,
                                directions=["maximize", "minimize"])
    study.set_user_attr("archgraph_sweep", attr if attr is not None else spec.identity)
    record = record if record is not None else {"seed": 0, "run": "trials/0000/seed-0", "params": 10}
    study.add_trial(optuna.trial.create_trial(values=list(values), user_attrs={"seed-0": record}))
    return lambda: front_data(study, spec), spec


@pytest.mark.parametrize("run", ["../../victim", "/etc", "trials/../../victim", 5, None])
def test_a_study_run_path_out_of_the_sweep_folder_is_refused(tmp_path, run):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "summary.json").write_text('{"test_acc": 0.123}')
    front, _ = tampered_study(tmp_path, {"seed": 0, "run": run, "params": 10})
    with pytest.raises(ConfigError, match="run path"):
        front()


@pytest.mark.parametrize("record,values", [("not a dict", (0.9, 100.0)), ({"run": "trials/0000/seed-0",
                                           "params": "many"}, (0.9, 100.0)), (None, (0.9, float("inf")))])
def test_tampered_study_records_are_one_line_errors(tmp_path, record, values):
    front, _ = tampered_study(tmp_path, record, values)
    with pytest.raises(ConfigError, match="study"):
        front()


def test_a_study_attribute_that_is_not_a_sweeps_is_refused(tmp_path):
    from archgraph.sweep.runner import prepare
    _, spec = tampered_study(tmp_path, attr=5)
    with pytest.raises(ConfigError, match="archgraph_sweep attribute"):
        prepare(spec)
    from archgraph.sweep import plan
    with pytest.raises(ConfigError, match="in-memory"):
        plan(spec.run_file, tmp_path / "s2", ["method.param_cost=loguniform:0.0005:0.5"], trials=1,
             storage="sqlite:///:memory:")


@pytest.mark.parametrize("table,value", [("study_user_attributes", "{not json"),
                                         ("study_user_attributes", "5"),
                                         ("study_user_attributes", "[1, 2]"),
                                         ("trial_user_attributes", "{not json")])
def test_a_tampered_study_attribute_is_a_one_line_error_of_the_sweep_command(tmp_path, capsys, table, value):
    """A finished sweep run again only reads the study back for its front: a study.db edited so that its
    archgraph_sweep attribute (or a trial's record) is not JSON, or not a mapping, is one line and exit 2."""
    import sqlite3
    tampered_study(tmp_path)
    out = tmp_path / "sweep"
    key = "archgraph_sweep" if table == "study_user_attributes" else "seed-0"
    with contextlib.closing(sqlite3.connect(out / "study.db")) as db, db:
        assert db.execute(f"UPDATE {table} SET value_json = ? WHERE key = ?", (value, key)).rowcount == 1
    root = os.path.join(os.path.dirname(__file__), "..", "examples", "digits_gnap.yaml")
    code = cli(["sweep", root, "--param", "method.param_cost=loguniform:0.0005:0.5", "--trials", "1",
                "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("archgraph: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "study" in err
    assert not (out / "pareto.json").exists()


# ---- terminal escapes and usage errors ----------------------------------------------------------------------------
def test_terminal_escape_bytes_in_user_text_are_escaped_in_every_message(tmp_path, capsys):
    evil = "\x1b]0;pwned\x07\x1b[2J\u202e"
    graph = tmp_path / "g.yaml"
    graph.write_text(MLP.replace("in: act", f"in: 'act{evil}'"))
    runs = [["validate", str(graph)], ["validate", str(tmp_path / f"missing{evil}.yaml")],
            ["render", str(tmp_path / f"x{evil}.yaml"), "-o", str(tmp_path / "x.svg")],
            ["apply", str(graph), "add_filters", f"node=fc{evil}", "count=1", "-o", str(tmp_path / "o")],
            ["summary", str(graph)], ["prune", str(graph), "-o", str(tmp_path / f"p{evil}")]]
    for argv in runs:
        capsys.readouterr()
        with pytest.raises(SystemExit) if argv[0] == "prune" else contextlib.nullcontext():
            assert cli(argv) == 2
        out = capsys.readouterr()
        text = out.err + out.out
        assert "archgraph: error:" in text and not any(ch in text for ch in "\x1b\x07\u202e"), (argv, text)
        assert text.count("\n") == 1, text   # one line


def test_a_missing_required_option_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli(["prune", "g.yaml", "-o", "out"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "--weights" in err and "usage" not in err


# ---- unbounded input ----------------------------------------------------------------------------------------------
def test_a_rule_over_the_width_limit_is_refused_before_it_allocates():
    import tracemalloc

    from archgraph.errors import RuleError
    from archgraph.rules import InsertBlock
    graph = archgraph.load(os.path.join(os.path.dirname(__file__), "..", "examples", "seeds", "tiny_cnn.yaml"))
    after = next(n for n, node in graph.nodes.items() if node.op == "relu")
    tracemalloc.start()
    try:
        with pytest.raises(RuleError, match="over the limit"):
            archgraph.apply(graph, InsertBlock(after=after, width=10 ** 9))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2 ** 20


def test_yaml_alias_expansion_is_counted_apart_from_plain_size():
    from archgraph.errors import YamlError
    from archgraph.format.yaml_io import MAX_EXPANDED_NODES, parse_yaml
    plain = "{" + ", ".join(f"k{i}: {i}" for i in range(MAX_EXPANDED_NODES)) + "}"   # 400,001 values, no alias
    assert len(parse_yaml(plain)) == MAX_EXPANDED_NODES
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdef", "bcdefg"))
    with pytest.raises(YamlError, match="alias"):
        parse_yaml(bomb)


@pytest.mark.parametrize("command", ["validate", "apply"])
def test_a_fifo_without_a_writer_times_out(tmp_path, monkeypatch, capsys, command):
    import time

    from archgraph.format import yaml_io
    monkeypatch.setattr(yaml_io, "PIPE_TIMEOUT_S", 0.5)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    graph = tmp_path / "g.yaml"
    graph.write_text(MLP)
    argv = {"validate": ["validate", str(fifo)],
            "apply": ["apply", str(graph), "add_filters", "node=fc1", "count=1", "--weights", str(fifo), "-o",
                      str(tmp_path / "o")]}[command]
    t0 = time.monotonic()
    assert cli(argv) == 2
    assert time.monotonic() - t0 < 30 and "sent nothing" in capsys.readouterr().err


# ---- numbers: finite unless said otherwise, ranges, checked before anything is written ---------------------------
@pytest.mark.parametrize("node", [
    "{op: group_norm, in: c, num_groups: 2, eps: .nan}", "{op: group_norm, in: c, num_groups: 2, eps: -1.0}",
    "{op: leaky_relu, in: c, negative_slope: .inf}", "{op: scale, in: c, init: .nan}",
    "{op: pad, in: c, padding: [1, 1, 1, 1], value: .nan}", "{op: upsample, in: c, scale_factor: .inf}"])
def test_non_finite_node_fields_are_refused(node):
    from archgraph.errors import GraphError
    text = f"archgraph: 1\ninputs: {{x: [2, 4, 4]}}\nnodes:\n  c: {{op: conv2d, in: x, out_channels: 4, " \
           f"kernel_size: 1}}\n  n: {node}\noutputs: [n]\n"
    with pytest.raises(GraphError, match="finite|greater than|NaN"):
        archgraph.loads(text)


def test_pad_may_be_minus_infinity():
    text = "archgraph: 1\ninputs: {x: [2, 4, 4]}\nnodes:\n  p: {op: pad, in: x, padding: [1, 1, 1, 1], value: -.inf}" \
           "\noutputs: [p]\n"
    assert archgraph.loads(text).nodes["p"].value == float("-inf")


@pytest.mark.parametrize("setting", ["schedule.lr=.nan", "schedule.weight_decay=.inf", "method.min_gain=.inf",
                                     "method.threshold_init=.nan", "schedule.seed=100000000000000000000000000",
                                     "schedule.threads=100000"])
def test_bad_numbers_in_a_run_file_fail_validate_and_grow_before_writing(data_root, tmp_path, capsys, setting):
    import yaml

    from archgraph.cli.grow import parse_settings
    cfg = tiny_config(data_root, epochs=1)
    key, value = setting.split("=")
    section, field = key.split(".")
    cfg[section][field] = parse_settings([setting])[key]
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(cfg))
    assert cli(["validate", str(run_file)]) == 2
    assert key in capsys.readouterr().err
    out = tmp_path / "out"
    assert cli(["grow", str(run_file), "--out", str(out), "--quiet"]) == 2
    assert key in capsys.readouterr().err
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_sweep_seeds_and_hf_sizes_are_clear_errors(tmp_path, capsys):
    assert cli(["sweep", os.path.join(os.path.dirname(__file__), "..", "examples", "digits_gnap.yaml"), "--param",
                "method.param_cost=loguniform:0.0005:0.5", "--trials", "1", "--seeds", "100000000000000000000000000",
                "--out", str(tmp_path / "s")]) == 2
    assert "--seeds" in capsys.readouterr().err
    from archgraph.cli.import_model import parse_config
    for bad in ("n_embd=-4", "n_head=NaN", "n_embd=100000000000000"):
        with pytest.raises(ConfigError):
            parse_config([bad])


def test_float8_weights_are_a_clear_error(tmp_path, capsys):
    import torch

    from archgraph.fx.builder import build
    from archgraph.fx.weights import save_weights
    graph = tmp_path / "g.yaml"
    graph.write_text(MLP)
    state = {k: v.to(torch.float8_e4m3fn) for k, v in build(archgraph.loads(MLP)).state_dict().items()}
    save_weights(state, tmp_path / "w.safetensors")
    assert cli(["apply", str(graph), "add_filters", "node=fc1", "count=1", "--weights", str(tmp_path / "w.safetensors"),
                "-o", str(tmp_path / "o")]) == 2
    assert "float8_e4m3fn" in capsys.readouterr().err


# ---- a new user's findings ----------------------------------------------------------------------------------------
def test_no_progress_bar_when_stderr_is_not_a_terminal(data_root, tmp_path, capfd):
    archgraph.grow(tiny_config(data_root, "dense", epochs=2), tmp_path / "run")
    err = capfd.readouterr().err
    assert "\r" not in err
    assert [line for line in err.splitlines() if line.startswith("epoch ")] == \
        [line for line in err.splitlines() if "epoch " in line and "/2" in line]
    assert sum(line.startswith("epoch ") for line in err.splitlines()) == 2


def test_a_text_run_shows_bits_per_character_in_its_pictures(tmp_path, capsys):
    import json as _json

    from rundir_fixture import steps_from_rules, write_run

    from archgraph.history.report import report_data
    from archgraph.history.run import Run
    from archgraph.history.timeline import history_dot, main_metric
    from archgraph.rules import AddFilters
    seed = archgraph.loads(MLP)
    run = write_run(tmp_path / "run", seed, steps_from_rules(seed, [AddFilters(node="fc1", count=2)]),
                    extra_metrics={"val_bpc": 2.5, "train_bpc": 2.4})
    summary = _json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(_json.dumps({**summary, "test_acc": 0.4, "test_bpc": 2.25}))
    assert main_metric(Run(run)) == "val_bpc"
    dot = history_dot(run)
    assert "test_bpc 2.250" in dot and "test_acc" not in dot
    assert report_data(run)["series"]["val_bpc"]


def test_summary_prints_token_inputs_in_words(tmp_path, capsys):
    path = os.path.join(os.path.dirname(__file__), "..", "examples", "seeds", "gpt_tiny.yaml")
    assert cli(["summary", path]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "token ids <" in first and "{" not in first


def test_insert_block_names_no_default_that_depends_on_the_graph(capsys):
    from archgraph.rules import InsertBlock, parse
    rule = InsertBlock(after="x")
    assert "norm=batchnorm" not in str(rule) and "norm='auto'" in repr(rule)
    assert parse("insert_block", {"after": "x", "norm": "auto"}) == rule
    with pytest.raises(SystemExit):
        cli(["apply", "--help"])
    out = capsys.readouterr().out
    assert "norm=auto" in out and "layernorm and gelu" in out and max(map(len, out.splitlines())) <= 120
    gpt = archgraph.load(os.path.join(os.path.dirname(__file__), "..", "examples", "seeds", "gpt_tiny.yaml"))
    after = next(n for n in gpt.nodes if len(gpt.shape(n)) == 2)
    assert archgraph.apply(gpt, InsertBlock(after=after)).rule.norm == "layernorm"


def test_dynamic_hw_refusal_is_one_sentence_without_internal_text(tmp_path, capsys):
    from archgraph.fx.builder import build
    from archgraph.fx.weights import save_weights
    text = ("archgraph: 1\ninputs: {x: [2, 4, 4]}\nnodes:\n  f: {op: flatten, in: x}\n  fc1: {op: linear, in: f, "
            "out_features: 3}\noutputs: [fc1]\n")
    graph = tmp_path / "g.yaml"
    graph.write_text(text)
    save_weights(build(archgraph.loads(text)).state_dict(), tmp_path / "w.safetensors")
    assert cli(["export", str(graph), "--weights", str(tmp_path / "w.safetensors"), "--onnx", str(tmp_path / "d.onnx"),
                "--dynamic-hw"]) == 2
    err = capsys.readouterr().err
    assert "node 'fc1' would need weights of another shape" in err and "export without --dynamic-hw" in err
    assert "<weights>" not in err and "field 'weight'" not in err and "tensor" not in err


def test_insert_layer_after_a_sequence_keeps_the_function():
    import torch

    from archgraph.fx.builder import build
    from archgraph.fx.materialise import materialise
    from archgraph.rules import InsertLayer
    gpt = archgraph.load(os.path.join(os.path.dirname(__file__), "..", "examples", "seeds", "gpt_tiny.yaml"))
    rw = archgraph.apply(gpt, InsertLayer(after="wpe"))
    assert rw.exact and rw.graph.nodes["wpe_fc"].out_features == gpt.shape("wpe")[-1]
    old = build(gpt, seed=0).eval()
    new = materialise(rw, old, seed=1).eval()
    x = torch.randint(0, 65, (3, 32))
    with torch.no_grad():
        assert torch.allclose(old(x), new(x), atol=1e-5)
