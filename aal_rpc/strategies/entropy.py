"""Entropy sampling (Holub et al., 2008): the items whose predictive distribution has the largest entropy.

The entropy is divided by log(C), so scores lie in [0, 1] like the other uncertainty strategies' and
candidates of different strategies compete fairly in the query pool's score order.
"""

import numpy as np

from aal_rpc.strategies.base import UncertaintyStrategy


class EntropyStrategy(UncertaintyStrategy):
    name = "entropy"

    def score(self, probs: np.ndarray) -> np.ndarray:
        p = np.clip(probs, 1e-12, 1.0)
        h = -(probs * np.log(p)).sum(axis=1)
        return h / np.log(probs.shape[1]) if probs.shape[1] > 1 else np.zeros(len(probs))
