"""Pacing, without a network: a worker's (the label rate and version interval it observes, and the batch they
imply) and a trainer's (how long a round is, given L's size and the pace of labeling)."""

import math

from aal_rpc.types import ModelInfo
from aal_rpc.selector.pacing import MARGIN, MIN_RATE_SPAN, RATE_WINDOW, Pacing
from aal_rpc.trainer.pacing import MIN_STEPS, STEPS_PER_LABEL, full_steps, round_steps


def version(v: int, created_at: float, **metrics) -> ModelInfo:
    return ModelInfo(version=v, server_id="s", trained_seq=0, num_labels=0, architecture="mlp", metrics=metrics,
                     created_at=created_at)


def test_nothing_is_known_until_the_rate_and_an_interval_are():
    p = Pacing(num_shards=2)
    assert p.batch() is None
    p.observe_labels(0, 100.0)
    p.observe_labels(3, 100.0 + MIN_RATE_SPAN / 2)
    assert p.rate is None  # too short a span to trust
    p.observe_labels(8, 100.0 + MIN_RATE_SPAN)
    assert p.rate == 8 / MIN_RATE_SPAN
    assert p.batch() is None  # no version seen yet
    p.observe_version(version(1, 1000.0))  # a model without a round time: still unknown
    assert p.batch() is None


def test_the_batch_is_the_shards_share_of_the_labels_before_the_next_version_with_a_margin():
    p = Pacing(num_shards=3)
    p.observe_labels(0, 0.0)
    p.observe_labels(12, 4.0)  # 3 labels/s
    p.observe_version(version(1, 1000.0, train_seconds=5.0))  # the first round's time stands in for the interval
    assert p.interval == 5.0
    assert p.batch() == math.ceil(MARGIN * 3 * 5.0 / 3)
    p.observe_version(version(3, 1010.0))  # two versions in 10 s (v2 was skipped): 5 s a version
    assert p.interval == 5.0
    p.observe_version(version(4, 1019.0))  # the newest gap counts half
    assert p.interval == 7.0
    p.observe_version(version(4, 1030.0))  # a version already seen changes nothing
    assert p.interval == 7.0


def test_the_rate_follows_the_current_pace_and_the_batch_is_never_empty():
    p = Pacing(num_shards=1)
    p.observe_version(version(1, 0.0, train_seconds=10.0))
    for t in range(0, 31):  # 10 labels/s for 30 s, then none
        p.observe_labels(10 * t, float(t))
    assert p.rate == 10.0
    for t in range(31, 31 + int(RATE_WINDOW) + 2):
        p.observe_labels(300, float(t))
    assert p.rate == 0.0  # the busy stretch has left the window
    assert p.batch() == 1


def test_a_full_round_is_the_recipes_epochs_repeated_until_its_least_steps():
    assert full_steps(20, epochs=40, min_steps=600, batch_size=32) == 600  # one step an epoch: min_steps rules
    assert full_steps(1000, epochs=40, min_steps=600, batch_size=32) == 40 * 32  # 32 steps an epoch
    assert full_steps(1, epochs=1, min_steps=0, batch_size=32) == 1


def test_early_rounds_are_short_and_rounds_grow_with_l_until_the_full_round():
    first = round_steps(20, full=600)
    assert (first.steps, first.bound) == (STEPS_PER_LABEL * 20, "labels")  # seconds, not a minute
    assert round_steps(100, full=600).steps == STEPS_PER_LABEL * 100
    assert round_steps(1000, full=600).bound == "full"
    assert round_steps(2, full=600).steps == MIN_STEPS  # never fewer than MIN_STEPS ...
    assert round_steps(2, full=10).steps == 10  # ... nor more than the full round


def test_a_round_ends_by_the_time_labels_call_for_the_next_one():
    # 400 labels at 8 labels/s: L grows by 20% (80 labels) in 10 s, and a step takes 50 ms: 200 steps fit
    paced = round_steps(400, full=600, label_rate=8.0, step_seconds=0.05, growth=0.2)
    assert (paced.steps, paced.bound) == (200, "pace")
    assert round_steps(400, full=600, label_rate=0.5, step_seconds=0.05).bound == "full"  # slow labeling: time
    assert round_steps(400, full=600, label_rate=None, step_seconds=0.05).bound == "full"  # labels stopped
    assert round_steps(400, full=600, label_rate=1000.0, step_seconds=0.05).steps == MIN_STEPS


def test_the_batch_also_covers_the_labels_taken_while_two_top_ups_reach_s():
    p = Pacing(num_shards=2)
    p.observe_labels(0, 0.0)
    p.observe_labels(40, 4.0)  # 10 labels/s
    p.observe_version(version(1, 1000.0, train_seconds=2.0))
    assert p.batch() == math.ceil(MARGIN * 2.0 * 10 / 2)  # no top-up seen yet
    p.observe_refill(1.0)
    assert p.refill == 1.0
    # the half left when a top-up starts (half of 1.5 intervals and 2 lead times) lasts until it lands
    assert p.batch() == math.ceil((MARGIN * 2.0 + 2 * 1.0) * 10 / 2)
    p.observe_refill(3.0)  # the newest counts half
    assert p.refill == 2.0
