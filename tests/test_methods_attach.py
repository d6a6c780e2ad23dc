"""archgraph.methods.attach: the methods in a plain PyTorch loop. The SCS example of docs/methods.md runs as it is
written, and its run directory replays."""
import re
import shutil

import pytest
import torch
from conftest import ROOT

import archgraph
from archgraph import methods
from archgraph.errors import ConfigError

DOC = (ROOT / "docs" / "methods.md").read_text()


def _example() -> str:
    section = DOC.split("## Your own loop", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_documented_scs_loop_runs_and_replays(tmp_path, monkeypatch):
    (tmp_path / "examples" / "seeds").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "seeds" / "digits_cnn.yaml", tmp_path / "examples" / "seeds")
    monkeypatch.chdir(tmp_path)
    code = _example()
    assert len(code.strip().splitlines()) <= 40
    scope: dict = {}
    exec(compile(code, "docs/methods.md", "exec"), scope)
    net, scs = scope["net"], scope["scs"]
    run = tmp_path / "runs" / "digits_scs_loop"
    assert archgraph.replay(run) == net.graph == archgraph.load(run / "versions" / f"{net.version:04d}.yaml")
    assert scs.finished and not net.module._forward_pre_hooks   # finish leaves the bare module
    # the saved weights are the module's: they rebuild the same network
    again = archgraph.Network(net.graph, weights=run / "weights" / "final.safetensors")
    x = scope["x_val"]
    net.module.eval(), again.module.eval()
    assert torch.equal(net.module(x), again.module(x))
    acc = float((again.module(x).argmax(1) == scope["y_val"]).float().mean())
    assert acc > 0.5


def test_masks_act_through_the_module_and_rewrites_move_the_hooks():
    torch.manual_seed(0)
    net = archgraph.Network(ROOT / "examples" / "seeds" / "tiny_cnn.yaml")
    opt = torch.optim.SGD(net.module.parameters(), lr=0.1)
    gnap = methods.attach("gnap", net, opt, epochs=3, param_cost=1.0)
    x = torch.randn(4, 1, 8, 8)
    net.module.train()
    net.module(x)
    assert gnap.loss().requires_grad and float(gnap.loss().detach()) > 0
    net.module.eval()   # the evaluation masks: the module's output is the functional call with the overrides
    overrides, _ = gnap.strategy.parametrize(gnap.view, training=False)
    assert overrides and torch.equal(net.module(x), torch.func.functional_call(net.module, overrides, (x,)))
    net.module.train()
    from archgraph import rules as R
    net.rewrite(R.AddFilters(node="c1", count=2, init="preserve"), optimizer=opt)
    assert len(net.module._forward_pre_hooks) == 1       # the hooks followed the new module
    net.module(x)
    assert gnap.loss().requires_grad


def test_unknown_method_and_bad_setting_are_named():
    net = archgraph.Network(ROOT / "examples" / "seeds" / "tiny_cnn.yaml")
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        methods.attach("nope", net, None, epochs=1)
    with pytest.raises(ConfigError, match="penalty"):
        methods.attach("scs", net, None, epochs=1, penalty=-1.0)


def _write_step_prune(folder):
    section = DOC.split("## Writing a method", 1)[1]
    (folder / "step_prune.py").write_text(re.search(r"```python\n(.*?)```", section, re.S).group(1))


@pytest.fixture
def step_prune(tmp_path, monkeypatch):
    """The complete method of docs/methods.md "Writing a method", written to step_prune.py and imported; the
    registry is put back afterwards."""
    import importlib
    import sys

    from archgraph.train import config
    _write_step_prune(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("step_prune")
    yield module
    sys.modules.pop("step_prune", None)
    config.METHODS.pop("step_prune", None)
    config._rebuild_method_union()


def test_the_documented_method_registers_and_runs_in_grow_and_in_a_loop(step_prune, tmp_path):
    from archgraph.train.config import METHODS, run_schema
    assert METHODS["step_prune"] is step_prune.StepPruneSettings
    assert "StepPruneSettings" in run_schema()["$defs"]
    run = {"seed": str(ROOT / "examples" / "seeds" / "digits_cnn.yaml"),
           "data": {"name": "digits", "limit": 96, "batch_size": 32},
           "method": {"name": "step_prune", "every": 1, "ratio": 0.25},
           "schedule": {"epochs": 2, "device": "cpu", "threads": 1}}
    summary = archgraph.grow(run, tmp_path / "run", quiet=True)
    assert summary["pruning_steps"] == 2 and summary["prune_events"] >= 2
    assert archgraph.replay(tmp_path / "run") == archgraph.load(
        tmp_path / "run" / "versions" / f"{summary['final_version']:04d}.yaml")
    net = archgraph.Network(ROOT / "examples" / "seeds" / "digits_cnn.yaml")
    opt = torch.optim.SGD(net.module.parameters(), lr=0.1)
    method = methods.attach("step_prune", net, opt, epochs=2, every=1)
    assert method.epoch_end({"val_loss": 1.0}) and net.version > 0
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in net.module.parameters()}
    with pytest.raises(ConfigError, match="every"):
        methods.attach("step_prune", net, opt, epochs=2, every=0)


TORCH_BLOCKED_PLUGIN = """
import sys
sys.modules["torch"] = None                       # any 'import torch' now fails
from importlib.metadata import EntryPoint
from archgraph.format import plugins
step_prune = EntryPoint(name="step_prune", value="step_prune:StepPruneSettings", group="archgraph.methods")
plugins.entry_points = lambda group: [step_prune] if group == "archgraph.methods" else []
from archgraph.cli import main
assert main(["validate", sys.argv[1]]) in (0, None)
from archgraph.train.config import METHODS, run_schema
assert METHODS["step_prune"].__module__ == "step_prune" and "StepPruneSettings" in run_schema()["$defs"]
assert "torch" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
print("validated without torch")
"""


def test_the_documented_method_file_is_an_entry_point_that_validates_without_torch(tmp_path):
    """Its one file (settings and strategy, torch deferred) loads as an ``archgraph.methods`` entry point while
    torch is blocked, and a run file naming it validates; a bad setting is refused with its field."""
    import subprocess
    import sys
    _write_step_prune(tmp_path)
    run = tmp_path / "run.yaml"
    run.write_text(f"seed: {ROOT / 'examples/seeds/digits_cnn.yaml'}\ndata: {{name: digits}}\n"
                   "method: {name: step_prune, every: 1, ratio: 0.5}\n")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", TORCH_BLOCKED_PLUGIN, str(run)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "validated without torch" in done.stdout, done.stdout + done.stderr
    run.write_text(run.read_text().replace("every: 1", "every: 0"))
    bad = subprocess.run([sys.executable, "-c", TORCH_BLOCKED_PLUGIN, str(run)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "method.every" in bad.stdout + bad.stderr, bad.stdout + bad.stderr
