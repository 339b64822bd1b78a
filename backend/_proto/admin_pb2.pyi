import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InstanceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUNNING: _ClassVar[InstanceStatus]
    COMPLETED: _ClassVar[InstanceStatus]
    CONTINUED_AS_NEW: _ClassVar[InstanceStatus]
    FAILED: _ClassVar[InstanceStatus]
    CANCELED: _ClassVar[InstanceStatus]
    TERMINATED: _ClassVar[InstanceStatus]
    PENDING: _ClassVar[InstanceStatus]
    SUSPENDED: _ClassVar[InstanceStatus]
    STALLED: _ClassVar[InstanceStatus]
RUNNING: InstanceStatus
COMPLETED: InstanceStatus
CONTINUED_AS_NEW: InstanceStatus
FAILED: InstanceStatus
CANCELED: InstanceStatus
TERMINATED: InstanceStatus
PENDING: InstanceStatus
SUSPENDED: InstanceStatus
STALLED: InstanceStatus

class ListInstancesRequest(_message.Message):
    __slots__ = ("app_ids", "name", "statuses", "created_after", "created_before", "instance_id_prefix", "page_size", "page_token")
    APP_IDS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    app_ids: _containers.RepeatedScalarFieldContainer[str]
    name: str
    statuses: _containers.RepeatedScalarFieldContainer[InstanceStatus]
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    instance_id_prefix: str
    page_size: int
    page_token: str
    def __init__(self, app_ids: _Optional[_Iterable[str]] = ..., name: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[InstanceStatus, str]]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., instance_id_prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class InstanceSummary(_message.Message):
    __slots__ = ("app_id", "instance_id", "name", "status", "created_at", "last_updated_at", "completed_at", "parent_app_id", "parent_instance_id", "failure_message", "failure_type", "version", "custom_status")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    PARENT_APP_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_STATUS_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    instance_id: str
    name: str
    status: InstanceStatus
    created_at: _timestamp_pb2.Timestamp
    last_updated_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    parent_app_id: str
    parent_instance_id: str
    failure_message: str
    failure_type: str
    version: str
    custom_status: str
    def __init__(self, app_id: _Optional[str] = ..., instance_id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[_Union[InstanceStatus, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., parent_app_id: _Optional[str] = ..., parent_instance_id: _Optional[str] = ..., failure_message: _Optional[str] = ..., failure_type: _Optional[str] = ..., version: _Optional[str] = ..., custom_status: _Optional[str] = ...) -> None: ...

class ListInstancesResponse(_message.Message):
    __slots__ = ("instances", "next_page_token")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[InstanceSummary]
    next_page_token: str
    def __init__(self, instances: _Optional[_Iterable[_Union[InstanceSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAppsStatusRequest(_message.Message):
    __slots__ = ("app_ids",)
    APP_IDS_FIELD_NUMBER: _ClassVar[int]
    app_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, app_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AppStatus(_message.Message):
    __slots__ = ("app_id", "served", "workers", "waiting", "waiting_without_worker", "oldest_waiting_since", "oldest_waiting_seconds", "instances")
    class InstancesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    WAITING_WITHOUT_WORKER_FIELD_NUMBER: _ClassVar[int]
    OLDEST_WAITING_SINCE_FIELD_NUMBER: _ClassVar[int]
    OLDEST_WAITING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    served: bool
    workers: int
    waiting: int
    waiting_without_worker: int
    oldest_waiting_since: _timestamp_pb2.Timestamp
    oldest_waiting_seconds: float
    instances: _containers.ScalarMap[str, int]
    def __init__(self, app_id: _Optional[str] = ..., served: bool = ..., workers: _Optional[int] = ..., waiting: _Optional[int] = ..., waiting_without_worker: _Optional[int] = ..., oldest_waiting_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., oldest_waiting_seconds: _Optional[float] = ..., instances: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GetAppsStatusResponse(_message.Message):
    __slots__ = ("apps", "now")
    APPS_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    apps: _containers.RepeatedCompositeFieldContainer[AppStatus]
    now: _timestamp_pb2.Timestamp
    def __init__(self, apps: _Optional[_Iterable[_Union[AppStatus, _Mapping]]] = ..., now: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CountInstancesRequest(_message.Message):
    __slots__ = ("app_ids",)
    APP_IDS_FIELD_NUMBER: _ClassVar[int]
    app_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, app_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AppCounts(_message.Message):
    __slots__ = ("app_id", "counts")
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    counts: _containers.ScalarMap[str, int]
    def __init__(self, app_id: _Optional[str] = ..., counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class CountInstancesResponse(_message.Message):
    __slots__ = ("apps",)
    APPS_FIELD_NUMBER: _ClassVar[int]
    apps: _containers.RepeatedCompositeFieldContainer[AppCounts]
    def __init__(self, apps: _Optional[_Iterable[_Union[AppCounts, _Mapping]]] = ...) -> None: ...
