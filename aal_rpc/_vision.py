"""Lazy access to torchvision, an optional extra: imported only where a torchvision model or dataset is asked for."""

from __future__ import annotations


def import_torchvision():
    try:
        import torchvision  # noqa: PLC0415 - lazy on purpose
    except Exception as exc:  # ImportError, or a CUDA build failing on a CPU torch
        raise RuntimeError(
            "this model or dataset needs torchvision, which could not be loaded "
            f"({type(exc).__name__}: {exc}). Install a torchvision build matching your torch, "
            "e.g. pip install 'aal-rpc[vision]'"
        ) from exc
    return torchvision
