"""Margin sampling (Balcan et al., 2007): the items with the smallest gap between the top two classes."""

import numpy as np

from aal_rpc.strategies.base import UncertaintyStrategy


def margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability of each row (1.0 for a single class)."""
    if probs.shape[1] < 2:
        return np.ones(len(probs))
    top2 = np.partition(probs, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


class MarginStrategy(UncertaintyStrategy):
    name = "margin"

    def score(self, probs: np.ndarray) -> np.ndarray:
        return 1.0 - margins(probs)
