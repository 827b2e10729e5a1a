"""The selector (the paper's worker, command aal-worker): owns a shard, follows model versions, scores and submits
candidates."""

from aal_rpc.selector.loop import Selector, WorkerConfig

__all__ = ["Selector", "WorkerConfig"]
