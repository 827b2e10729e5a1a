"""`text`: a fastText-style classifier over hashed n-grams (aal_rpc/data/text.py), in plain torch, no download."""

from __future__ import annotations

import torch
from torch import nn

from aal_rpc.data.text import NUM_BUCKETS, PADDING
from aal_rpc.models.classifier import Classifier

TEXT_EMBEDDING = 64  # width of each n-gram bucket's vector
TEXT_HIDDEN = 128  # width of the embedding strategies see
TEXT_INIT_STD = 0.1  # bucket vectors start small, so Adam's steps move them quickly (N(0, 1) learns ~2x slower)


def text(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    """Mean of the n-grams' bucket vectors (padding ignored) -> a 128-wide ReLU layer -> the head.

    The bucket table has sparse gradients: training.train steps it with SparseAdam, touching only the rows of a
    batch's n-grams rather than all 65,536 (a step ~100x cheaper on a CPU)."""
    if len(input_shape) != 1:
        raise ValueError(f"text needs hashed n-gram input (L,) (a jsonl: or csv: dataset); got {input_shape}")
    bag = nn.EmbeddingBag(NUM_BUCKETS, TEXT_EMBEDDING, mode="mean", padding_idx=PADDING, sparse=True)
    with torch.no_grad():
        bag.weight.normal_(0.0, TEXT_INIT_STD)
        bag.weight[PADDING].zero_()
    features = nn.Sequential(bag, nn.Linear(TEXT_EMBEDDING, TEXT_HIDDEN), nn.ReLU(), nn.Dropout(0.2))
    return Classifier(features, TEXT_HIDDEN, num_classes, input_dtype=torch.int64)
