"""A published model outside the system: written to a folder (its weights and a card saying what it is), loaded
back, and used to classify new files, prepared exactly as the pool's items were.

`aal-admin model --out DIR` writes the folder and `aal-admin predict --model DIR FILE...` uses it; both are thin
layers over this module. No coordinator is needed to load or use a written model, and nothing is unpickled.

Example::

    from aal_rpc.predict import load_model

    model = load_model("out/model")  # model.safetensors + card.json
    for p in model.predict_files(["cat.png", "dog.jpg"]):
        print(p.path, p.label_name, p.probabilities[p.label_name])
    probs = model.predict_arrays(x)  # (N, C) for inputs shaped like the pool's, (N, *model.card["input_shape"])
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aal_rpc.measures import estimated_accuracy
from aal_rpc.types import ModelInfo, Task

WEIGHTS_FILE = "model.safetensors"  # the weights exactly as the coordinator served them
CARD_FILE = "card.json"
TEXT_ARCHITECTURE = "text"  # the one architecture that reads text (hashed n-grams, aal_rpc/data/text.py)
TEXT_SUFFIX = ".txt"
FILES_PER_BATCH = 256  # files read and classified together: memory stays bounded however many are given
CARD_NEEDS = ("architecture", "classes", "input_shape", "sha256")  # what loading a model reads from its card


class UnreadableFile(ValueError):
    """A file the model cannot be given: not a picture (or text) that can be read, or of the wrong kind."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


@dataclass(frozen=True)
class Prediction:
    """One file's class (index and name) and the probability of every class, by name."""

    path: str
    label: int
    label_name: str
    probabilities: dict[str, float]

    def to_json(self) -> dict:
        """What `aal-admin predict` prints for the file."""
        return {"path": self.path, "class": self.label_name, "probabilities": self.probabilities}


def model_card(task: Task, info: ModelInfo, weights: bytes | memoryview) -> dict:
    """What a model folder's card.json says: the task's classes and input, the model's registry entry and its
    accuracy estimated on the audit labels (null where it saw none), and the weights' sha256."""
    return {
        "architecture": info.architecture or task.architecture,
        "classes": list(task.class_names),
        "class_descriptions": list(task.class_descriptions),
        "input_shape": list(task.input_shape),
        "input_size": list(task.input_size),
        "dataset": task.dataset,
        "version": info.version,
        "labels_seen": info.num_labels,
        "trained_seq": info.trained_seq,
        "metrics": dict(info.metrics),
        "estimated_accuracy": estimated_accuracy(info.metrics),
        "created_at": info.created_at,
        "sha256": hashlib.sha256(weights).hexdigest(),
    }


