"""Least-confidence sampling (Li and Sethi, 2006): the items whose top class probability is lowest."""

import numpy as np

from aal_rpc.strategies.base import UncertaintyStrategy


class LeastConfidenceStrategy(UncertaintyStrategy):
    name = "least_confidence"

    def score(self, probs: np.ndarray) -> np.ndarray:
        return 1.0 - probs.max(axis=1)
