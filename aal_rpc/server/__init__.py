"""The server (trainer): follows L, trains whenever labels arrived, evaluates and publishes weights."""

from aal_rpc.server.trainer import Trainer, TrainerConfig

__all__ = ["Trainer", "TrainerConfig"]
