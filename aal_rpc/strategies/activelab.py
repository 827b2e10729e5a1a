"""ActiveLab (Goh and Mueller, 2023): with a crowd, whether the next label goes to a new item or to one more label of
an item already labeled, decided on one scale.

Both scores are the probability that the label an item is (or would be) trained on is wrong. A new item's is the
model's: 1 - its largest class probability (least confidence). A labeled item's evidence is CROWDLAB's: the model's
prediction and each annotator's label, each weighted by how far above chance its source is right (`weight`): the
model by its agreement with the consensus labels, an annotator by their estimated quality (consensus.py,
Dawid-Skene), or, before any two annotators share an item, by their agreement with the model; its score is 1 - the
probability that mix gives its consensus label, the one trainers learn. An item whose careful labels agree with a
confident model scores near 0; one whose only label is a careless annotator's that the model doubts, or whose
labels disagree, scores high and is labeled again.
"""

from __future__ import annotations

import math

import numpy as np

from aal_rpc.consensus import Consensus
from aal_rpc.strategies.base import Selection, UncertaintyStrategy, top_k

FLOOR = 0.01  # the least weight any voice gets: a source at chance still counts for a little


class ActiveLabStrategy(UncertaintyStrategy):
    """The new items' side of ActiveLab (least confidence); the selector adds the labeled items' side
    (`relabel_scores`) when the coordinator allows more labels per item (--max-labels-per-item)."""

    name = "activelab"

    def score(self, probs: np.ndarray) -> np.ndarray:
        return 1.0 - probs.max(axis=1)

    def select(self, probs, batch_size, *, embeddings=None, item_ids=None) -> Selection:
        """The top scores, as scores (not ranks: labeled items' scores compete with them on this scale)."""
        scores = self.score(np.asarray(probs))
        idx = top_k(scores, batch_size, seed=self.seed)
        return Selection(idx, scores[idx].astype(np.float64))


def weight(accuracy: float, num_classes: int) -> float:
    """A voice's weight: its accuracy above chance, scaled to [0, 1], never below FLOOR."""
    chance = 1.0 / num_classes
    return max(FLOOR, (accuracy - chance) / (1.0 - chance))


def annotator_weights(agreed: Consensus, probs: dict[str, np.ndarray], num_classes: int) -> dict[str, float]:
    """Each annotator's weight: from their estimated quality, or where it has none yet (no item shared with another
    annotator), from their agreement with the model's predicted class on the items they labeled that `probs` holds,
    smoothed as (agreeing + 1) / (labels + 2)."""
    agree: dict[str, list[int]] = {}
    for item_id, c in agreed.items.items():
        p = probs.get(item_id)
        if p is None:
            continue
        predicted = int(np.argmax(p))
        for annotator, label in c.votes.items():
            agree.setdefault(annotator, []).append(int(label == predicted))
    weights = {}
    for annotator, q in agreed.annotators.items():
        if math.isnan(q.quality):
            hits = agree.get(annotator, [])
            accuracy = (sum(hits) + 1) / (len(hits) + 2)
        else:
            accuracy = q.quality
        weights[annotator] = weight(accuracy, num_classes)
    return weights


def model_weight(agreed: Consensus, probs: dict[str, np.ndarray], num_classes: int) -> float:
    """The model's weight: its agreement with the consensus labels of the labeled items `probs` holds, smoothed."""
    hits = [int(np.argmax(p) == agreed.items[i].label) for i, p in probs.items() if i in agreed.items]
    return weight((sum(hits) + 1) / (len(hits) + 2), num_classes)


def relabel_scores(probs: np.ndarray, votes: list[dict[str, int]], annotators: dict[str, float],
                   model: float, labels: list[int]) -> np.ndarray:
    """Scores of labeled items on the new items' scale: 1 - the probability of each item's consensus label
    (`labels`, what trainers learn) under the weighted mix of the model's prediction (row of `probs`, weight
    `model`) and each vote (annotator -> label; weights `annotators`)."""
    mix = model * np.asarray(probs, dtype=np.float64)
    total = np.full(len(votes), model)
    for row, item_votes in enumerate(votes):
        for annotator, label in item_votes.items():
            w = annotators.get(annotator, FLOOR)
            mix[row, label] += w
            total[row] += w
    return 1.0 - mix[np.arange(len(votes)), labels] / total
