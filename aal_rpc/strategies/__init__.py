"""Sampling strategies by name, one per module behind `Strategy`."""

from __future__ import annotations

from aal_rpc.strategies.activelab import ActiveLabStrategy
from aal_rpc.strategies.badge import BadgeStrategy
from aal_rpc.strategies.base import Selection, Strategy, UncertaintyStrategy, top_k
from aal_rpc.strategies.cluster_margin import ClusterMarginStrategy
from aal_rpc.strategies.entropy import EntropyStrategy
from aal_rpc.strategies.least_confidence import LeastConfidenceStrategy
from aal_rpc.strategies.margin import MarginStrategy
from aal_rpc.strategies.typiclust import TypiClust
from aal_rpc.strategies.uniform import RandomStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (RandomStrategy, EntropyStrategy, LeastConfidenceStrategy, MarginStrategy,
                              ClusterMarginStrategy, BadgeStrategy, TypiClust, ActiveLabStrategy)
}


def get_strategy(name: str, **kwargs) -> Strategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; expected one of {sorted(STRATEGIES)}") from None
    return cls(**kwargs)


__all__ = ["STRATEGIES", "Selection", "Strategy", "UncertaintyStrategy", "get_strategy", "top_k"]
