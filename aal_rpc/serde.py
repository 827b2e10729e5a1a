"""Translation between domain records (aal_rpc.types) and aal.v1 messages, in paired x_to_proto / x_from_proto.

Also the weight format: safetensors bytes, never pickle. torch is imported only by the weight functions, so
annotation tools that use the clients do not need it.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import asdict, fields
from typing import TYPE_CHECKING

import numpy as np

from aal_rpc.errors import InvalidArgument
from aal_rpc.proto.v1 import admin_pb2, common_pb2
from aal_rpc.types import AnnotatorCounts, LabeledRecord, ModelInfo, Payload, Provenance, Stats, Task

if TYPE_CHECKING:
    import torch

ALLOWED_DTYPES = frozenset({"float32", "float64", "float16", "uint8", "int64", "int32"})
_ITEMSIZE = {name: np.dtype(name).itemsize for name in ALLOWED_DTYPES}  # looked up per candidate: numpy's is slower


def payload_to_proto(p: Payload) -> common_pb2.Payload:
    return common_pb2.Payload(tensor=common_pb2.Tensor(data=p.tensor, dtype=p.dtype, shape=list(p.shape)),
                              image=p.image, text=p.text)


def payload_from_proto(msg: common_pb2.Payload) -> Payload:
    """Check and convert; raises InvalidArgument when dtype, shape and byte count disagree."""
    t = msg.tensor
    if t.dtype not in ALLOWED_DTYPES:
        raise InvalidArgument(f"payload dtype {t.dtype!r} is not one of {sorted(ALLOWED_DTYPES)}")
    shape = tuple(int(d) for d in t.shape)
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"payload shape {shape} has a negative dimension")
    expected = math.prod(shape) * _ITEMSIZE[t.dtype]  # exact: no int64 product to wrap around
    if expected != len(t.data):
        raise InvalidArgument(f"payload of shape {shape} and dtype {t.dtype} needs {expected} bytes, got {len(t.data)}")
    return Payload(tensor=bytes(t.data), dtype=t.dtype, shape=shape, image=bytes(msg.image), text=msg.text)


def provenance_to_proto(p: Provenance) -> common_pb2.Provenance:
    return common_pb2.Provenance(worker_id=p.worker_id, strategy=p.strategy, model_version=p.model_version,
                                 score=p.score, cluster=p.cluster, guess=p.guess,
                                 guess_probability=p.guess_probability if p.guess is not None else 0.0)


def provenance_from_proto(msg: common_pb2.Provenance) -> Provenance:
    guess = msg.guess if msg.HasField("guess") else None
    return Provenance(worker_id=msg.worker_id, strategy=msg.strategy, model_version=msg.model_version,
                      score=msg.score, cluster=msg.cluster if msg.HasField("cluster") else None, guess=guess,
                      guess_probability=msg.guess_probability if guess is not None else 0.0)


def task_to_proto(t: Task) -> common_pb2.Task:
    return common_pb2.Task(dataset=t.dataset, num_classes=t.num_classes, class_names=list(t.class_names),
                           input_shape=list(t.input_shape), architecture=t.architecture, mode=t.mode,
                           batch_size=t.batch_size, class_descriptions=list(t.class_descriptions),
                           guidelines=t.guidelines, input_size=list(t.input_size), test_dataset=t.test_dataset,
                           audit_share=t.audit_share)


def task_from_proto(msg: common_pb2.Task) -> Task:
    return Task(dataset=msg.dataset, num_classes=msg.num_classes, class_names=tuple(msg.class_names),
                input_shape=tuple(msg.input_shape), architecture=msg.architecture, mode=msg.mode,
                batch_size=msg.batch_size, class_descriptions=tuple(msg.class_descriptions),
                guidelines=msg.guidelines, input_size=tuple(msg.input_size), test_dataset=msg.test_dataset,
                audit_share=msg.audit_share)


def record_to_proto(r: LabeledRecord) -> common_pb2.LabeledRecord:
    msg = common_pb2.LabeledRecord(
        seq=r.seq, item_id=r.item_id, label=r.label, annotator_id=r.annotator_id,
        queued_at_unix=r.queued_at, leased_at_unix=r.leased_at, labeled_at_unix=r.labeled_at,
        provenance=provenance_to_proto(r.provenance), supersedes_seq=r.supersedes)
    if r.payload is not None:
        msg.payload.CopyFrom(payload_to_proto(r.payload))
    return msg


def record_from_proto(msg: common_pb2.LabeledRecord) -> LabeledRecord:
    return LabeledRecord(
        seq=msg.seq, item_id=msg.item_id, label=msg.label, annotator_id=msg.annotator_id,
        payload=payload_from_proto(msg.payload) if msg.HasField("payload") else None,
        provenance=provenance_from_proto(msg.provenance), queued_at=msg.queued_at_unix,
        leased_at=msg.leased_at_unix, labeled_at=msg.labeled_at_unix, supersedes=msg.supersedes_seq)


def model_info_to_proto(m: ModelInfo) -> common_pb2.ModelInfo:
    return common_pb2.ModelInfo(
        version=m.version, server_id=m.server_id, trained_seq=m.trained_seq, num_labels=m.num_labels,
        architecture=m.architecture, metrics=m.metrics, created_at_unix=m.created_at,
        size_bytes=m.size_bytes, sha256=m.sha256, blob_available=m.blob_available)


def model_info_from_proto(msg: common_pb2.ModelInfo) -> ModelInfo:
    return ModelInfo(
        version=msg.version, server_id=msg.server_id, trained_seq=msg.trained_seq, num_labels=msg.num_labels,
        architecture=msg.architecture, metrics=dict(msg.metrics), created_at=msg.created_at_unix,
        size_bytes=msg.size_bytes, sha256=msg.sha256, blob_available=msg.blob_available)


def stats_to_proto(s: Stats) -> admin_pb2.GetStatsResponse:
    """GetStatsResponse's fields carry Stats' names, one for one (tests/test_admin_stats.py holds them equal)."""
    return admin_pb2.GetStatsResponse(**asdict(s))


def stats_from_proto(msg: admin_pb2.GetStatsResponse) -> Stats:
    values = {f.name: getattr(msg, f.name) for f in fields(Stats)}
    annotators = {a: AnnotatorCounts(c.labels, c.skips, c.defers) for a, c in msg.annotators.items()}
    return Stats(**{**values, "labels_by_strategy": dict(msg.labels_by_strategy), "annotators": annotators})


def weights_to_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    """A state dict as safetensors bytes."""
    from safetensors.torch import save as st_save

    return st_save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()})


def weights_from_bytes(data: bytes | bytearray | memoryview,
                       expected: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    """Parse safetensors bytes (never pickle) and, when given, check names and shapes against `expected`.

    A writable buffer (a download, chunking.assemble) is not copied: its tensors are views of it, and keep it
    alive (load_state_dict then copies them into the model once). Read-only bytes (a file read) go through
    safetensors' own reader, which copies each tensor out."""
    from safetensors.torch import load as st_load

    view = memoryview(data)
    try:
        state = _tensor_views(view) if not view.readonly and sys.byteorder == "little" else None
        if state is None:
            state = st_load(data if isinstance(data, bytes) else view.tobytes())
    except InvalidArgument:
        raise
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise InvalidArgument(f"weights are not valid safetensors: {exc}") from exc
    if expected is not None:
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise InvalidArgument(f"weights do not match the task's architecture: missing {missing[:5]}, "
                                  f"unexpected {extra[:5]}")
        for name, shape in expected.items():
            if tuple(state[name].shape) != tuple(shape):
                raise InvalidArgument(f"weights do not match the task's architecture: {name} has shape "
                                      f"{tuple(state[name].shape)}, expected {tuple(shape)}")
    return state


