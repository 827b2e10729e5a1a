from aal_rpc.proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReleaseReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RELEASE_REASON_UNSPECIFIED: _ClassVar[ReleaseReason]
    RELEASE_REASON_RETURN: _ClassVar[ReleaseReason]
    RELEASE_REASON_SKIP: _ClassVar[ReleaseReason]
    RELEASE_REASON_DEFER: _ClassVar[ReleaseReason]

class ItemState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_STATE_UNSPECIFIED: _ClassVar[ItemState]
    ITEM_STATE_QUEUED: _ClassVar[ItemState]
    ITEM_STATE_LEASED: _ClassVar[ItemState]
    ITEM_STATE_LABELED: _ClassVar[ItemState]
    ITEM_STATE_SKIPPED: _ClassVar[ItemState]
RELEASE_REASON_UNSPECIFIED: ReleaseReason
RELEASE_REASON_RETURN: ReleaseReason
RELEASE_REASON_SKIP: ReleaseReason
RELEASE_REASON_DEFER: ReleaseReason
ITEM_STATE_UNSPECIFIED: ItemState
ITEM_STATE_QUEUED: ItemState
ITEM_STATE_LEASED: ItemState
ITEM_STATE_LABELED: ItemState
ITEM_STATE_SKIPPED: ItemState

