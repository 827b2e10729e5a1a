from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("data", "dtype", "shape")
    DATA_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, data: _Optional[bytes] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Payload(_message.Message):
    __slots__ = ("tensor", "image", "text")
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    tensor: Tensor
    image: bytes
    text: str
    def __init__(self, tensor: _Optional[_Union[Tensor, _Mapping]] = ..., image: _Optional[bytes] = ..., text: _Optional[str] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("worker_id", "strategy", "model_version", "score", "cluster", "guess", "guess_probability")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    GUESS_FIELD_NUMBER: _ClassVar[int]
    GUESS_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    strategy: str
    model_version: int
    score: float
    cluster: int
    guess: int
    guess_probability: float
    def __init__(self, worker_id: _Optional[str] = ..., strategy: _Optional[str] = ..., model_version: _Optional[int] = ..., score: _Optional[float] = ..., cluster: _Optional[int] = ..., guess: _Optional[int] = ..., guess_probability: _Optional[float] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("dataset", "num_classes", "class_names", "input_shape", "architecture", "mode", "batch_size", "class_descriptions", "guidelines", "input_size", "test_dataset", "audit_share")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    CLASS_DESCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    GUIDELINES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    TEST_DATASET_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SHARE_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    num_classes: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    architecture: str
    mode: str
    batch_size: int
    class_descriptions: _containers.RepeatedScalarFieldContainer[str]
    guidelines: str
    input_size: _containers.RepeatedScalarFieldContainer[int]
    test_dataset: str
    audit_share: float
    def __init__(self, dataset: _Optional[str] = ..., num_classes: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., input_shape: _Optional[_Iterable[int]] = ..., architecture: _Optional[str] = ..., mode: _Optional[str] = ..., batch_size: _Optional[int] = ..., class_descriptions: _Optional[_Iterable[str]] = ..., guidelines: _Optional[str] = ..., input_size: _Optional[_Iterable[int]] = ..., test_dataset: _Optional[str] = ..., audit_share: _Optional[float] = ...) -> None: ...

class LabeledRecord(_message.Message):
    __slots__ = ("seq", "item_id", "payload", "label", "annotator_id", "queued_at_unix", "leased_at_unix", "labeled_at_unix", "provenance", "supersedes_seq")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    LEASED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    LABELED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDES_SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    item_id: str
    payload: Payload
    label: int
    annotator_id: str
    queued_at_unix: float
    leased_at_unix: float
    labeled_at_unix: float
    provenance: Provenance
    supersedes_seq: int
    def __init__(self, seq: _Optional[int] = ..., item_id: _Optional[str] = ..., payload: _Optional[_Union[Payload, _Mapping]] = ..., label: _Optional[int] = ..., annotator_id: _Optional[str] = ..., queued_at_unix: _Optional[float] = ..., leased_at_unix: _Optional[float] = ..., labeled_at_unix: _Optional[float] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ..., supersedes_seq: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("version", "server_id", "trained_seq", "num_labels", "architecture", "metrics", "created_at_unix", "size_bytes", "sha256", "blob_available")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINED_SEQ_FIELD_NUMBER: _ClassVar[int]
    NUM_LABELS_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    BLOB_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    version: int
    server_id: str
    trained_seq: int
    num_labels: int
    architecture: str
    metrics: _containers.ScalarMap[str, float]
    created_at_unix: float
    size_bytes: int
    sha256: str
    blob_available: bool
    def __init__(self, version: _Optional[int] = ..., server_id: _Optional[str] = ..., trained_seq: _Optional[int] = ..., num_labels: _Optional[int] = ..., architecture: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., created_at_unix: _Optional[float] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., blob_available: _Optional[bool] = ...) -> None: ...
