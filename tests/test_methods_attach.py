"""archgraph.methods.attach: the methods in a plain PyTorch loop. The SCS example of docs/methods.md runs as it is
written, and its run directory replays."""
import re
import shutil

import pytest
import torch

import archgraph
from archgraph import methods
from archgraph.errors import ConfigError
from conftest import ROOT

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
