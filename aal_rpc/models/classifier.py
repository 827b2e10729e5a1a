"""The shape every model has: `features` (input batch -> penultimate-layer embedding) and a linear `head`."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """`embed` gives the embeddings strategies cluster on (Cluster-Margin); `input_dtype` is what the input
    tensor must be (float32 for images and vectors, int64 for hashed text n-grams).

    `input_mean` and `input_std`, when given, normalize every input before `features` sees it, (x - mean) / std:
    the normalization a (pretrained) network comes with, kept in its weights as buffers. Per channel for pictures
    (C values), else anything that broadcasts against one input."""

    input_mean: torch.Tensor | None  # buffers (register_buffer), both or neither
    input_std: torch.Tensor | None

    def __init__(self, features: nn.Module, embedding_dim: int, num_classes: int, *,
                 input_dtype: torch.dtype = torch.float32, input_mean=None, input_std=None):
        super().__init__()
        self.features = features
        self.embedding_dim = embedding_dim
        self.input_dtype = input_dtype
        self.head = nn.Linear(embedding_dim, num_classes)
        if (input_mean is None) != (input_std is None):
            raise ValueError("input_mean and input_std go together")
        as_buffer = lambda v: None if v is None else torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
        self.register_buffer("input_mean", as_buffer(input_mean))
        self.register_buffer("input_std", as_buffer(input_std))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_mean is None or self.input_std is None:
            return x
        mean, std = self.input_mean, self.input_std
        if mean.dim() == 1 and x.dim() > 2:  # one value per channel of (N, C, ...)
            shape = (-1,) + (1,) * (x.dim() - 2)
            mean, std = mean.view(shape), std.view(shape)
        return (x - mean) / std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def image_shape(architecture: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"{architecture} needs image input (C, H, W); got {input_shape}")
    c, h, w = (int(d) for d in input_shape)
    return c, h, w


class PlainClassifier(Classifier):
    """A plain `nn.Module` that maps an input batch to logits, as a Classifier. The input of its last `nn.Linear`
    (in the order its layers were registered) serves as the embedding and that layer as the head, so its last
    Linear must give the logits. Its state dict is the module's own, names unchanged: weights written from the plain
    module load here, and the other way round."""

    def __init__(self, net: nn.Module):
        nn.Module.__init__(self)  # not Classifier's: the module already holds its features and head
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("it has no nn.Linear layer whose input could serve as the embedding (return an "
                             "aal_rpc.models.Classifier instead)")
        self.net = net
        self._head = (linears[-1],)  # in a tuple: registered once, under `net`, so its weights are not listed twice
        self.embedding_dim = linears[-1].in_features
        self.input_dtype = getattr(net, "input_dtype", torch.float32)
        self._register_state_dict_hook(_drop_prefix)
        self._register_load_state_dict_pre_hook(_add_prefix)

    @property
    def head(self) -> nn.Linear:  # type: ignore[override]  # Classifier's registered head, read-only here on purpose
        return self._head[0]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        seen: list[torch.Tensor] = []
        hook = self.head.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
        try:
            self.net(x)
        finally:
            hook.remove()
        return seen[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


NET = "net."  # PlainClassifier's module in its own state dict's names, which leave it out


def _drop_prefix(module, state_dict, prefix, local_metadata):
    for key in [k for k in state_dict if k.startswith(prefix + NET)]:
        state_dict[prefix + key[len(prefix + NET):]] = state_dict.pop(key)


def _add_prefix(state_dict, prefix, *_):
    for key in [k for k in state_dict if k.startswith(prefix)]:
        state_dict[prefix + NET + key[len(prefix):]] = state_dict.pop(key)
