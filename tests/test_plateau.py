"""The plateau detector that marks saturation."""
import math

import pytest

from archgraph.train.plateau import PlateauDetector


def run(detector, values):
    return [detector.update(v) for v in values]


def test_loss_plateau_after_patience_epochs_without_improvement():
    p = PlateauDetector(mode="min", patience=3)
    assert run(p, [1.0, 0.8, 0.9, 0.85, 0.81]) == [False, False, False, False, True]
    assert p.best == 0.8 and p.bad_epochs == 3


def test_an_improvement_restarts_the_count():
    p = PlateauDetector(mode="min", patience=2)
    assert run(p, [1.0, 1.1, 0.9, 1.0, 1.0]) == [False, False, False, False, True]


def test_min_delta_ignores_tiny_improvements():
    p = PlateauDetector(mode="min", patience=2, min_delta=0.05)
    assert run(p, [1.0, 0.97, 0.96]) == [False, False, True]
    assert p.best == 1.0


def test_accuracy_mode_and_min_epochs():
    p = PlateauDetector(mode="max", patience=1, min_epochs=4)
    assert run(p, [0.5, 0.4, 0.4, 0.6, 0.6]) == [False, False, False, False, True]


def test_reset_and_state_round_trip():
    p = PlateauDetector(mode="min", patience=2)
    run(p, [1.0, 2.0])
    q = PlateauDetector(mode="min", patience=2)
    q.load_state_dict(p.state_dict())
    assert q.update(3.0) and p.update(3.0)
    p.reset()
    assert math.isnan(p.best) and p.bad_epochs == 0 and not p.update(5.0)


def test_bad_mode():
    with pytest.raises(ValueError):
        PlateauDetector(mode="up")
