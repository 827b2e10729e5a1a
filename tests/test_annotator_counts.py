"""What each annotator did (GetStats' `annotators`): labels, skips and deferrals, counted alike on both backends,
and labels and skips kept across a restart."""

import numpy as np

from aal_rpc.coordinator.contract import ImportedLabel
from aal_rpc.types import AnnotatorCounts, Payload
from tests.conftest import make_candidate


def test_stats_count_each_annotators_labels_skips_and_defers(make_coordinator):
    c = make_coordinator()
    c.submit_candidates(worker_id="w0", strategy="margin", model_version=0,
                        candidates=[make_candidate(str(i)) for i in range(6)])

    for who in ("alice", "alice", "bob"):
        q = c.lease(who)
        c.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=1, annotator_id=who)
    q = c.lease("bob")
    c.release(lease_id=q.lease_id, item_id=q.item_id, annotator_id="bob", skip=True)
    q = c.lease("carol")
    c.release(lease_id=q.lease_id, item_id=q.item_id, annotator_id="carol", defer=True)
    q = c.lease("alice")
    c.release(lease_id=q.lease_id, item_id=q.item_id, annotator_id="alice")  # a plain release counts nowhere
    labeled = c.read_labels(0, 10)
    c.correct_label(item_id=labeled[0].item_id, label=2, annotator_id="alice")  # a correction adds no label
    c.import_labels([ImportedLabel("900", 0, Payload.from_array(np.zeros((1, 8, 8), np.float32)), "importer")])
    expected = {"alice": AnnotatorCounts(2, 0, 0), "bob": AnnotatorCounts(1, 1, 0), "carol": AnnotatorCounts(0, 0, 1),
                "importer": AnnotatorCounts(1, 0, 0)}
    assert c.stats().annotators == expected
    c.close()
    again = make_coordinator().stats().annotators  # deferrals on the embedded store live in memory only

    def durable(counts):
        return {a: (n.labels, n.skips) for a, n in counts.items() if n.labels or n.skips}

    assert durable(again) == durable(expected)
