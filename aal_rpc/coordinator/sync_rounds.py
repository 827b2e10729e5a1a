"""Synchronous mode (`--mode sync`): the classic active-learning loop built from the same processes.

Labels come in rounds of `batch_size`. When a round's last label lands, no query is released until
(1) a model trained on all of L is published and (2) the workers have rescored with it, i.e. S holds
at least `batch_size` candidates of that version. Older candidates are then dropped, and exactly
`batch_size` leases are handed out before the gate closes again. Annotators meanwhile block in
their long poll, which is the waiting that asynchronous mode removes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SyncRounds:
    batch_size: int
    round_end: int = 0  # the label count at which the current round closes
    version: int = 0  # the model version this round's candidates must come from
    rounds_opened: int = 0

    @classmethod
    def resume(cls, batch_size: int, labeled: int, latest_version: int) -> "SyncRounds":
        """The state after a restart with `labeled` labels: mid-round, or waiting to open the next round."""
        if labeled % batch_size:
            return cls(batch_size, round_end=labeled - labeled % batch_size + batch_size, version=latest_version)
        return cls(batch_size, round_end=labeled, version=latest_version)

    def is_open(self, labeled: int) -> bool:
        return labeled < self.round_end

    def may_lease(self, labeled: int, leased: int) -> bool:
        return labeled + leased < self.round_end

    def ready_to_open(self, labeled: int, model_labels: int | None, fresh_candidates: int) -> bool:
        """Closed, a model trained on all of L exists (none needed before the first label), and S is rescored."""
        if self.is_open(labeled):
            return False
        trained = labeled == 0 or (model_labels is not None and model_labels >= labeled)
        return trained and fresh_candidates >= self.batch_size

    def open(self, labeled: int, version: int) -> None:
        self.round_end = labeled + self.batch_size
        self.version = version
        self.rounds_opened += 1
