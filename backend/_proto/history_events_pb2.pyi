import datetime

from . import orchestration_pb2 as _orchestration_pb2
from . import attestation_pb2 as _attestation_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import wrappers_pb2 as _wrappers_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutionStartedEvent(_message.Message):
    __slots__ = ("name", "version", "input", "workflowInstance", "parentInstance", "scheduledStartTimestamp", "parentTraceContext", "workflowSpanID", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    WORKFLOWINSTANCE_FIELD_NUMBER: _ClassVar[int]
    PARENTINSTANCE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULEDSTARTTIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PARENTTRACECONTEXT_FIELD_NUMBER: _ClassVar[int]
    WORKFLOWSPANID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: _wrappers_pb2.StringValue
    input: _wrappers_pb2.StringValue
    workflowInstance: _orchestration_pb2.WorkflowInstance
    parentInstance: _orchestration_pb2.ParentInstanceInfo
    scheduledStartTimestamp: _timestamp_pb2.Timestamp
    parentTraceContext: _orchestration_pb2.TraceContext
    workflowSpanID: _wrappers_pb2.StringValue
    tags: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ..., input: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ..., workflowInstance: _Optional[_Union[_orchestration_pb2.WorkflowInstance, _Mapping]] = ..., parentInstance: _Optional[_Union[_orchestration_pb2.ParentInstanceInfo, _Mapping]] = ..., scheduledStartTimestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., parentTraceContext: _Optional[_Union[_orchestration_pb2.TraceContext, _Mapping]] = ..., workflowSpanID: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ExecutionCompletedEvent(_message.Message):
    __slots__ = ("workflowStatus", "result", "failureDetails")
    WORKFLOWSTATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FAILUREDETAILS_FIELD_NUMBER: _ClassVar[int]
    workflowStatus: _orchestration_pb2.OrchestrationStatus
    result: _wrappers_pb2.StringValue
    failureDetails: _orchestration_pb2.TaskFailureDetails
    def __init__(self, workflowStatus: _Optional[_Union[_orchestration_pb2.OrchestrationStatus, str]] = ..., result: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ..., failureDetails: _Optional[_Union[_orchestration_pb2.TaskFailureDetails, _Mapping]] = ...) -> None: ...

class ExecutionTerminatedEvent(_message.Message):
    __slots__ = ("input", "recurse")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    RECURSE_FIELD_NUMBER: _ClassVar[int]
    input: _wrappers_pb2.StringValue
    recurse: bool
    def __init__(self, input: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ..., recurse: bool = ...) -> None: ...

class TaskScheduledEvent(_message.Message):
    __slots__ = ("name", "version", "input", "parentTraceContext", "taskExecutionId", "rerunParentInstanceInfo", "historyPropagationScope")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    PARENTTRACECONTEXT_FIELD_NUMBER: _ClassVar[int]
    TASKEXECUTIONID_FIELD_NUMBER: _ClassVar[int]
    RERUNPARENTINSTANCEINFO_FIELD_NUMBER: _ClassVar[int]
    HISTORYPROPAGATIONSCOPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: _wrappers_pb2.StringValue
    input: _wrappers_pb2.StringValue
    parentTraceContext: _orchestration_pb2.TraceContext
    taskExecutionId: str
    rerunParentInstanceInfo: _orchestration_pb2.RerunParentInstanceInfo
    historyPropagationScope: _orchestration_pb2.HistoryPropagationScope
    def __init__(self, name: _Optional[str] = ..., version: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ..., input: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ..., parentTraceContext: _Optional[_Union[_orchestration_pb2.TraceContext, _Mapping]] = ..., taskExecutionId: _Optional[str] = ..., rerunParentInstanceInfo: _Optional[_Union[_orchestration_pb2.RerunParentInstanceInfo, _Mapping]] = ..., historyPropagationScope: _Optional[_Union[_orchestration_pb2.HistoryPropagationScope, str]] = ...) -> None: ...

class TaskCompletedEvent(_message.Message):
    __slots__ = ("taskScheduledId", "result", "taskExecutionId", "attestation", "signerCertificate")
    TASKSCHEDULEDID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    TASKEXECUTIONID_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    SIGNERCERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    taskScheduledId: int
    result: _wrappers_pb2.StringValue
    taskExecutionId: str
    attestation: _attestation_pb2.ActivityCompletionAttestation
    signerCertificate: bytes
    def __init__(self, taskScheduledId: _Optional[int] = ..., result: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ..., taskExecutionId: _Optional[str] = ..., attestation: _Optional[_Union[_attestation_pb2.ActivityCompletionAttestation, _Mapping]] = ..., signerCertificate: _Optional[bytes] = ...) -> None: ...

class TaskFailedEvent(_message.Message):
    __slots__ = ("taskScheduledId", "failureDetails", "taskExecutionId", "attestation", "signerCertificate")
    TASKSCHEDULEDID_FIELD_NUMBER: _ClassVar[int]
    FAILUREDETAILS_FIELD_NUMBER: _ClassVar[int]
    TASKEXECUTIONID_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    SIGNERCERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    taskScheduledId: int
    failureDetails: _orchestration_pb2.TaskFailureDetails
    taskExecutionId: str
    attestation: _attestation_pb2.ActivityCompletionAttestation
    signerCertificate: bytes
    def __init__(self, taskScheduledId: _Optional[int] = ..., failureDetails: _Optional[_Union[_orchestration_pb2.TaskFailureDetails, _Mapping]] = ..., taskExecutionId: _Optional[str] = ..., attestation: _Optional[_Union[_attestation_pb2.ActivityCompletionAttestation, _Mapping]] = ..., signerCertificate: _Optional[bytes] = ...) -> None: ...

class ChildWorkflowInstanceCreatedEvent(_message.Message):
    __slots__ = ("instanceId", "name", "version", "input", "parentTraceContext", "rerunParentInstanceInfo", "historyPropagationScope", "retryParentInstanceInfo")
    INSTANCEID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    PARENTTRACECONTEXT_FIELD_NUMBER: _ClassVar[int]
    RERUNPARENTINSTANCEINFO_FIELD_NUMBER: _ClassVar[int]
    HISTORYPROPAGATIONSCOPE_FIELD_NUMBER: _ClassVar[int]
    RETRYPARENTINSTANCEINFO_FIELD_NUMBER: _ClassVar[int]
    instanceId: str
    name: str
    version: _wrappers_pb2.StringValue
    input: _wrappers_pb2.StringValue
    parentTraceContext: _orchestration_pb2.TraceContext
    rerunParentInstanceInfo: _orchestration_pb2.RerunParentInstanceInfo
    historyPropagationScope: _orchestration_pb2.HistoryPropagationScope
    retryParentInstanceInfo: _orchestration_pb2.RetryParentInstanceInfo
    def __init__(self, instanceId: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ..., input: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ..., parentTraceContext: _Optional[_Union[_orchestration_pb2.TraceContext, _Mapping]] = ..., rerunParentInstanceInfo: _Optional[_Union[_orchestration_pb2.RerunParentInstanceInfo, _Mapping]] = ..., historyPropagationScope: _Optional[_Union[_orchestration_pb2.HistoryPropagationScope, str]] = ..., retryParentInstanceInfo: _Optional[_Union[_orchestration_pb2.RetryParentInstanceInfo, _Mapping]] = ...) -> None: ...

class ChildWorkflowInstanceCompletedEvent(_message.Message):
    __slots__ = ("taskScheduledId", "result", "attestation", "signerCertificate")
    TASKSCHEDULEDID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    SIGNERCERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    taskScheduledId: int
    result: _wrappers_pb2.StringValue
    attestation: _attestation_pb2.ChildCompletionAttestation
    signerCertificate: bytes
    def __init__(self, taskScheduledId: _Optional[int] = ..., result: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ..., attestation: _Optional[_Union[_attestation_pb2.ChildCompletionAttestation, _Mapping]] = ..., signerCertificate: _Optional[bytes] = ...) -> None: ...

class ChildWorkflowInstanceFailedEvent(_message.Message):
    __slots__ = ("taskScheduledId", "failureDetails", "attestation", "signerCertificate")
    TASKSCHEDULEDID_FIELD_NUMBER: _ClassVar[int]
    FAILUREDETAILS_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    SIGNERCERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    taskScheduledId: int
    failureDetails: _orchestration_pb2.TaskFailureDetails
    attestation: _attestation_pb2.ChildCompletionAttestation
    signerCertificate: bytes
    def __init__(self, taskScheduledId: _Optional[int] = ..., failureDetails: _Optional[_Union[_orchestration_pb2.TaskFailureDetails, _Mapping]] = ..., attestation: _Optional[_Union[_attestation_pb2.ChildCompletionAttestation, _Mapping]] = ..., signerCertificate: _Optional[bytes] = ...) -> None: ...

class DetachedWorkflowInstanceCreatedEvent(_message.Message):
    __slots__ = ("instanceId",)
    INSTANCEID_FIELD_NUMBER: _ClassVar[int]
    instanceId: str
    def __init__(self, instanceId: _Optional[str] = ...) -> None: ...

class TimerOriginCreateTimer(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TimerOriginExternalEvent(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class TimerOriginActivityRetry(_message.Message):
    __slots__ = ("taskExecutionId",)
    TASKEXECUTIONID_FIELD_NUMBER: _ClassVar[int]
    taskExecutionId: str
    def __init__(self, taskExecutionId: _Optional[str] = ...) -> None: ...

class TimerOriginChildWorkflowRetry(_message.Message):
    __slots__ = ("instanceId",)
    INSTANCEID_FIELD_NUMBER: _ClassVar[int]
    instanceId: str
    def __init__(self, instanceId: _Optional[str] = ...) -> None: ...

class TimerCreatedEvent(_message.Message):
    __slots__ = ("fireAt", "name", "rerunParentInstanceInfo", "createTimer", "externalEvent", "activityRetry", "childWorkflowRetry")
    FIREAT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RERUNPARENTINSTANCEINFO_FIELD_NUMBER: _ClassVar[int]
    CREATETIMER_FIELD_NUMBER: _ClassVar[int]
    EXTERNALEVENT_FIELD_NUMBER: _ClassVar[int]
    ACTIVITYRETRY_FIELD_NUMBER: _ClassVar[int]
    CHILDWORKFLOWRETRY_FIELD_NUMBER: _ClassVar[int]
    fireAt: _timestamp_pb2.Timestamp
    name: str
    rerunParentInstanceInfo: _orchestration_pb2.RerunParentInstanceInfo
    createTimer: TimerOriginCreateTimer
    externalEvent: TimerOriginExternalEvent
    activityRetry: TimerOriginActivityRetry
    childWorkflowRetry: TimerOriginChildWorkflowRetry
    def __init__(self, fireAt: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., name: _Optional[str] = ..., rerunParentInstanceInfo: _Optional[_Union[_orchestration_pb2.RerunParentInstanceInfo, _Mapping]] = ..., createTimer: _Optional[_Union[TimerOriginCreateTimer, _Mapping]] = ..., externalEvent: _Optional[_Union[TimerOriginExternalEvent, _Mapping]] = ..., activityRetry: _Optional[_Union[TimerOriginActivityRetry, _Mapping]] = ..., childWorkflowRetry: _Optional[_Union[TimerOriginChildWorkflowRetry, _Mapping]] = ...) -> None: ...

class TimerFiredEvent(_message.Message):
    __slots__ = ("fireAt", "timerId")
    FIREAT_FIELD_NUMBER: _ClassVar[int]
    TIMERID_FIELD_NUMBER: _ClassVar[int]
    fireAt: _timestamp_pb2.Timestamp
    timerId: int
    def __init__(self, fireAt: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., timerId: _Optional[int] = ...) -> None: ...

class WorkflowStartedEvent(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: _orchestration_pb2.WorkflowVersion
    def __init__(self, version: _Optional[_Union[_orchestration_pb2.WorkflowVersion, _Mapping]] = ...) -> None: ...

class WorkflowCompletedEvent(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EventSentEvent(_message.Message):
    __slots__ = ("instanceId", "name", "input")
    INSTANCEID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    instanceId: str
    name: str
    input: _wrappers_pb2.StringValue
    def __init__(self, instanceId: _Optional[str] = ..., name: _Optional[str] = ..., input: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ...) -> None: ...

class EventRaisedEvent(_message.Message):
    __slots__ = ("name", "input")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    input: _wrappers_pb2.StringValue
    def __init__(self, name: _Optional[str] = ..., input: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ...) -> None: ...

class ContinueAsNewEvent(_message.Message):
    __slots__ = ("input",)
    INPUT_FIELD_NUMBER: _ClassVar[int]
    input: _wrappers_pb2.StringValue
    def __init__(self, input: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ...) -> None: ...

class ExecutionSuspendedEvent(_message.Message):
    __slots__ = ("input",)
    INPUT_FIELD_NUMBER: _ClassVar[int]
    input: _wrappers_pb2.StringValue
    def __init__(self, input: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ...) -> None: ...

class ExecutionResumedEvent(_message.Message):
    __slots__ = ("input",)
    INPUT_FIELD_NUMBER: _ClassVar[int]
    input: _wrappers_pb2.StringValue
    def __init__(self, input: _Optional[_Union[_wrappers_pb2.StringValue, _Mapping]] = ...) -> None: ...

class ExecutionStalledEvent(_message.Message):
    __slots__ = ("reason", "description")
    REASON_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    reason: _orchestration_pb2.StalledReason
    description: str
    def __init__(self, reason: _Optional[_Union[_orchestration_pb2.StalledReason, str]] = ..., description: _Optional[str] = ...) -> None: ...

class HistoryEvent(_message.Message):
    __slots__ = ("eventId", "timestamp", "executionStarted", "executionCompleted", "executionTerminated", "taskScheduled", "taskCompleted", "taskFailed", "childWorkflowInstanceCreated", "childWorkflowInstanceCompleted", "childWorkflowInstanceFailed", "timerCreated", "timerFired", "workflowStarted", "workflowCompleted", "eventSent", "eventRaised", "continueAsNew", "executionSuspended", "executionResumed", "executionStalled", "detachedWorkflowInstanceCreated", "router")
    EVENTID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    EXECUTIONSTARTED_FIELD_NUMBER: _ClassVar[int]
    EXECUTIONCOMPLETED_FIELD_NUMBER: _ClassVar[int]
    EXECUTIONTERMINATED_FIELD_NUMBER: _ClassVar[int]
    TASKSCHEDULED_FIELD_NUMBER: _ClassVar[int]
    TASKCOMPLETED_FIELD_NUMBER: _ClassVar[int]
    TASKFAILED_FIELD_NUMBER: _ClassVar[int]
    CHILDWORKFLOWINSTANCECREATED_FIELD_NUMBER: _ClassVar[int]
    CHILDWORKFLOWINSTANCECOMPLETED_FIELD_NUMBER: _ClassVar[int]
    CHILDWORKFLOWINSTANCEFAILED_FIELD_NUMBER: _ClassVar[int]
    TIMERCREATED_FIELD_NUMBER: _ClassVar[int]
    TIMERFIRED_FIELD_NUMBER: _ClassVar[int]
    WORKFLOWSTARTED_FIELD_NUMBER: _ClassVar[int]
    WORKFLOWCOMPLETED_FIELD_NUMBER: _ClassVar[int]
    EVENTSENT_FIELD_NUMBER: _ClassVar[int]
    EVENTRAISED_FIELD_NUMBER: _ClassVar[int]
    CONTINUEASNEW_FIELD_NUMBER: _ClassVar[int]
    EXECUTIONSUSPENDED_FIELD_NUMBER: _ClassVar[int]
    EXECUTIONRESUMED_FIELD_NUMBER: _ClassVar[int]
    EXECUTIONSTALLED_FIELD_NUMBER: _ClassVar[int]
    DETACHEDWORKFLOWINSTANCECREATED_FIELD_NUMBER: _ClassVar[int]
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    eventId: int
    timestamp: _timestamp_pb2.Timestamp
    executionStarted: ExecutionStartedEvent
    executionCompleted: ExecutionCompletedEvent
    executionTerminated: ExecutionTerminatedEvent
    taskScheduled: TaskScheduledEvent
    taskCompleted: TaskCompletedEvent
    taskFailed: TaskFailedEvent
    childWorkflowInstanceCreated: ChildWorkflowInstanceCreatedEvent
    childWorkflowInstanceCompleted: ChildWorkflowInstanceCompletedEvent
    childWorkflowInstanceFailed: ChildWorkflowInstanceFailedEvent
    timerCreated: TimerCreatedEvent
    timerFired: TimerFiredEvent
    workflowStarted: WorkflowStartedEvent
    workflowCompleted: WorkflowCompletedEvent
    eventSent: EventSentEvent
    eventRaised: EventRaisedEvent
    continueAsNew: ContinueAsNewEvent
    executionSuspended: ExecutionSuspendedEvent
    executionResumed: ExecutionResumedEvent
    executionStalled: ExecutionStalledEvent
    detachedWorkflowInstanceCreated: DetachedWorkflowInstanceCreatedEvent
    router: _orchestration_pb2.TaskRouter
    def __init__(self, eventId: _Optional[int] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., executionStarted: _Optional[_Union[ExecutionStartedEvent, _Mapping]] = ..., executionCompleted: _Optional[_Union[ExecutionCompletedEvent, _Mapping]] = ..., executionTerminated: _Optional[_Union[ExecutionTerminatedEvent, _Mapping]] = ..., taskScheduled: _Optional[_Union[TaskScheduledEvent, _Mapping]] = ..., taskCompleted: _Optional[_Union[TaskCompletedEvent, _Mapping]] = ..., taskFailed: _Optional[_Union[TaskFailedEvent, _Mapping]] = ..., childWorkflowInstanceCreated: _Optional[_Union[ChildWorkflowInstanceCreatedEvent, _Mapping]] = ..., childWorkflowInstanceCompleted: _Optional[_Union[ChildWorkflowInstanceCompletedEvent, _Mapping]] = ..., childWorkflowInstanceFailed: _Optional[_Union[ChildWorkflowInstanceFailedEvent, _Mapping]] = ..., timerCreated: _Optional[_Union[TimerCreatedEvent, _Mapping]] = ..., timerFired: _Optional[_Union[TimerFiredEvent, _Mapping]] = ..., workflowStarted: _Optional[_Union[WorkflowStartedEvent, _Mapping]] = ..., workflowCompleted: _Optional[_Union[WorkflowCompletedEvent, _Mapping]] = ..., eventSent: _Optional[_Union[EventSentEvent, _Mapping]] = ..., eventRaised: _Optional[_Union[EventRaisedEvent, _Mapping]] = ..., continueAsNew: _Optional[_Union[ContinueAsNewEvent, _Mapping]] = ..., executionSuspended: _Optional[_Union[ExecutionSuspendedEvent, _Mapping]] = ..., executionResumed: _Optional[_Union[ExecutionResumedEvent, _Mapping]] = ..., executionStalled: _Optional[_Union[ExecutionStalledEvent, _Mapping]] = ..., detachedWorkflowInstanceCreated: _Optional[_Union[DetachedWorkflowInstanceCreatedEvent, _Mapping]] = ..., router: _Optional[_Union[_orchestration_pb2.TaskRouter, _Mapping]] = ...) -> None: ...

class PropagatedHistoryChunk(_message.Message):
    __slots__ = ("rawEvents", "appId", "instanceId", "workflowName", "rawSignatures", "signingCertChains")
    RAWEVENTS_FIELD_NUMBER: _ClassVar[int]
    APPID_FIELD_NUMBER: _ClassVar[int]
    INSTANCEID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOWNAME_FIELD_NUMBER: _ClassVar[int]
    RAWSIGNATURES_FIELD_NUMBER: _ClassVar[int]
    SIGNINGCERTCHAINS_FIELD_NUMBER: _ClassVar[int]
    rawEvents: _containers.RepeatedScalarFieldContainer[bytes]
    appId: str
    instanceId: str
    workflowName: str
    rawSignatures: _containers.RepeatedScalarFieldContainer[bytes]
    signingCertChains: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, rawEvents: _Optional[_Iterable[bytes]] = ..., appId: _Optional[str] = ..., instanceId: _Optional[str] = ..., workflowName: _Optional[str] = ..., rawSignatures: _Optional[_Iterable[bytes]] = ..., signingCertChains: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PropagatedHistory(_message.Message):
    __slots__ = ("scope", "chunks")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    scope: _orchestration_pb2.HistoryPropagationScope
    chunks: _containers.RepeatedCompositeFieldContainer[PropagatedHistoryChunk]
    def __init__(self, scope: _Optional[_Union[_orchestration_pb2.HistoryPropagationScope, str]] = ..., chunks: _Optional[_Iterable[_Union[PropagatedHistoryChunk, _Mapping]]] = ...) -> None: ...
