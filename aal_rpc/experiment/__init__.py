"""The local multi-process experiment runner, its metrics and plots.

The runner (torch, matplotlib) loads on first use.
"""

__all__ = ["ExperimentConfig", "ExperimentFailed", "run_experiment"]


def __getattr__(name: str):
    if name in __all__:
        from aal_rpc.experiment import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
