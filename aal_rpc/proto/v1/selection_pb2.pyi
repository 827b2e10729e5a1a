from aal_rpc.proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetLatestModelRequest(_message.Message):
    __slots__ = ("after_version", "wait_seconds")
    AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    after_version: int
    wait_seconds: float
    def __init__(self, after_version: _Optional[int] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class GetLatestModelResponse(_message.Message):
    __slots__ = ("found", "model")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    found: bool
    model: _common_pb2.ModelInfo
    def __init__(self, found: _Optional[bool] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...

class DownloadModelRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class DownloadModelResponse(_message.Message):
    __slots__ = ("info", "chunk", "crc32", "crc32c")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    info: _common_pb2.ModelInfo
    chunk: bytes
    crc32: int
    crc32c: int
    def __init__(self, info: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., chunk: _Optional[bytes] = ..., crc32: _Optional[int] = ..., crc32c: _Optional[int] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("item_id", "payload", "score", "cluster", "guess", "guess_probability")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    GUESS_FIELD_NUMBER: _ClassVar[int]
    GUESS_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    payload: _common_pb2.Payload
    score: float
    cluster: int
    guess: int
    guess_probability: float
    def __init__(self, item_id: _Optional[str] = ..., payload: _Optional[_Union[_common_pb2.Payload, _Mapping]] = ..., score: _Optional[float] = ..., cluster: _Optional[int] = ..., guess: _Optional[int] = ..., guess_probability: _Optional[float] = ...) -> None: ...

class SubmitCandidatesRequest(_message.Message):
    __slots__ = ("worker_id", "strategy", "model_version", "candidates")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    strategy: str
    model_version: int
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    def __init__(self, worker_id: _Optional[str] = ..., strategy: _Optional[str] = ..., model_version: _Optional[int] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ...) -> None: ...

class SubmitCandidatesResponse(_message.Message):
    __slots__ = ("accepted", "refreshed", "rejected", "evicted")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REFRESHED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    refreshed: int
    rejected: int
    evicted: int
    def __init__(self, accepted: _Optional[int] = ..., refreshed: _Optional[int] = ..., rejected: _Optional[int] = ..., evicted: _Optional[int] = ...) -> None: ...

class GetShardStateRequest(_message.Message):
    __slots__ = ("shard_index", "num_shards", "labeled_after_seq", "model_version")
    SHARD_INDEX_FIELD_NUMBER: _ClassVar[int]
    NUM_SHARDS_FIELD_NUMBER: _ClassVar[int]
    LABELED_AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    shard_index: int
    num_shards: int
    labeled_after_seq: int
    model_version: int
    def __init__(self, shard_index: _Optional[int] = ..., num_shards: _Optional[int] = ..., labeled_after_seq: _Optional[int] = ..., model_version: _Optional[int] = ...) -> None: ...

class GetShardStateResponse(_message.Message):
    __slots__ = ("queued_item_ids", "labeled_item_ids", "labeled_through_seq", "more", "demand", "max_labels_per_item")
    QUEUED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    LABELED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    LABELED_THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    DEMAND_FIELD_NUMBER: _ClassVar[int]
    MAX_LABELS_PER_ITEM_FIELD_NUMBER: _ClassVar[int]
    queued_item_ids: _containers.RepeatedScalarFieldContainer[str]
    labeled_item_ids: _containers.RepeatedScalarFieldContainer[str]
    labeled_through_seq: int
    more: bool
    demand: int
    max_labels_per_item: int
    def __init__(self, queued_item_ids: _Optional[_Iterable[str]] = ..., labeled_item_ids: _Optional[_Iterable[str]] = ..., labeled_through_seq: _Optional[int] = ..., more: _Optional[bool] = ..., demand: _Optional[int] = ..., max_labels_per_item: _Optional[int] = ...) -> None: ...
