"""End to end: `archgraph grow` and `archgraph.grow` on generated MNIST files through the real loaders; the run
directory's format; run-file errors exit with status 2 naming the file and the field."""
import json
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import ROOT
from train_helpers import TINY_SEED, events, tiny_config

import archgraph
from archgraph.cli import main
from archgraph.fx.weights import load_weights
from archgraph.graph import content_hash
from archgraph.shapes import count_nonzero_params

SUMMARY_KEYS = {"test_acc", "params", "nonzero_params", "macs", "versions", "growth_events", "prune_events",
                "wall_s", "world_size"}


@pytest.fixture(scope="module")
def gnap_run(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gnap"
    summary = archgraph.grow(tiny_config(data_root), out, quiet=True)
    return out, summary


def test_gnap_grows_and_prunes_and_writes_the_run_directory(gnap_run):
    run, summary = gnap_run
    assert SUMMARY_KEYS <= set(summary) and 0 <= summary["test_acc"] <= 1 and summary["world_size"] == 1
    assert summary["growth_events"] >= 1 and summary["prune_events"] >= 1
    assert json.loads((run / "summary.json").read_text()) == summary
    log = events(run)
    assert log[0]["event"] == "start" and log[-1] == {"event": "end", "summary": summary}
    versions = sorted((run / "versions").glob("*.yaml"))
    assert [p.name for p in versions] == [f"{i:04d}.yaml" for i in range(summary["versions"])]
    graphs = [archgraph.load(p) for p in versions]
    assert log[0]["hash"] == content_hash(graphs[0]) and log[0]["config"]["method"]["name"] == "gnap"
    rewrites = [e for e in log if e["event"] == "rewrite"]
    assert [e["version"] for e in rewrites] == list(range(1, summary["versions"]))
    for e in rewrites:
        assert e["parent"] == e["version"] - 1 and e["hash"] == content_hash(graphs[e["version"]])
        assert e["parent_hash"] == content_hash(graphs[e["parent"]]) and e["kind"] in ("growth", "prune")
        assert e["rule"] in archgraph.rules.RULES and {"params", "nonzero_params", "macs"} <= set(e["metrics"])
        # every version is the previous one with the logged rule applied
        rule = archgraph.rules.parse(e["rule"], e["args"])
        assert archgraph.apply(graphs[e["parent"]], rule).graph == graphs[e["version"]]
    assert sum(e["kind"] == "growth" for e in rewrites) == summary["growth_events"]
    epochs = [e for e in log if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, summary["epochs"] + 1))
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "params", "nonzero_params", "macs", "lr"} <= \
        set(epochs[0]["metrics"])
    seed = graphs[0]
    assert seed.nodes["c1"].out_channels == 2 and summary["params"] == graphs[-1].params


