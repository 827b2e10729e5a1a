"""The base class every sampling strategy implements, and the seeded top-k they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class Selection:
    """Positions chosen from the scored items, best first, with each one's score (higher = more informative)
    on the scale every strategy shares (`rank_scores`), and, for strategies that cluster, each one's cluster
    (-1: none)."""

    indices: np.ndarray
    scores: np.ndarray
    clusters: np.ndarray | None = None


def rank_scores(k: int, n: int) -> np.ndarray:
    """The scores of a strategy's k choices, best first, out of the n items it scored: the j-th gets 1 - j/n,
    its rank within the shard. Raw scores are not comparable across strategies (margin's sit near 1, normalized
    entropy's near 0.6), so the query pool, which orders candidates of different workers by score, compares
    ranks: every strategy in a mix gets its share of the labels."""
    return 1.0 - np.arange(k, dtype=np.float64) / max(n, 1)


def top_k(scores: np.ndarray, k: int, *, seed: int) -> np.ndarray:
    """Indices of the k highest scores; equal scores are ordered by a seeded random key, so runs repeat.

    Linear time: a partition finds the k-th score, and only the items at or above it are sorted.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    k = max(0, min(int(k), n))
    tiebreak = np.random.default_rng(seed).random(n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        kth = np.partition(scores, n - k)[n - k]
        candidates = np.flatnonzero(scores >= kth)  # every tie at the boundary competes on its tiebreak
    else:
        candidates = np.arange(n)
    order = np.lexsort((tiebreak[candidates], -scores[candidates]))
    return candidates[order][:k]


class Strategy(ABC):
    """Chooses which of a worker's unlabeled items to propose, given the model's view of them.

    Parameters
    ----------
    seed:
        Makes every random choice, tie-breaking included, repeatable.
    """

    name: ClassVar[str]
    needs_model: ClassVar[bool] = True
    needs_embeddings: ClassVar[bool] = False

    def __init__(self, *, seed: int = 0):
        self.seed = seed

    def prepare(self, *, embeddings: np.ndarray, item_ids: np.ndarray, model_version: int) -> None:
        """Called with the whole shard each time the worker loads a new model; stateless strategies ignore it."""

    @abstractmethod
    def select(self, probs: np.ndarray, batch_size: int, *, embeddings: np.ndarray | None = None,
               item_ids: np.ndarray | None = None) -> Selection:
        """Choose up to `batch_size` of the N items.

        Parameters
        ----------
        probs:
            (N, C) class probabilities from the current model; (N, 0) when the strategy needs no model.
        batch_size:
            How many items to choose.
        embeddings:
            (N, D) penultimate-layer embeddings, given when `needs_embeddings` is true.
        item_ids:
            (N,) ids of the items, for strategies that keep per-item state between rounds.
        """


class UncertaintyStrategy(Strategy):
    """A strategy that scores every item on its own and takes the top scores."""

    @abstractmethod
    def score(self, probs: np.ndarray) -> np.ndarray:
        """(N,) informativeness of each item; higher is more informative."""

    def select(self, probs, batch_size, *, embeddings=None, item_ids=None) -> Selection:
        scores = self.score(np.asarray(probs))  # in the model's float32: a float64 copy of (N, C) adds only time
        idx = top_k(scores, batch_size, seed=self.seed)
        return Selection(idx, rank_scores(len(idx), len(scores)))
