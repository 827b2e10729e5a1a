"""Backbones from packages when they are installed, weights from local files only (nothing is downloaded):

- `timm:NAME`: timm's image model NAME without its classifier, random weights (pretrained ones come with
  aal-server --init-weights), normalizing inputs with the mean and std of NAME's pretrained configuration;
- `hf:PATH`: a Hugging Face transformers vision model in the local directory PATH (config.json and weights, as
  `save_pretrained` writes them), loaded with `local_files_only`, its pooled output as the embedding, normalizing
  inputs with the mean and std of the directory's preprocessor_config.json when it has one.

Neither package is a dependency: each is imported only when such a model is named, and one that is missing, or a
path that holds no model, is said in one line naming the model.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from torch import nn

from aal_rpc.models.classifier import Classifier, image_shape

PREFIXES = ("timm:", "hf:")


def hub_factory(architecture: str):
    """The factory `timm:NAME` or `hf:PATH` means, None for any other name; ValueError, in one line, where the
    package is missing, timm has no such model, or PATH is no local model directory."""
    if architecture.startswith("timm:"):
        return _timm_factory(architecture, architecture[len("timm:"):])
    if architecture.startswith("hf:"):
        return _hf_factory(architecture, architecture[len("hf:"):])
    return None


def _package(architecture: str, name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ValueError(f"model {architecture!r} needs the package {name}, which is not installed (pip install "
                         f"{name}; aal_rpc does not depend on it)") from None
    except Exception as exc:  # noqa: BLE001 - a package that is installed but fails as it is imported
        raise ValueError(f"model {architecture!r}: importing {name} failed: {type(exc).__name__}: {exc}") from None


def _timm_factory(architecture: str, name: str):
    if not name:
        raise ValueError(f"model {architecture!r}: expected timm:NAME, e.g. timm:resnet18")
    timm = _package(architecture, "timm")
    if not timm.is_model(name):
        raise ValueError(f"model {architecture!r}: timm has no model {name!r}")

    def build(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
        c, _, _ = image_shape(architecture, input_shape)
        net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=c)
        config = getattr(net, "pretrained_cfg", None) or {}
        mean, std = config.get("mean"), config.get("std")
        per_channel = mean is not None and std is not None and len(mean) == len(std) == c
        return Classifier(net, int(net.num_features), num_classes, input_mean=mean if per_channel else None,
                          input_std=std if per_channel else None)

    return build


class PooledOutput(nn.Module):
    """A transformers vision model as `features`: its pooled output, flattened (or, without one, the mean of its
    last hidden state over the tokens)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state.mean(dim=1)
        return pooled.flatten(1)


def _hf_factory(architecture: str, path: str):
    directory = Path(path).expanduser()
    if not (directory / "config.json").is_file():
        raise ValueError(f"model {architecture!r}: {directory} is no local Hugging Face model directory (no "
                         "config.json there); hf:PATH reads a directory on this machine, nothing is downloaded")
    transformers = _package(architecture, "transformers")
    mean = std = None
    processor = directory / "preprocessor_config.json"
    if processor.is_file():
        config = json.loads(processor.read_text(encoding="utf-8"))
        mean, std = config.get("image_mean"), config.get("image_std")

    def build(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
        c, h, w = image_shape(architecture, input_shape)
        features = PooledOutput(transformers.AutoModel.from_pretrained(str(directory), local_files_only=True))
        with torch.no_grad():
            dim = features.eval()(torch.zeros(1, c, h, w)).shape[1]
        per_channel = mean is not None and std is not None and len(mean) == len(std) == c
        return Classifier(features, int(dim), num_classes, input_mean=mean if per_channel else None,
                          input_std=std if per_channel else None)

    return build
