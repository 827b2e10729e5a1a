"""The trainer (the paper's server, command aal-server): follows L, trains whenever labels arrived, evaluates and
publishes weights."""

from aal_rpc.trainer.loop import Trainer, TrainerConfig

__all__ = ["Trainer", "TrainerConfig"]
