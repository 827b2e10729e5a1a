"""A worker's pacing: the label rate and version interval it observes, and the batch they imply (no network)."""

import math

from aal_rpc.types import ModelInfo
from aal_rpc.selector.pacing import MARGIN, MIN_RATE_SPAN, RATE_WINDOW, Pacing


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
