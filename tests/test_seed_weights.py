"""Run file ``weights:``: a run starts from an imported model's weights, and its first evaluation is that model's
own accuracy on the same data; a weights file that does not fit is an error naming the tensor."""
import pytest
import torch

import archgraph
import archgraph.history.run
from archgraph.errors import ArchgraphError
from archgraph.fx.weights import save_weights


def _imported_resnet(tmp_path):
    """torchvision's resnet18 (random weights) for 8x8 one-channel digits, imported as graph + weights."""
    from archgraph.compat import import_torchvision
    tv = import_torchvision()
    torch.manual_seed(0)
    model = tv.models.resnet18(num_classes=10)
    model.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    model.eval()
    graph, weights = archgraph.from_module(model, input_shape=(1, 8, 8), name="resnet18")
    archgraph.save(graph, tmp_path / "graph.yaml")
    save_weights(weights, tmp_path / "weights.safetensors")
    return model


def _run(tmp_path, **extra):
    return {"seed": str(tmp_path / "graph.yaml"), "weights": str(tmp_path / "weights.safetensors"),
            "data": {"name": "digits", "normalize": False, "val_fraction": 0.0, "limit": 32, "batch_size": 16},
            "method": {"name": "scs"}, "schedule": {"epochs": 1, "device": "cpu", "threads": 1}, **extra}


def test_first_evaluation_is_the_imported_models_own_accuracy(tmp_path):
    from archgraph.data.builtin import digits_arrays
    model = _imported_resnet(tmp_path)
    _, (x_test, y_test) = digits_arrays()
    with torch.no_grad():
        own = float((model(torch.from_numpy(x_test).float() / 16.0).argmax(1) ==
                     torch.from_numpy(y_test).long()).float().mean())
    summary = archgraph.grow(_run(tmp_path), tmp_path / "run", quiet=True)
    assert summary["initial_test_acc"] == pytest.approx(own, abs=1e-9)
    start = archgraph.history.run.load_run(tmp_path / "run").start
    assert start["metrics"]["test_acc"] == summary["initial_test_acc"]


def test_weights_that_do_not_fit_are_named(tmp_path):
    import archgraph.history.run  # noqa: F401
    g = archgraph.load("examples/seeds/digits_cnn.yaml")
    archgraph.save(g, tmp_path / "graph.yaml")
    state = archgraph.build(g).state_dict()
    state["fc.weight"] = torch.zeros(3, 3)
    save_weights(dict(state), tmp_path / "weights.safetensors")
    with pytest.raises(ArchgraphError, match="fc.weight") as err:
        archgraph.grow(_run(tmp_path), tmp_path / "run", quiet=True)
    assert "weights" in str(err.value)
    state.pop("fc.weight")
    save_weights(dict(state), tmp_path / "weights.safetensors")
    with pytest.raises(ArchgraphError, match="missing tensor 'fc.weight'"):
        archgraph.grow(_run(tmp_path), tmp_path / "run2", quiet=True)
    with pytest.raises(ArchgraphError, match="does not exist"):
        archgraph.grow(_run(tmp_path, weights="nope.safetensors"), tmp_path / "run3", quiet=True)
