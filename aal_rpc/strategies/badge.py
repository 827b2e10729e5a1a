"""BADGE (Ash et al., ICLR 2020): batches both uncertain and diverse, by k-means++ seeding on gradient embeddings.

An item's gradient embedding is the gradient of the loss at its most likely class with respect to the last
layer: g = (p - onehot(argmax p)) ⊗ h, with p the class probabilities and h the penultimate embedding. Its norm
grows with the model's uncertainty, and k-means++ seeding (each next pick drawn with probability proportional to
its squared distance to the picks so far) spreads a batch across the space. The C×D gradient embeddings are
never built: ||g_i - g_j||² = |a_i|²|h_i|² + |a_j|²|h_j|² - 2 (a_i·a_j)(h_i·h_j), with a = p - onehot, so a
pick costs O(N (C + D)) time and memory.
"""

from __future__ import annotations

import numpy as np

from aal_rpc.strategies.base import Selection, Strategy, rank_scores


def gradient_factors(probs: np.ndarray) -> np.ndarray:
    """a = p - onehot(argmax p) per item: the loss gradient at the logits for the predicted class."""
    a = np.asarray(probs, dtype=np.float64).copy()
    a[np.arange(len(a)), a.argmax(axis=1)] -= 1.0
    return a


def kmeans_pp(a: np.ndarray, h: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k indices by k-means++ seeding over the gradient embeddings a_i ⊗ h_i, the first the largest norm."""
    sq = (a * a).sum(axis=1) * (h * h).sum(axis=1)  # |g_i|²
    n = len(sq)
    k = min(k, n)
    chosen = np.empty(k, dtype=np.int64)
    if k == 0:
        return chosen
    chosen[0] = int(np.argmax(sq))
    dist = np.full(n, np.inf)
    for j in range(1, k):
        c = chosen[j - 1]
        d = sq + sq[c] - 2.0 * (a @ a[c]) * (h @ h[c])
        dist = np.minimum(dist, np.maximum(d, 0.0))
        dist[chosen[:j]] = 0.0
        total = dist.sum()
        if total <= 0:  # every item coincides with a pick: the rest in order of norm
            rest = np.setdiff1d(np.argsort(-sq, kind="stable"), chosen[:j], assume_unique=True)
            chosen[j:] = rest[:k - j]
            break
        chosen[j] = int(rng.choice(n, p=dist / total))
    return chosen


class BadgeStrategy(Strategy):
    name = "badge"
    needs_embeddings = True

    def select(self, probs, batch_size, *, embeddings=None, item_ids=None) -> Selection:
        a = gradient_factors(probs)
        # without embeddings, the gradients at the logits alone (h = 1)
        h = np.ones((len(a), 1)) if embeddings is None else np.asarray(embeddings, dtype=np.float64)
        idx = kmeans_pp(a, h, batch_size, np.random.default_rng(self.seed))
        return Selection(idx, rank_scores(len(idx), len(a)))
