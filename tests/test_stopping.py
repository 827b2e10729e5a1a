"""The stopping signal (measures.stopping_signal): stabilizing predictions (Bloodgood & Vijay-Shanker 2009, kappa of
consecutive models on a stop set) together with a flat accuracy curve; and the measures under it."""

import numpy as np
import pytest

from aal_rpc.measures import (AUDIT_CORRECT, AUDIT_LABELS, FLAT_GAIN, POOL_ITEMS, STOP_KAPPA, STOP_SET_AGREEMENT,
                              cohens_kappa, pace_per_minute, pool_items, remaining_items, stopping_signal)
from aal_rpc.types import ModelInfo


def test_kappa_is_one_for_agreement_zero_for_chance_and_negative_below():
    a = np.array([0, 1, 2, 0, 1, 2])
    assert cohens_kappa(a, a) == 1.0
    assert cohens_kappa([3, 3, 3], [3, 3, 3]) == 1.0  # one class, agreeing
    assert cohens_kappa([0, 1, 0, 1], [1, 0, 1, 0]) == -1.0
    # observed agreement 0.5 where the class frequencies give 0.5 by chance
    assert cohens_kappa([0, 0, 1, 1], [0, 1, 0, 1]) == 0.0
    # a textbook case: 20 yes/yes, 15 no/no, 5 yes/no, 10 no/yes -> po 0.7, pe 0.5, kappa 0.4
    x = [1] * 20 + [0] * 15 + [1] * 5 + [0] * 10
    y = [1] * 20 + [0] * 15 + [0] * 5 + [1] * 10
    assert cohens_kappa(x, y) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        cohens_kappa([1, 2], [1])


def model(version, labels, *, kappa=None, audit=None, accuracy=None, **extra):
    metrics = dict(extra)
    if kappa is not None:
        metrics[STOP_SET_AGREEMENT] = kappa
    if audit is not None:
        metrics[AUDIT_CORRECT], metrics[AUDIT_LABELS] = audit * 200, 200
    if accuracy is not None:
        metrics["accuracy"] = accuracy
    return ModelInfo(version=version, server_id="s", trained_seq=labels, num_labels=labels, architecture="mlp",
                     metrics=metrics)


def test_stopping_waits_for_three_stable_versions_and_a_flat_estimate():
    assert stopping_signal([])["reason"] == "keep going: no model trained on labels yet"
    rising = [model(1, 100, audit=0.70), model(2, 200, kappa=0.995, audit=0.85),
              model(3, 300, kappa=0.999, audit=0.90)]
    s = stopping_signal(rising)
    assert not s["suggested"] and "known for 2 of the last 3" in s["reason"]
    s = stopping_signal(rising + [model(4, 400, kappa=0.9, audit=0.92)])
    assert not s["suggested"] and s["agreement"] == pytest.approx((0.995 + 0.999 + 0.9) / 3)
    assert "below 0.99" in s["reason"]
    s = stopping_signal(rising + [model(4, 400, kappa=0.998, audit=0.95)])
    assert s["agreement"] >= STOP_KAPPA and not s["suggested"] and s["curve"] == "estimated"
    assert "still rising" in s["reason"] and s["gain"] == pytest.approx(0.05)  # since 0.90 at 300 labels (<= 0.8 * 400)
    flat = rising + [model(4, 400, kappa=0.998, audit=0.905), model(5, 500, kappa=0.997, audit=0.91)]
    s = stopping_signal(flat)
    assert s["suggested"] and s["reason"].startswith("stopping suggested") and s["gain"] <= FLAT_GAIN
    assert "estimated accuracy went 0.905 -> 0.910 since 400 labels" in s["reason"]


def test_without_audit_labels_held_out_accuracy_or_the_predictions_alone_decide():
    held = [model(v, 100 * v, kappa=0.995, accuracy=0.9 + 0.001 * v) for v in range(1, 6)]
    s = stopping_signal(held)
    assert s["suggested"] and s["curve"] == "held_out"
    alone = [model(v, 100 * v, kappa=0.995) for v in range(1, 4)]
    s = stopping_signal(alone)
    assert s["suggested"] and "predictions alone decide" in s["reason"] and s["curve"] is None
    encoder = ModelInfo(version=1, server_id="s", trained_seq=0, num_labels=0, architecture="mlp",
                        metrics={"pretrain_steps": 10.0})
    assert stopping_signal([encoder])["reason"] == "keep going: no model trained on labels yet"


def test_pool_size_remaining_and_pace():
    assert pool_items([]) is None and remaining_items(None, 3, 1) is None
    models = [model(1, 10, **{POOL_ITEMS: 1000.0}), model(2, 20, **{POOL_ITEMS: 1200.0}), model(3, 30)]
    assert pool_items(models) == 1200 and remaining_items(1200, 30, 5) == 1165 and remaining_items(10, 30, 5) == 0
    now = 10_000.0
    assert pace_per_minute([], now) == 0.0
    assert pace_per_minute([now - 1, now - 2], now) == 4.0  # two labels over at least 30 s
    assert pace_per_minute([now - 600, now - 120, now - 60, now - 1], now) == pytest.approx(3 * 60 / 300)
