"""archgraph apply and archgraph prune."""
from __future__ import annotations

import pytest
import torch
from conftest import ROOT

import archgraph
from archgraph.cli import main
from archgraph.fx.weights import load_weights, save_weights

TINY = str(ROOT / "examples" / "seeds" / "tiny_cnn.yaml")


def load_pair(folder):
    g = archgraph.load(folder / "graph.yaml")
    m = archgraph.build(g)
    m.load_state_dict(load_weights(folder / "weights.safetensors"))
    return g, m


def test_apply_without_weights_starts_from_the_seeded_initialisation(tmp_path, capsys):
    out = tmp_path / "wide"
    assert main(["apply", TINY, "add_filters", "node=c1", "count=4", "--seed", "3", "-o", str(out), "--plan"]) == 0
    text = capsys.readouterr().out
    assert "add_filters(node=c1, count=4" in text and "function unchanged" in text and "c2.weight: axis 1" in text
    g, m = load_pair(out)
    assert g.nodes["c1"].out_channels == 8
    start = archgraph.build(archgraph.load(TINY), seed=3)
    assert torch.equal(m.c1.weight[:4], start.c1.weight) and m.c2.weight[:, 4:].abs().sum() == 0


def test_apply_carries_given_weights_and_chains(tmp_path):
    g0 = archgraph.load(TINY)
    m0 = archgraph.build(g0, seed=5).eval()
    with torch.no_grad():
        m0.bn2.running_var.uniform_(0.5, 2.0)
    save_weights(m0.state_dict(), tmp_path / "w.safetensors")
    assert main(["apply", TINY, "insert_layer", "after=r2", "norm=batchnorm", "activation=relu",
                 "--weights", str(tmp_path / "w.safetensors"), "-o", str(tmp_path / "a")]) == 0
    assert main(["apply", str(tmp_path / "a" / "graph.yaml"), "split_filters", "node=c3", "indices=0,1", "eps=0",
                 "--weights", str(tmp_path / "a" / "weights.safetensors"), "-o", str(tmp_path / "b")]) == 0
    g, m = load_pair(tmp_path / "b")
    assert "r2_conv" in g.nodes and g.nodes["c3"].out_channels == 10
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(m.eval()(x), m0(x), atol=1e-5)


def test_prune_writes_a_smaller_network(tmp_path, capsys):
    m = archgraph.build(archgraph.load(TINY))
    save_weights(m.state_dict(), tmp_path / "w.safetensors")
    assert main(["prune", TINY, "--weights", str(tmp_path / "w.safetensors"), "--ratio", "0.5",
                 "--criterion", "l1", "-o", str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    assert "prune_channels node=c1 indices=" in text and "1,030 ->" in text
    g, m2 = load_pair(tmp_path / "p")
    assert [g.nodes[n].out_channels for n in ("c1", "c2", "c3")] == [2, 4, 4]


@pytest.mark.parametrize("argv,words", [
    (["apply", TINY, "add_filter", "node=c1"], "unknown rule 'add_filter' (did you mean 'add_filters'?)"),
    (["apply", TINY, "add_filters", "node=c1", "count=many"], "rule add_filters: node 'c1': field 'count'"),
    (["apply", TINY, "add_filters", "node=c7"], "rule add_filters: node 'c7': field 'node': no node 'c7'"),
    (["apply", TINY, "add_filters", "c1"], "must look like KEY=VALUE"),
    (["apply", TINY, "prune_channels", "node=fc", "indices=0"], "graph output 'fc'"),
    (["apply", TINY, "insert_layer", "after=c1", "kernel_size=2"], "field 'kernel_size'"),
    (["apply", TINY, "delete_node", "node=r1", "--weights", "missing.safetensors"], "no such weights file"),
    (["prune", TINY, "--weights", "missing.safetensors", "--ratio", "0.5"], "no such weights file"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, argv, words):
    assert main(argv + ["-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("archgraph: error:") and "Traceback" not in err
    assert words in " ".join(err.split()), err


def test_prune_checks_the_weights_fit(tmp_path, capsys):
    other = archgraph.build(archgraph.load(ROOT / "examples" / "seeds" / "mlp.yaml"))
    save_weights(other.state_dict(), tmp_path / "w.safetensors")
    assert main(["prune", TINY, "--weights", str(tmp_path / "w.safetensors"), "--ratio", "0.5",
                 "-o", str(tmp_path / "p")]) == 2
    assert "missing tensor 'c1.weight'" in capsys.readouterr().err


def test_apply_help_lists_every_rule(capsys):
    with pytest.raises(SystemExit):
        main(["apply", "--help"])
    text = capsys.readouterr().out
    for name in archgraph.rules.RULES:
        assert f"  {name} " in text
