from aal_rpc.proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetTaskRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task", "caller_identity", "weights_fingerprint", "caller_may_name_labeler")
    TASK_FIELD_NUMBER: _ClassVar[int]
    CALLER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CALLER_MAY_NAME_LABELER_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.Task
    caller_identity: str
    weights_fingerprint: str
    caller_may_name_labeler: bool
    def __init__(self, task: _Optional[_Union[_common_pb2.Task, _Mapping]] = ..., caller_identity: _Optional[str] = ..., weights_fingerprint: _Optional[str] = ..., caller_may_name_labeler: _Optional[bool] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("labeled", "queued", "leased", "skipped", "latest_model_version", "models", "last_seq", "candidates_submitted", "candidates_evicted", "labels_by_strategy", "pool_capacity", "mode", "annotators")
    class LabelsByStrategyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class AnnotatorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: AnnotatorCounts
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[AnnotatorCounts, _Mapping]] = ...) -> None: ...
    LABELED_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    LEASED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    LATEST_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_EVICTED_FIELD_NUMBER: _ClassVar[int]
    LABELS_BY_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    POOL_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATORS_FIELD_NUMBER: _ClassVar[int]
    labeled: int
    queued: int
    leased: int
    skipped: int
    latest_model_version: int
    models: int
    last_seq: int
    candidates_submitted: int
    candidates_evicted: int
    labels_by_strategy: _containers.ScalarMap[str, int]
    pool_capacity: int
    mode: str
    annotators: _containers.MessageMap[str, AnnotatorCounts]
    def __init__(self, labeled: _Optional[int] = ..., queued: _Optional[int] = ..., leased: _Optional[int] = ..., skipped: _Optional[int] = ..., latest_model_version: _Optional[int] = ..., models: _Optional[int] = ..., last_seq: _Optional[int] = ..., candidates_submitted: _Optional[int] = ..., candidates_evicted: _Optional[int] = ..., labels_by_strategy: _Optional[_Mapping[str, int]] = ..., pool_capacity: _Optional[int] = ..., mode: _Optional[str] = ..., annotators: _Optional[_Mapping[str, AnnotatorCounts]] = ...) -> None: ...

class AnnotatorCounts(_message.Message):
    __slots__ = ("labels", "skips", "defers")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SKIPS_FIELD_NUMBER: _ClassVar[int]
    DEFERS_FIELD_NUMBER: _ClassVar[int]
    labels: int
    skips: int
    defers: int
    def __init__(self, labels: _Optional[int] = ..., skips: _Optional[int] = ..., defers: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("after_version", "page_size")
    AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    after_version: int
    page_size: int
    def __init__(self, after_version: _Optional[int] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "more")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelInfo]
    more: bool
    def __init__(self, models: _Optional[_Iterable[_Union[_common_pb2.ModelInfo, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...

class ExportLabelsRequest(_message.Message):
    __slots__ = ("after_seq", "include_payload", "latest_only")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    LATEST_ONLY_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    include_payload: bool
    latest_only: bool
    def __init__(self, after_seq: _Optional[int] = ..., include_payload: _Optional[bool] = ..., latest_only: _Optional[bool] = ...) -> None: ...

class ImportLabelsRequest(_message.Message):
    __slots__ = ("item_id", "label", "payload", "annotator_id")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    label: int
    payload: _common_pb2.Payload
    annotator_id: str
    def __init__(self, item_id: _Optional[str] = ..., label: _Optional[int] = ..., payload: _Optional[_Union[_common_pb2.Payload, _Mapping]] = ..., annotator_id: _Optional[str] = ...) -> None: ...

class ImportLabelsResponse(_message.Message):
    __slots__ = ("imported", "skipped", "first_seq", "last_seq")
    IMPORTED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    imported: int
    skipped: int
    first_seq: int
    last_seq: int
    def __init__(self, imported: _Optional[int] = ..., skipped: _Optional[int] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ...) -> None: ...
