"""Model factories by name, all plain torch: `mlp`, `cnn`, `resnet18`, `vgg16` (CIFAR-style) and `text` (hashed
n-grams); torchvision's ImageNet-shaped networks as `tv:resnet18` and `tv:vgg16` (torchvision imported lazily);
timm's image models as `timm:NAME` and a local Hugging Face vision model as `hf:PATH` (models/hub.py, each package
imported only when named, weights from local files only).

Every model is a `Classifier`: `features` maps an input batch to its penultimate-layer embedding,
`head` maps embeddings to class logits. Strategies that need embeddings (Cluster-Margin) call `embed`.

Your own model (README.md, "Bring your own model"): wherever a model is named, `MODULE:FACTORY` names a factory by
import path, and any other name that is not built in names an entry point in the group `aal_rpc.models` of an
installed package. A factory is called as `FACTORY(input_shape, num_classes)` and returns a Classifier, or a plain
`nn.Module` that gives logits (PlainClassifier: the input of its last nn.Linear is the embedding).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata

import torch

from aal_rpc.models.cifar import resnet18, vgg16
from aal_rpc.models.classifier import Classifier, PlainClassifier
from aal_rpc.models.hub import hub_factory
from aal_rpc.models.small import cnn, mlp
from aal_rpc.models.text import text
from aal_rpc.models.tv import tv_resnet18, tv_vgg16

ARCHITECTURES: dict[str, Callable[[tuple[int, ...], int], Classifier]] = {
    "mlp": mlp,
    "cnn": cnn,
    "resnet18": resnet18,
    "vgg16": vgg16,
    "text": text,
    "tv:resnet18": tv_resnet18,
    "tv:vgg16": tv_vgg16,
}


ENTRY_POINTS = "aal_rpc.models"  # the entry-point group in which installed packages name their models

Factory = Callable[[tuple[int, ...], int], torch.nn.Module]


def resolve_factory(architecture: str) -> Factory:
    """The factory a model name means: a built-in name; `timm:NAME` or `hf:PATH` (models/hub.py); else
    `MODULE:FACTORY` (an import path; FACTORY may be dotted, `module:Class.method`); else an entry point of the group
    `aal_rpc.models`. Raises ValueError, in one line naming the model, for one it cannot find or load."""
    if architecture in ARCHITECTURES:
        return ARCHITECTURES[architecture]
    hub = hub_factory(architecture)  # timm:NAME, hf:PATH
    if hub is not None:
        return hub
    module_name, colon, attribute = architecture.partition(":")
    if not colon:
        found = metadata.entry_points(group=ENTRY_POINTS, name=architecture)
        if not found:
            installed = sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINTS)})
            raise ValueError(f"unknown model {architecture!r}: expected one of {sorted(ARCHITECTURES)}, MODULE:FACTORY"
                             f", or an entry point of {ENTRY_POINTS!r} ({', '.join(installed) or 'none installed'})")
        entry = next(iter(found))
        factory = _loaded(architecture, entry.load, f"loading entry point {entry.value!r}")
    elif not module_name or not attribute:
        raise ValueError(f"model {architecture!r}: expected MODULE:FACTORY, e.g. my_models:small_cnn")
    else:
        factory = _loaded(architecture, lambda: importlib.import_module(module_name), f"importing {module_name}")
        for part in attribute.split("."):
            factory = getattr(factory, part, None)
            if factory is None:
                raise ValueError(f"model {architecture!r}: module {module_name} has no {attribute}")
    if not callable(factory):
        raise ValueError(f"model {architecture!r}: {attribute or 'the entry point'} is not callable")
    return factory


def _loaded(architecture: str, load: Callable, doing: str):
    """`load()`, any failure as one line naming the model (a missing module says where Python looked)."""
    try:
        return load()
    except ModuleNotFoundError as exc:
        raise ValueError(f"model {architecture!r}: no module named {exc.name!r} (is it installed, or on "
                         "PYTHONPATH?)") from exc
    except Exception as exc:  # noqa: BLE001 - whatever the user's module raises as it is imported
        raise ValueError(f"model {architecture!r}: {doing} failed: {_cause(exc)}") from exc


def build_model(architecture: str, input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    """A new model (random weights) of the named architecture for inputs of `input_shape` and `num_classes`
    classes. A factory's plain nn.Module comes wrapped as a PlainClassifier. ValueError, in one line naming the
    model, for a name that resolves to nothing, or a factory of yours that fails or returns no nn.Module."""
    if architecture in ARCHITECTURES:
        return ARCHITECTURES[architecture](tuple(input_shape), num_classes)
    factory = resolve_factory(architecture)
    try:
        model = factory(tuple(input_shape), num_classes)
    except Exception as exc:  # noqa: BLE001 - the user's factory: its failure, in one line
        raise ValueError(f"model {architecture!r}: its factory failed for input shape {tuple(input_shape)} and "
                         f"{num_classes} classes: {_cause(exc)}") from exc
    if isinstance(model, Classifier):
        return model
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model {architecture!r}: its factory returned {type(model).__name__}, not a "
                         "torch.nn.Module")
    try:
        return PlainClassifier(model)
    except ValueError as exc:
        raise ValueError(f"model {architecture!r}: {exc}") from None


def check_classifier(model: Classifier, input_shape: tuple[int, ...], num_classes: int, *, run: bool) -> None:
    """The contract every model keeps, checked before any round: its head (a plain module's last registered
    nn.Linear) gives `num_classes` logits, and with `run` a forward pass on a batch of two inputs of `input_shape`,
    in train mode and in eval mode, gives finite logits of shape (2, num_classes). ValueError in one line otherwise.
    A head of the wrong width was trained and published, then broke the strategies that read the head
    (Cluster-Margin, BADGE) and the predictions past the class list; a forward that fails ended aal-server's
    first round with a traceback."""
    out = model.head.out_features
    if out != num_classes:
        raise ValueError(f"its head gives {out} outputs for the task's {num_classes} classes (a plain module's last "
                         "registered nn.Linear is its head: it must give the logits)")
    if not run:
        return
    x = torch.zeros((2, *input_shape), dtype=input_dtype(model))
    was_training = model.training
    try:
        for mode in ("train", "eval"):
            model.train(mode == "train")
            try:
                with torch.no_grad():
                    logits = model(x)
            except Exception as exc:  # noqa: BLE001 - the user's forward: its failure, in one line
                raise ValueError(f"a forward pass on two inputs of shape {tuple(input_shape)} failed in {mode} mode: "
                                 f"{_cause(exc)}") from exc
            shape = tuple(getattr(logits, "shape", ()))
            if shape != (2, num_classes):
                raise ValueError(f"a forward pass on two inputs of shape {tuple(input_shape)} gave "
                                 f"{shape or type(logits).__name__} in {mode} mode, not logits of shape "
                                 f"(2, {num_classes})")
            if not torch.isfinite(logits).all():
                raise ValueError(f"a forward pass on two inputs of shape {tuple(input_shape)} gave logits that are "
                                 f"not all finite (NaN or infinite) in {mode} mode")
    finally:
        model.train(was_training)


def _cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def shape_model(architecture: str, input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    """A model to read the names, shapes and dtypes of an architecture's weights from: built on the meta device (no
    weight allocated), or for real where a factory of yours needs real tensors as it builds."""
    try:
        with torch.device("meta"):
            return build_model(architecture, input_shape, num_classes)
    except ValueError:
        return build_model(architecture, input_shape, num_classes)


def expected_shapes(architecture: str, input_shape: tuple[int, ...], num_classes: int) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of an architecture: what uploaded weights must match."""
    return {k: tuple(v.shape) for k, v in shape_model(architecture, input_shape, num_classes).state_dict().items()}


def input_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype a model's input batch must have: int64 for `text`, float32 for the rest."""
    return getattr(model, "input_dtype", torch.float32)


__all__ = ["ARCHITECTURES", "ENTRY_POINTS", "Classifier", "PlainClassifier", "build_model", "check_classifier",
           "expected_shapes", "input_dtype", "resolve_factory", "shape_model"]