_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header
_TORCH_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                 "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _tensor_views(view: memoryview) -> dict[str, torch.Tensor] | None:
    """The tensors of safetensors bytes as views of `view`, with safetensors' checks: a header that fits, every
    tensor's bytes its shape and dtype's size, the tensors' data back to back from the header to the end. None
    when a tensor has a dtype this reader does not know (safetensors' reader takes those)."""
    import torch

    def bad(why: str) -> InvalidArgument:
        return InvalidArgument(f"weights are not valid safetensors: {why}")

    def whole(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    if len(view) < 8:
        raise bad("shorter than the length of their header")
    n = int.from_bytes(view[:8], "little")
    if n > min(_MAX_HEADER_BYTES, len(view) - 8):
        raise bad(f"a header of {n} bytes does not fit")
    header = json.loads(view[8:8 + n].tobytes())
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    header.pop("__metadata__", None)
    entries = []
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise bad(f"{name} is not described by an object")
        if entry.get("dtype") not in _TORCH_DTYPES:
            return None
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(shape, list) and all(whole(d) for d in shape) and isinstance(offsets, list)
                and len(offsets) == 2 and all(whole(o) for o in offsets)):
            raise bad(f"{name} has no valid shape and data offsets")
        entries.append((offsets[0], offsets[1], name, getattr(torch, _TORCH_DTYPES[entry["dtype"]]), shape))
    data = view[8 + n:]
    whole_data = torch.frombuffer(data, dtype=torch.uint8) if len(data) else torch.empty(0, dtype=torch.uint8)
    state: dict[str, torch.Tensor] = {}
    end = 0
    for begin, stop, name, dtype, shape in sorted(entries, key=lambda e: e[:2]):
        size = math.prod(shape) * dtype.itemsize
        if begin != end or stop - begin != size:
            raise bad(f"the data of {name} is not {size} bytes following the tensor before it")
        end = stop
        piece = whole_data[begin:stop]
        if (piece.data_ptr() | begin) % dtype.itemsize:  # a writer that did not align its tensors: a copy, aligned
            piece = piece.clone()
        state[name] = piece.view(dtype).reshape(shape)
    if end != len(data):
        raise bad(f"{len(data) - end} bytes follow the last tensor")
    return state