def write_model(out_dir: str | Path, task: Task, info: ModelInfo, weights: bytes | memoryview) -> Path:
    """Write `weights` (safetensors bytes, as downloaded) and their card into `out_dir` (created if need be);
    returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / WEIGHTS_FILE).write_bytes(weights)
    (out / CARD_FILE).write_text(json.dumps(model_card(task, info, weights), indent=2, sort_keys=True) + "\n")
    return out


class ExportedModel:
    """A written model, loaded: the torch module in eval mode, its card and its class names."""

    def __init__(self, card: dict, module, *, device: str = "cpu"):
        self.card = card
        self.classes: tuple[str, ...] = tuple(card["classes"])
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in card["input_shape"])
        self.module = module.eval()
        self.device = device

    @property
    def reads_text(self) -> bool:
        """The built-in text model, or one of yours that reads what it does: TEXT_LENGTH integer bucket ids."""
        from aal_rpc.data.text import TEXT_LENGTH
        from aal_rpc.models import input_dtype

        return self.card["architecture"] == TEXT_ARCHITECTURE or (
            self.input_shape == (TEXT_LENGTH,) and not input_dtype(self.module).is_floating_point)

    @property
    def reads_pictures(self) -> bool:
        return not self.reads_text and len(self.input_shape) == 3

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) of inputs prepared as the pool's were, (N, *input_shape)."""
        from aal_rpc.training import predict_proba

        probs, _ = predict_proba(self.module, np.asarray(x), device=self.device)
        return probs

    def check_reads_files(self) -> None:
        """Raise ValueError unless files can be classified: picture and text tasks, not vector ones."""
        if not (self.reads_text or self.reads_pictures):
            raise ValueError(f"this model reads vectors of shape {self.input_shape}, not files: classifying files is "
                             "for picture and text tasks only (vector tasks are out of its scope; pass arrays to "
                             "predict_arrays)")

    def prepare_file(self, path: str | Path) -> np.ndarray:
        """One file as the model's input, prepared as the pool's items were: a picture resized to the task's
        (H, W) with its C channels, or a text (a text model reads every file as UTF-8 text) as hashed n-grams.
        Raises UnreadableFile; ValueError for a vector task (check_reads_files)."""
        path = Path(path)
        self.check_reads_files()
        if self.reads_text:
            from aal_rpc.data.text import encode_text

            try:
                return encode_text(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError as exc:
                raise UnreadableFile(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
            except OSError as exc:
                raise UnreadableFile(path, _reason(exc)) from exc
        if path.suffix.lower() == TEXT_SUFFIX:
            raise UnreadableFile(path, "a text file, but this model classifies pictures")
        from aal_rpc.data import load_image

        channels, height, width = self.input_shape
        try:
            x = load_image(path, input_size=(height, width), channels=channels)
        except (OSError, ValueError) as exc:  # ValueError: whatever Pillow cannot read to the end
            raise UnreadableFile(path, _reason(exc, path)) from exc
        if tuple(x.shape) != self.input_shape:
            raise UnreadableFile(path, f"read as shape {tuple(x.shape)}, the model needs {self.input_shape}")
        return x

    def iter_predictions(self, paths: Iterable[str | Path], *,
                         on_error: Callable[[UnreadableFile], None] | None = None) -> Iterator[Prediction]:
        """Each readable file's Prediction, in order, FILES_PER_BATCH files at a time. An unreadable file raises
        UnreadableFile, or, given `on_error`, is passed to it and left out."""
        self.check_reads_files()
        kept: list[str] = []
        inputs: list[np.ndarray] = []
        for path in paths:
            try:
                inputs.append(self.prepare_file(path))
            except UnreadableFile as exc:
                if on_error is None:
                    raise
                on_error(exc)
                continue
            kept.append(str(path))
            if len(inputs) == FILES_PER_BATCH:
                yield from self._predict_batch(kept, inputs)
                kept, inputs = [], []
        if inputs:
            yield from self._predict_batch(kept, inputs)

    def predict_files(self, paths: Iterable[str | Path], *,
                      on_error: Callable[[UnreadableFile], None] | None = None) -> list[Prediction]:
        """iter_predictions, as a list."""
        return list(self.iter_predictions(paths, on_error=on_error))

    def _predict_batch(self, paths: list[str], inputs: list[np.ndarray]) -> Iterator[Prediction]:
        for path, probs in zip(paths, self.predict_arrays(np.stack(inputs))):
            yield self.prediction(path, probs)

    def prediction(self, path: str, probs: np.ndarray) -> Prediction:
        label = int(np.argmax(probs))
        return Prediction(path, label, self.classes[label],
                          {name: float(p) for name, p in zip(self.classes, probs)})


def load_model(directory: str | Path, *, device: str = "cpu") -> ExportedModel:
    """The model a folder written by `write_model` holds. Raises ValueError, in one line, for a folder that is not
    one, weights that do not match the card's sha256 or architecture."""
    import torch

    from aal_rpc.errors import InvalidArgument
    from aal_rpc.models import build_model, expected_shapes
    from aal_rpc.serde import weights_from_bytes

    folder = Path(directory)
    try:
        card = json.loads((folder / CARD_FILE).read_text())
        weights = (folder / WEIGHTS_FILE).read_bytes()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder} is not a model folder written by `aal-admin model --out`: {_reason(exc)}") from exc
    missing = [key for key in CARD_NEEDS if key not in card]
    if missing:
        raise ValueError(f"{folder / CARD_FILE} lacks {', '.join(missing)}")
    if hashlib.sha256(weights).hexdigest() != card["sha256"]:
        raise ValueError(f"{folder / WEIGHTS_FILE} does not match the sha256 of {folder / CARD_FILE}")
    architecture, shape, classes = card["architecture"], tuple(card["input_shape"]), len(card["classes"])
    module = build_model(architecture, shape, classes)  # ValueError for an architecture this install lacks
    try:
        state = weights_from_bytes(weights, expected_shapes(architecture, shape, classes))
    except InvalidArgument as exc:
        raise ValueError(f"{folder / WEIGHTS_FILE}: {exc}") from exc
    module.load_state_dict(state)
    module.to(torch.device(device))
    return ExportedModel(card, module, device=device)


def _reason(exc: BaseException, path: Path | None = None) -> str:
    """An exception as a short phrase for a one-line message that already names `path`."""
    text = " ".join(str(getattr(exc, "strerror", None) or exc).split())
    if path is not None:
        text = text.removeprefix(f"{path}: ")
    return text or type(exc).__name__
