from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TerminalStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TERMINAL_STATUS_UNSPECIFIED: _ClassVar[TerminalStatus]
    TERMINAL_STATUS_COMPLETED: _ClassVar[TerminalStatus]
    TERMINAL_STATUS_FAILED: _ClassVar[TerminalStatus]

class ActivityTerminalStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTIVITY_TERMINAL_STATUS_UNSPECIFIED: _ClassVar[ActivityTerminalStatus]
    ACTIVITY_TERMINAL_STATUS_COMPLETED: _ClassVar[ActivityTerminalStatus]
    ACTIVITY_TERMINAL_STATUS_FAILED: _ClassVar[ActivityTerminalStatus]
TERMINAL_STATUS_UNSPECIFIED: TerminalStatus
TERMINAL_STATUS_COMPLETED: TerminalStatus
TERMINAL_STATUS_FAILED: TerminalStatus
ACTIVITY_TERMINAL_STATUS_UNSPECIFIED: ActivityTerminalStatus
ACTIVITY_TERMINAL_STATUS_COMPLETED: ActivityTerminalStatus
ACTIVITY_TERMINAL_STATUS_FAILED: ActivityTerminalStatus

class ChildCompletionAttestationPayload(_message.Message):
    __slots__ = ("parentInstanceId", "parentTaskScheduledId", "ioDigest", "signerCertDigest", "terminalStatus", "canonicalSpecVersion")
    PARENTINSTANCEID_FIELD_NUMBER: _ClassVar[int]
    PARENTTASKSCHEDULEDID_FIELD_NUMBER: _ClassVar[int]
    IODIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNERCERTDIGEST_FIELD_NUMBER: _ClassVar[int]
    TERMINALSTATUS_FIELD_NUMBER: _ClassVar[int]
    CANONICALSPECVERSION_FIELD_NUMBER: _ClassVar[int]
    parentInstanceId: str
    parentTaskScheduledId: int
    ioDigest: bytes
    signerCertDigest: bytes
    terminalStatus: TerminalStatus
    canonicalSpecVersion: int
    def __init__(self, parentInstanceId: _Optional[str] = ..., parentTaskScheduledId: _Optional[int] = ..., ioDigest: _Optional[bytes] = ..., signerCertDigest: _Optional[bytes] = ..., terminalStatus: _Optional[_Union[TerminalStatus, str]] = ..., canonicalSpecVersion: _Optional[int] = ...) -> None: ...

class ChildCompletionAttestation(_message.Message):
    __slots__ = ("payload", "signature")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    signature: bytes
    def __init__(self, payload: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ActivityCompletionAttestationPayload(_message.Message):
    __slots__ = ("parentInstanceId", "parentTaskScheduledId", "activityName", "ioDigest", "signerCertDigest", "terminalStatus", "canonicalSpecVersion")
    PARENTINSTANCEID_FIELD_NUMBER: _ClassVar[int]
    PARENTTASKSCHEDULEDID_FIELD_NUMBER: _ClassVar[int]
    ACTIVITYNAME_FIELD_NUMBER: _ClassVar[int]
    IODIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNERCERTDIGEST_FIELD_NUMBER: _ClassVar[int]
    TERMINALSTATUS_FIELD_NUMBER: _ClassVar[int]
    CANONICALSPECVERSION_FIELD_NUMBER: _ClassVar[int]
    parentInstanceId: str
    parentTaskScheduledId: int
    activityName: str
    ioDigest: bytes
    signerCertDigest: bytes
    terminalStatus: ActivityTerminalStatus
    canonicalSpecVersion: int
    def __init__(self, parentInstanceId: _Optional[str] = ..., parentTaskScheduledId: _Optional[int] = ..., activityName: _Optional[str] = ..., ioDigest: _Optional[bytes] = ..., signerCertDigest: _Optional[bytes] = ..., terminalStatus: _Optional[_Union[ActivityTerminalStatus, str]] = ..., canonicalSpecVersion: _Optional[int] = ...) -> None: ...

class ActivityCompletionAttestation(_message.Message):
    __slots__ = ("payload", "signature")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    signature: bytes
    def __init__(self, payload: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ExternalSigningCertificate(_message.Message):
    __slots__ = ("digest", "certificate")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    digest: bytes
    certificate: bytes
    def __init__(self, digest: _Optional[bytes] = ..., certificate: _Optional[bytes] = ...) -> None: ...
