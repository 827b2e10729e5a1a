"""Entropy sampling (Holub et al., 2008): the items whose predictive distribution has the largest entropy."""

import numpy as np

from aal_rpc.strategies.base import UncertaintyStrategy


class EntropyStrategy(UncertaintyStrategy):
    name = "entropy"

    def score(self, probs: np.ndarray) -> np.ndarray:
        p = np.clip(probs, 1e-12, 1.0)
        return -(probs * np.log(p)).sum(axis=1)