# safetensors' dtype names for the torch dtypes a state dict holds
_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
                       "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}
_FLOAT_DTYPES = frozenset({"F32", "F16", "BF16", "F64"})

WeightSpec = dict[str, tuple[tuple[int, ...], str]]  # tensor name -> (shape, safetensors dtype)


def weight_spec(architecture: str, input_shape: tuple[int, ...], num_classes: int) -> WeightSpec:
    """Names, shapes and dtypes of an architecture's state dict: what uploaded weights must match exactly."""
    from aal_rpc.models import shape_model

    return spec_of(shape_model(architecture, tuple(input_shape), num_classes))


def spec_of(model: torch.nn.Module) -> WeightSpec:
    """Names, shapes and dtypes of a model's state dict (built for real or on the meta device: the same)."""
    return {k: (tuple(v.shape), _SAFETENSORS_DTYPES[str(v.dtype).removeprefix("torch.")])
            for k, v in model.state_dict().items()}


def spec_fingerprint(spec: WeightSpec) -> str:
    """sha256 over an architecture's sorted (name, shape, dtype): equal where two installs of a model build the
    same weights. The coordinator serves its own (GetTask), and trainers and selectors compare theirs at start."""
    rows = sorted([name, list(shape), dtype] for name, (shape, dtype) in spec.items())
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def load_weights_file(path, spec: WeightSpec) -> dict[str, torch.Tensor]:
    """The state dict in a safetensors file (never pickle), once check_weights_file found it to be exactly `spec`'s:
    InvalidArgument, in one line, otherwise."""
    from safetensors.torch import load_file

    check_weights_file(path, spec)
    return load_file(str(path))


def check_weights_file(path, spec: WeightSpec) -> None:
    """Raise InvalidArgument unless the safetensors file at `path` holds exactly the tensors of `spec` (names,
    shapes, dtypes) with finite values. Reads one tensor at a time, never the whole file into memory."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names = set(f.keys())
            missing, extra = sorted(set(spec) - names), sorted(names - set(spec))
            if missing or extra:
                raise InvalidArgument(f"weights do not match the task's architecture: missing {missing[:5]}, "
                                      f"unexpected {extra[:5]}")
            for name, (shape, dtype) in spec.items():
                piece = f.get_slice(name)
                got_shape, got_dtype = tuple(piece.get_shape()), piece.get_dtype()
                if got_shape != shape or got_dtype != dtype:
                    raise InvalidArgument(f"weights do not match the task's architecture: {name} is {got_dtype} "
                                          f"of shape {got_shape}, expected {dtype} of shape {shape}")
                if dtype in _FLOAT_DTYPES and not f.get_tensor(name).isfinite().all():
                    raise InvalidArgument(f"weights hold NaN or infinite values in {name}")
    except InvalidArgument:
        raise
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise InvalidArgument(f"weights are not valid safetensors: {exc}{_looks_like_pickle(path)}") from exc


def _looks_like_pickle(path) -> str:
    """A hint for a file torch.save wrote (a zip archive, or a bare pickle), which is never unpickled here."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return ""
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return (" (this looks like a torch.save file: weights are never unpickled here; write them with "
                "safetensors.torch.save_file(model.state_dict(), PATH))")
    return ""
