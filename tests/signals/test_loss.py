import math

import pytest
import torch

from rankrl.signals import LossTracker, least_squares_slope


def test_slope_of_a_line_is_exact():
    assert least_squares_slope([3.0, 2.5, 2.0, 1.5]) == pytest.approx(-0.5)
    assert least_squares_slope([1.0]) == 0.0


def test_decreasing_loss_has_negative_relative_slope():
    tracker = LossTracker(window=10)
    for i in range(10):
        tracker.update(2.0 - 0.1 * i)
    assert tracker.slope == pytest.approx(-0.1)
    assert tracker.slope_rel == pytest.approx(-0.05)  # normalised by the initial loss 2.0
    assert tracker.ema_rel < 1.0
    assert tracker.last_rel == pytest.approx(1.1 / 2.0)


def test_increasing_loss_has_positive_slope_and_only_the_window_counts():
    tracker = LossTracker(window=5)
    for i in range(20):
        tracker.update(5.0 - 0.2 * i)
    for i in range(5):
        tracker.update(1.0 + 0.3 * i)
    assert tracker.slope_rel == pytest.approx(0.3 / 5.0)


def test_constant_loss_ema_is_bias_corrected():
    tracker = LossTracker(beta=0.9)
    for _ in range(3):
        tracker.update(torch.tensor(0.7))
    assert tracker.ema == pytest.approx(0.7)
    assert tracker.ema_rel == pytest.approx(1.0)
    assert tracker.slope_rel == pytest.approx(0.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_is_detected_and_not_folded_in(bad):
    tracker = LossTracker()
    tracker.update(1.0)
    tracker.update(0.5)
    before = tracker.features()
    assert not tracker.diverged
    tracker.update(torch.tensor(bad))
    after = tracker.features()
    assert tracker.diverged and after["loss/diverged"] == 1.0
    assert all(math.isfinite(v) for v in after.values())
    assert after["loss/ema_rel"] == before["loss/ema_rel"]
    assert after["loss/steps"] == 3.0


def test_eval_accuracy_and_change():
    tracker = LossTracker()
    assert tracker.features()["eval/accuracy"] == 0.0
    tracker.update_eval(0.6)
    tracker.update_eval(0.75)
    tracker.update_eval(0.7)
    features = tracker.features()
    assert features["eval/accuracy"] == pytest.approx(0.7)
    assert features["eval/accuracy_delta"] == pytest.approx(-0.05)
    assert features["eval/best_accuracy"] == pytest.approx(0.75)


def test_the_gain_is_the_fraction_of_the_starting_error_closed():
    tracker = LossTracker()
    assert tracker.features()["eval/gain"] == 0.0 and tracker.features()["eval/gain_delta"] == 0.0
    tracker.update_eval(0.2)  # an untrained 6-class head
    assert tracker.features()["eval/gain"] == 0.0
    tracker.update_eval(0.6)
    tracker.update_eval(0.5)
    features = tracker.features()
    assert features["eval/gain"] == pytest.approx(0.3 / 0.8)
    assert features["eval/gain_delta"] == pytest.approx(-0.1 / 0.8)
    binary = LossTracker()
    for accuracy in (0.5, 0.8):
        binary.update_eval(accuracy)
    assert binary.features()["eval/gain"] == pytest.approx(0.6)  # the same progress reads alike on 2 classes
    perfect = LossTracker()
    for accuracy in (1.0, 0.9):
        perfect.update_eval(accuracy)
    assert perfect.features()["eval/gain"] == pytest.approx(-2.0)  # error floored at 0.05: finite, clipped later


def test_the_first_accuracy_survives_a_state_round_trip():
    tracker = LossTracker()
    for accuracy in (0.25, 0.5):
        tracker.update_eval(accuracy)
    restored = LossTracker()
    restored.load_state_dict(tracker.state_dict())
    assert restored.features() == tracker.features()
    older = tracker.state_dict()
    del older["first_eval_accuracy"]  # saved by an earlier rankrl: the best accuracy stands in
    restored.load_state_dict(older)
    assert restored.first_eval_accuracy == 0.5


def test_bad_arguments():
    with pytest.raises(ValueError):
        LossTracker(beta=1.0)
    with pytest.raises(ValueError):
        LossTracker(window=1)