class LeaseQueryRequest(_message.Message):
    __slots__ = ("annotator_id", "wait_seconds", "lease_seconds")
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    annotator_id: str
    wait_seconds: float
    lease_seconds: float
    def __init__(self, annotator_id: _Optional[str] = ..., wait_seconds: _Optional[float] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("item_id", "lease_id", "deadline_unix", "payload", "provenance")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    lease_id: str
    deadline_unix: float
    payload: _common_pb2.Payload
    provenance: _common_pb2.Provenance
    def __init__(self, item_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., deadline_unix: _Optional[float] = ..., payload: _Optional[_Union[_common_pb2.Payload, _Mapping]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ...) -> None: ...

class LeaseQueryResponse(_message.Message):
    __slots__ = ("found", "query")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    found: bool
    query: Query
    def __init__(self, found: _Optional[bool] = ..., query: _Optional[_Union[Query, _Mapping]] = ...) -> None: ...

class SubmitLabelRequest(_message.Message):
    __slots__ = ("lease_id", "item_id", "label", "annotator_id", "labeler")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    LABELER_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    item_id: str
    label: int
    annotator_id: str
    labeler: str
    def __init__(self, lease_id: _Optional[str] = ..., item_id: _Optional[str] = ..., label: _Optional[int] = ..., annotator_id: _Optional[str] = ..., labeler: _Optional[str] = ...) -> None: ...

class SubmitLabelResponse(_message.Message):
    __slots__ = ("seq", "duplicate")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    duplicate: bool
    def __init__(self, seq: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class ReleaseQueryRequest(_message.Message):
    __slots__ = ("lease_id", "item_id", "annotator_id", "reason", "defer_seconds")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEFER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    item_id: str
    annotator_id: str
    reason: ReleaseReason
    defer_seconds: float
    def __init__(self, lease_id: _Optional[str] = ..., item_id: _Optional[str] = ..., annotator_id: _Optional[str] = ..., reason: _Optional[_Union[ReleaseReason, str]] = ..., defer_seconds: _Optional[float] = ...) -> None: ...

class ReleaseQueryResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RenewLeaseRequest(_message.Message):
    __slots__ = ("lease_id", "item_id", "annotator_id", "lease_seconds")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    item_id: str
    annotator_id: str
    lease_seconds: float
    def __init__(self, lease_id: _Optional[str] = ..., item_id: _Optional[str] = ..., annotator_id: _Optional[str] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class RenewLeaseResponse(_message.Message):
    __slots__ = ("deadline_unix",)
    DEADLINE_UNIX_FIELD_NUMBER: _ClassVar[int]
    deadline_unix: float
    def __init__(self, deadline_unix: _Optional[float] = ...) -> None: ...

class CorrectLabelRequest(_message.Message):
    __slots__ = ("item_id", "label", "annotator_id", "labeler")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    LABELER_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    label: int
    annotator_id: str
    labeler: str
    def __init__(self, item_id: _Optional[str] = ..., label: _Optional[int] = ..., annotator_id: _Optional[str] = ..., labeler: _Optional[str] = ...) -> None: ...

class CorrectLabelResponse(_message.Message):
    __slots__ = ("seq", "supersedes_seq", "duplicate")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDES_SEQ_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    supersedes_seq: int
    duplicate: bool
    def __init__(self, seq: _Optional[int] = ..., supersedes_seq: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class GetItemRequest(_message.Message):
    __slots__ = ("item_id", "annotator_id")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    annotator_id: str
    def __init__(self, item_id: _Optional[str] = ..., annotator_id: _Optional[str] = ...) -> None: ...

class GetItemResponse(_message.Message):
    __slots__ = ("item_id", "state", "payload", "provenance", "current")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    state: ItemState
    payload: _common_pb2.Payload
    provenance: _common_pb2.Provenance
    current: _common_pb2.LabeledRecord
    def __init__(self, item_id: _Optional[str] = ..., state: _Optional[_Union[ItemState, str]] = ..., payload: _Optional[_Union[_common_pb2.Payload, _Mapping]] = ..., provenance: _Optional[_Union[_common_pb2.Provenance, _Mapping]] = ..., current: _Optional[_Union[_common_pb2.LabeledRecord, _Mapping]] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("ref", "want", "open", "label", "release", "renew", "close")
    REF_FIELD_NUMBER: _ClassVar[int]
    WANT_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    RENEW_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    ref: int
    want: int
    open: SessionOpen
    label: SessionLabel
    release: SessionRelease
    renew: SessionRenew
    close: SessionClose
    def __init__(self, ref: _Optional[int] = ..., want: _Optional[int] = ..., open: _Optional[_Union[SessionOpen, _Mapping]] = ..., label: _Optional[_Union[SessionLabel, _Mapping]] = ..., release: _Optional[_Union[SessionRelease, _Mapping]] = ..., renew: _Optional[_Union[SessionRenew, _Mapping]] = ..., close: _Optional[_Union[SessionClose, _Mapping]] = ...) -> None: ...

class SessionOpen(_message.Message):
    __slots__ = ("annotator_id", "lease_seconds", "keep_leases")
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KEEP_LEASES_FIELD_NUMBER: _ClassVar[int]
    annotator_id: str
    lease_seconds: float
    keep_leases: bool
    def __init__(self, annotator_id: _Optional[str] = ..., lease_seconds: _Optional[float] = ..., keep_leases: _Optional[bool] = ...) -> None: ...

class SessionLabel(_message.Message):
    __slots__ = ("lease_id", "item_id", "label", "labeler")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    LABELER_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    item_id: str
    label: int
    labeler: str
    def __init__(self, lease_id: _Optional[str] = ..., item_id: _Optional[str] = ..., label: _Optional[int] = ..., labeler: _Optional[str] = ...) -> None: ...

class SessionRelease(_message.Message):
    __slots__ = ("lease_id", "item_id", "reason", "defer_seconds")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEFER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    item_id: str
    reason: ReleaseReason
    defer_seconds: float
    def __init__(self, lease_id: _Optional[str] = ..., item_id: _Optional[str] = ..., reason: _Optional[_Union[ReleaseReason, str]] = ..., defer_seconds: _Optional[float] = ...) -> None: ...

class SessionRenew(_message.Message):
    __slots__ = ("lease_id", "item_id", "lease_seconds")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    item_id: str
    lease_seconds: float
    def __init__(self, lease_id: _Optional[str] = ..., item_id: _Optional[str] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class SessionClose(_message.Message):
    __slots__ = ("received",)
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    received: int
    def __init__(self, received: _Optional[int] = ...) -> None: ...

class SessionClosed(_message.Message):
    __slots__ = ("given_back",)
    GIVEN_BACK_FIELD_NUMBER: _ClassVar[int]
    given_back: int
    def __init__(self, given_back: _Optional[int] = ...) -> None: ...

class SessionError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class SessionOpened(_message.Message):
    __slots__ = ("annotator_id",)
    ANNOTATOR_ID_FIELD_NUMBER: _ClassVar[int]
    annotator_id: str
    def __init__(self, annotator_id: _Optional[str] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("ref", "opened", "labeled", "released", "renewed", "error", "closed", "queries", "dry")
    REF_FIELD_NUMBER: _ClassVar[int]
    OPENED_FIELD_NUMBER: _ClassVar[int]
    LABELED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    RENEWED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    DRY_FIELD_NUMBER: _ClassVar[int]
    ref: int
    opened: SessionOpened
    labeled: SubmitLabelResponse
    released: ReleaseQueryResponse
    renewed: RenewLeaseResponse
    error: SessionError
    closed: SessionClosed
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    dry: bool
    def __init__(self, ref: _Optional[int] = ..., opened: _Optional[_Union[SessionOpened, _Mapping]] = ..., labeled: _Optional[_Union[SubmitLabelResponse, _Mapping]] = ..., released: _Optional[_Union[ReleaseQueryResponse, _Mapping]] = ..., renewed: _Optional[_Union[RenewLeaseResponse, _Mapping]] = ..., error: _Optional[_Union[SessionError, _Mapping]] = ..., closed: _Optional[_Union[SessionClosed, _Mapping]] = ..., queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ..., dry: _Optional[bool] = ...) -> None: ...
