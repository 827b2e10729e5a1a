from aal_rpc.proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BeginRoundRequest(_message.Message):
    __slots__ = ("server_id", "num_labels", "round_seconds")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_LABELS_FIELD_NUMBER: _ClassVar[int]
    ROUND_SECONDS_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    num_labels: int
    round_seconds: float
    def __init__(self, server_id: _Optional[str] = ..., num_labels: _Optional[int] = ..., round_seconds: _Optional[float] = ...) -> None: ...

class BeginRoundResponse(_message.Message):
    __slots__ = ("wait_seconds", "reason")
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    wait_seconds: float
    reason: str
    def __init__(self, wait_seconds: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class StreamLabelsRequest(_message.Message):
    __slots__ = ("after_seq", "follow", "omit_payload")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    OMIT_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    follow: bool
    omit_payload: bool
    def __init__(self, after_seq: _Optional[int] = ..., follow: _Optional[bool] = ..., omit_payload: _Optional[bool] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("server_id", "trained_seq", "num_labels", "architecture", "metrics", "size_bytes", "sha256")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINED_SEQ_FIELD_NUMBER: _ClassVar[int]
    NUM_LABELS_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    trained_seq: int
    num_labels: int
    architecture: str
    metrics: _containers.ScalarMap[str, float]
    size_bytes: int
    sha256: str
    def __init__(self, server_id: _Optional[str] = ..., trained_seq: _Optional[int] = ..., num_labels: _Optional[int] = ..., architecture: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadModelRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelInfo
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...