def test_final_weights_hold_exact_zeros_counted_honestly(gnap_run, data_root):
    run, summary = gnap_run
    graph = archgraph.load(run / "versions" / f"{summary['versions'] - 1:04d}.yaml")
    weights = load_weights(run / "weights" / "final.safetensors")
    assert count_nonzero_params(graph, weights) == summary["nonzero_params"] < summary["params"]
    assert summary["macs"] == graph.macs
    # the reported accuracy is the saved network's
    from archgraph.data.feed import load_data as load_dataset
    from archgraph.train.config import DataConfig
    ds = load_dataset(DataConfig(name="mnist", root=str(data_root), val_fraction=0.2))
    module = archgraph.build(graph)
    module.load_state_dict(weights)
    module.eval()
    x, y = ds.batch(ds.test, torch.arange(len(ds.test)))
    with torch.no_grad():
        acc = (module(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(summary["test_acc"])


def test_cli_grow_dense(tmp_path, data_root, capsys):
    cfg = tiny_config(data_root, method="dense", epochs=2)
    cfg["seed"] = "seed.yaml"
    (tmp_path / "seed.yaml").write_text(yaml.safe_dump(TINY_SEED))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert main(["grow", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out"), "--quiet",
                 "--set", "schedule.epochs=3"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert printed["test_acc"] == summary["test_acc"] and summary["epochs"] == 3
    assert summary["versions"] == 1 and summary["growth_events"] == summary["prune_events"] == 0
    assert summary["nonzero_params"] == summary["params"]
    # a finished run: --resume just reports it; a new run into a used directory is refused
    assert main(["grow", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out"), "--quiet", "--resume",
                 "--set", "schedule.epochs=3"]) == 0
    assert main(["grow", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err


def write_run(tmp_path, data):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return str(path)


@pytest.mark.parametrize("change,field", [
    (lambda c: c["method"].update(patiense=3), "method.patiense"),
    (lambda c: c["method"].update(name="magic"), "method.name"),
    (lambda c: c["schedule"].update(lr=-1), "schedule.lr"),
    (lambda c: c["data"].update(name="imagenet"), "data.name"),
    (lambda c: c.update(seed="missing.yaml"), "seed"),
    (lambda c: c["seed"]["nodes"]["fc"].update(out_features=3), "seed"),
])
def test_run_file_errors_exit_2_naming_file_and_field(tmp_path, capsys, change, field, data_root):
    cfg = tiny_config(data_root)
    change(cfg)
    path = write_run(tmp_path, cfg)
    assert main(["grow", path, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and f"field '{field}'" in err and "Traceback" not in err


def test_yaml_and_set_errors(tmp_path, capsys):
    assert main(["grow", write_run(tmp_path, "seed: [unclosed\n"), "--out", str(tmp_path / "o")]) == 2
    assert "bad.yaml" in capsys.readouterr().err
    assert main(["grow", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    path = write_run(tmp_path, {"seed": "s.yaml"})
    assert main(["grow", path, "--out", str(tmp_path / "o"), "--set", "schedule"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_schema_accepts_the_examples():
    import jsonschema
    schema = json.loads((ROOT / "schemas" / "run.schema.json").read_text())
    for path in sorted((ROOT / "examples").glob("*_gnap.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_cuda_asked_for_without_cuda(tmp_path, data_root, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    path = write_run(tmp_path, tiny_config(data_root))
    assert main(["grow", path, "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.slow
def test_python_module_entry_point(tmp_path, data_root):
    path = write_run(tmp_path, tiny_config(data_root, method="dense", epochs=1))
    proc = subprocess.run([sys.executable, "-m", "archgraph", "grow", path, "--out", str(tmp_path / "o"),
                           "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "test_acc" in json.loads(proc.stdout.strip().splitlines()[-1])


def test_gnap_deepens_when_widening_stops_paying_off(data_root, tmp_path):
    cfg = tiny_config(data_root, epochs=7, max_growths=2, min_gain=1e9, param_cost=0.0)
    summary = archgraph.grow(cfg, tmp_path / "run", quiet=True)
    rules_applied = [e["rule"] for e in events(tmp_path / "run") if e["event"] == "rewrite"]
    assert rules_applied == ["add_filters", "add_filters", "insert_layer"]
    final = archgraph.load(tmp_path / "run" / "versions" / f"{summary['final_version']:04d}.yaml")
    assert "r2_conv" in final.nodes and final.nodes["r2_conv"].inputs == ("r2",)   # after the last conv block


def test_replay_rebuilds_every_version_of_a_training_run(gnap_run, tmp_path, capsys):
    """archgraph replay: every stored version of a real run, from the seed and the rule log alone."""
    from archgraph.cli import main
    run, summary = gnap_run
    for k in range(summary["versions"]):
        assert archgraph.replay(run, k) == archgraph.load(run / "versions" / f"{k:04d}.yaml")
    out = tmp_path / "replayed"
    assert main(["replay", str(run), "--version", str(summary["versions"] - 1), "-o", str(out)]) == 0
    last = run / "versions" / f"{summary['versions'] - 1:04d}.yaml"
    assert archgraph.load(out / "graph.yaml") == archgraph.load(last)


@pytest.mark.slow
def test_the_demo_example_replays(tmp_path):
    """The example run that make demo makes: GNAP on the bundled digits; every version replays exactly."""
    run = tmp_path / "digits"
    summary = archgraph.grow(ROOT / "examples" / "digits_gnap.yaml", run, quiet=True)
    assert summary["growth_events"] >= 1 and summary["prune_events"] >= 1
    for k in range(summary["versions"]):
        assert archgraph.replay(run, k) == archgraph.load(run / "versions" / f"{k:04d}.yaml")
