"""Random sampling: a seeded uniform choice, the baseline every other strategy must beat."""

import numpy as np

from aal_rpc.strategies.base import Selection, Strategy, rank_scores


class RandomStrategy(Strategy):
    name = "random"
    needs_model = False

    def select(self, probs, batch_size, *, embeddings=None, item_ids=None) -> Selection:
        n = len(probs) if item_ids is None else len(item_ids)
        k = max(0, min(int(batch_size), n))
        idx = np.random.default_rng(self.seed).permutation(n)[:k]
        return Selection(idx, rank_scores(k, n))
