"""Frozen backbones (aal-server --freeze-backbone): the head trains alone, on embeddings computed once per backbone.

A model's backbone is all of its weights but its linear head's (the input normalization and batchnorm statistics
included). Its fingerprint, a sha256 over those weights, is the same in every process that holds the same backbone,
whatever the head: `EmbeddingCache` keeps items' embeddings under it, so trainers and selectors pass over an item
once per backbone; then a round trains a Linear on cached embeddings and scoring is a matrix product.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from aal_rpc.models import Classifier
from aal_rpc.training import predict_proba
from aal_rpc.types import ModelInfo

KEEP_BACKBONES = 2  # an EmbeddingCache holds the embeddings of this many backbones, the least recently used dropped
# a model's metrics: 1 when its trainer trained only its head (aal-server --freeze-backbone), so that trainer's
# versions share one backbone, whose embeddings selectors keep
FROZEN_BACKBONE = "frozen_backbone"


def has_frozen_backbone(info: ModelInfo) -> bool:
    """Whether a published model's trainer kept its backbone frozen: a selector then keeps the backbone's embeddings
    of its shard and scores each later version that shares it with that version's head alone."""
    return info.metrics.get(FROZEN_BACKBONE, 0) > 0


def head_names(model: Classifier) -> set[str]:
    """The names in `model.state_dict()` of its head's tensors (a PlainClassifier's head keeps its own names)."""
    head = {id(t) for t in (*model.head.parameters(), *model.head.buffers())}
    return {name for name, t in model.state_dict(keep_vars=True).items() if id(t) in head}


def backbone_fingerprint(model: Classifier) -> str:
    """sha256 over the names, dtypes, shapes and bytes of every weight of `model` but its head's: equal for two
    models that embed every input alike (in eval mode), whatever their heads, in any process."""
    digest = hashlib.sha256()
    head = head_names(model)
    for name, tensor in sorted(model.state_dict().items()):
        if name in head:
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def embed_rows(model: Classifier, x: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """(N, D) float32 embeddings of x under `model` in eval mode (training.predict_proba's batches and precision)."""
    _, emb = predict_proba(model, x, device=device, with_embeddings=True)
    if emb is None:  # no rows
        return np.zeros((0, model.head.in_features), np.float32)
    return emb


@torch.inference_mode()
def head_probabilities(head: nn.Linear, embeddings: np.ndarray) -> np.ndarray:
    """softmax(embeddings @ W.T + b), (N, C) float32 on the CPU: the model's probabilities from cached embeddings."""
    weight = head.weight.detach().float().cpu()
    bias = head.bias.detach().float().cpu() if head.bias is not None else 0.0
    logits = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)) @ weight.T + bias
    return torch.softmax(logits, dim=1).numpy()


class EmbeddingCache:
    """Embeddings of named arrays of items, by backbone fingerprint: `rows` embeds only the rows it has not seen
    under that backbone. An array under a name only grows at its end (L's inputs, the audit's, a fixed test set or
    shard), so its first rows are the ones already embedded. Keeps `keep` backbones, the least recently used
    dropped."""

    def __init__(self, keep: int = KEEP_BACKBONES):
        self.keep = keep
        self._backbones: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self.embedded = 0  # rows embedded in all (a pass over the backbone each), for tests and benchmarks

    def rows(self, fingerprint: str, name: str, x: np.ndarray, embed: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """(len(x), D) embeddings of x under the backbone `fingerprint`; `embed` computes those of rows not held."""
        held = self._backbones.setdefault(fingerprint, {})
        self._backbones.move_to_end(fingerprint)
        while len(self._backbones) > self.keep:
            self._backbones.popitem(last=False)
        have = held.get(name)
        if have is None or len(have) > len(x):  # a name's rows only grow; fewer means another array: start again
            have = None
        if have is None or len(have) < len(x):
            start = 0 if have is None else len(have)
            new = embed(x[start:])
            self.embedded += len(new)
            have = new if have is None else np.concatenate([have, new])
            held[name] = have
        return have
