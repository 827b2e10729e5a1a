"""The worker (selector): owns a shard, follows model versions, scores and submits candidates."""

from aal_rpc.worker.selector import Selector, WorkerConfig

__all__ = ["Selector", "WorkerConfig"]
