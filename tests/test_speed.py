"""The execution-format chooser: valid choices, cached per graph version, same outputs in every format."""
import torch
from conftest import ROOT

import archgraph
from archgraph.fx import speed


def test_choice_is_cached_and_formats_agree():
    g = archgraph.load(ROOT / "examples/seeds/tiny_cnn.yaml")
    m = archgraph.build(g, dtype=torch.float64).eval()
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 10, (4,))
    fmt = speed.choose_format(g, m, x, y, steps=1)
    assert fmt in speed.candidates(x.device, True, False)
    assert len(speed.measurements(g, x)) == 2
    assert speed.choose_format(g, m, x, y, steps=1) is fmt  # cached: no new measurement object
    expected = m(x)
    for cand in speed.candidates(x.device, True, False):
        runner = speed.apply_format(m, cand)
        out = runner(speed.prepare_input(x, cand))
        assert torch.allclose(out, expected, atol=1e-10)


def test_amp_only_offered_on_cuda():
    assert not any(f.amp for f in speed.candidates(torch.device("cpu"), True, True))
    assert all(f.amp for f in speed.candidates(torch.device("cuda"), True, False))
