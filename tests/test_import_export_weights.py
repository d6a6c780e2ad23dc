"""archgraph import --weights (a local checkpoint loaded into the original module before converting) and
archgraph export --state-dict --like (the weights back under the original module's names)."""
import pytest
import torch

import archgraph
from archgraph.cli import main
from archgraph.fx.weights import load_weights, save_weights
from archgraph.interop.equivalence import torchvision_model

SPEC = ["torchvision:resnet18", "--num-classes", "10", "--input-shape", "3,32,32"]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imp")
    model = torchvision_model("resnet18", num_classes=10, seed=7)
    torch.save({"state_dict": model.state_dict()}, tmp / "ckpt.pth")
    assert main(["import", *SPEC, "--weights", str(tmp / "ckpt.pth"), "-o", str(tmp / "R")]) in (0, None)
    return tmp, model


def test_import_loads_the_checkpoint_into_the_original_module(imported):
    tmp, model = imported
    _, expected = archgraph.from_module(model, input_shape=(3, 32, 32))
    got = load_weights(tmp / "R" / "weights.safetensors")
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


def test_import_names_a_tensor_that_does_not_fit(tmp_path, capsys):
    state = torchvision_model("resnet18", num_classes=10).state_dict()
    state["fc.weight"] = torch.zeros(3, 512)
    save_weights(dict(state), tmp_path / "bad.safetensors")
    assert main(["import", *SPEC, "--weights", str(tmp_path / "bad.safetensors"), "-o", str(tmp_path / "R")]) == 2
    assert "fc.weight" in capsys.readouterr().err


def test_export_writes_the_original_names_and_they_load(imported, tmp_path):
    tmp, model = imported
    out = tmp_path / "sd.safetensors"
    assert main(["export", str(tmp / "R" / "graph.yaml"), "--weights", str(tmp / "R" / "weights.safetensors"),
                 "--state-dict", str(out), "--like", "torchvision:resnet18"]) in (0, None)
    fresh = torchvision_model("resnet18", num_classes=10, seed=99)
    fresh.load_state_dict(load_weights(out), strict=True)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(fresh(x), model(x), atol=1e-5)


def test_export_of_a_pruned_graph_keeps_names_with_new_widths(imported, tmp_path):
    tmp, _ = imported
    net = archgraph.Network(tmp / "R" / "graph.yaml", weights=tmp / "R" / "weights.safetensors")
    net.prune(0.5)
    archgraph.save(net.graph, tmp_path / "g.yaml")
    save_weights(net.state_dict(), tmp_path / "w.safetensors")
    out = tmp_path / "sd.safetensors"
    assert main(["export", str(tmp_path / "g.yaml"), "--weights", str(tmp_path / "w.safetensors"),
                 "--state-dict", str(out), "--like", "torchvision:resnet18"]) in (0, None)
    sd = load_weights(out)
    original = torchvision_model("resnet18", num_classes=10).state_dict()
    assert sd.keys() == original.keys()
    assert sd["layer1.0.conv1.weight"].shape[0] < original["layer1.0.conv1.weight"].shape[0]


def test_export_names_the_node_that_breaks_the_correspondence(imported, tmp_path, capsys):
    tmp, _ = imported
    net = archgraph.Network(tmp / "R" / "graph.yaml", weights=tmp / "R" / "weights.safetensors")
    relu = next(n for n, node in net.graph.nodes.items() if node.op == "relu")
    net.rewrite(archgraph.rules.InsertLayer(after=relu))
    archgraph.save(net.graph, tmp_path / "g.yaml")
    save_weights(net.state_dict(), tmp_path / "w.safetensors")
    assert main(["export", str(tmp_path / "g.yaml"), "--weights", str(tmp_path / "w.safetensors"),
                 "--state-dict", str(tmp_path / "sd.safetensors"), "--like", "torchvision:resnet18"]) == 2
    assert "node '" in capsys.readouterr().err
