"""The local multi-process experiment runner, its metrics and plots."""

from aal_rpc.experiment.runner import ExperimentConfig, run_experiment

__all__ = ["ExperimentConfig", "run_experiment"]
