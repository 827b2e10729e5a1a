"""Every annotator's current label of every item of L, followed by a worker for adaptive re-labeling
(strategies.activelab): a thread streams L without payloads (a worker's token may) and folds each record into
consensus.Votes. The stream is resumed across outages by the client (client/retry.py)."""

from __future__ import annotations

import logging
import threading

import grpc

from aal_rpc.client import CoordinatorClient
from aal_rpc.consensus import Consensus, Votes, consensus
from aal_rpc.serde import record_from_proto

log = logging.getLogger(__name__)


class LabelVotes:
    def __init__(self, client: CoordinatorClient, num_classes: int):
        self._votes = Votes()
        self._num_classes = num_classes
        self._lock = threading.Lock()
        self._stopped = False
        self._folded = 0  # records folded in
        self._agreed: tuple[int, Consensus] | None = None  # the last consensus and the records it saw
        self._stream = client.follow_labels(0, include_payload=False)
        self._thread = threading.Thread(target=self._follow, name="label-votes", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            for msg in self._stream:
                record = record_from_proto(msg)
                with self._lock:
                    self._votes.add(record)
                    self._folded += 1
        except grpc.RpcError as exc:  # not an outage (ridden out): a token that may not read L, say
            if not self._stopped:
                log.warning("adaptive re-labeling is off: L's labels cannot be read (%s: %s)", exc.code().name,
                            exc.details())

    def consensus(self) -> Consensus:
        """The consensus of the labels read so far (consensus.py), worked out again only once more arrived."""
        with self._lock:
            if self._agreed is None or self._agreed[0] != self._folded:
                self._agreed = (self._folded, consensus(self._votes, self._num_classes))
            return self._agreed[1]

    def stop(self) -> None:
        self._stopped = True
        self._stream.cancel()
