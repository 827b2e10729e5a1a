"""The shape every model has: `features` (input batch -> penultimate-layer embedding) and a linear `head`."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """`embed` gives the embeddings strategies cluster on (Cluster-Margin); `input_dtype` is what the input
    tensor must be (float32 for images and vectors, int64 for hashed text n-grams)."""

    def __init__(self, features: nn.Module, embedding_dim: int, num_classes: int, *,
                 input_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.features = features
        self.embedding_dim = embedding_dim
        self.input_dtype = input_dtype
        self.head = nn.Linear(embedding_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def image_shape(architecture: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"{architecture} needs image input (C, H, W); got {input_shape}")
    c, h, w = (int(d) for d in input_shape)
    return c, h, w
