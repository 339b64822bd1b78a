"""The error tree. Domain and store code raise these; service/status.py maps
each class to exactly one gRPC status code at the boundary.

    SidecarError
    ├── InvalidArgument        bad input from a client or worker  -> INVALID_ARGUMENT
    │   └── PayloadTooLarge    a payload over --max-payload-bytes  -> INVALID_ARGUMENT
    ├── NotFound               unknown instance / work item       -> NOT_FOUND
    ├── AlreadyExists          duplicate instance ID              -> ALREADY_EXISTS
    ├── FailedPrecondition     valid request, wrong state         -> FAILED_PRECONDITION
    ├── Unimplemented          a request form we do not support   -> UNIMPLEMENTED
    ├── Unavailable            store unreachable / shutting down  -> UNAVAILABLE
    ├── Unauthenticated        no or wrong credentials            -> UNAUTHENTICATED
    ├── PermissionDenied       credentials of an app not allowed  -> PERMISSION_DENIED
    ├── ResourceExhausted      a server-wide bound is reached     -> RESOURCE_EXHAUSTED
    ├── LeaseLost              a work item's lease moved on (internal; never reaches a client)
    └── ConfigError            the server's configuration is unusable (start-up only)
"""

from __future__ import annotations


class SidecarError(Exception):
    """Base of every error this server raises on purpose."""


class InvalidArgument(SidecarError):
    pass


class PayloadTooLarge(InvalidArgument):
    pass


class NotFound(SidecarError):
    pass


class AlreadyExists(SidecarError):
    pass


class FailedPrecondition(SidecarError):
    pass


class Unimplemented(SidecarError):
    pass


class Unavailable(SidecarError):
    pass


class Unauthenticated(SidecarError):
    pass


class PermissionDenied(SidecarError):
    pass


class ResourceExhausted(SidecarError):
    pass


class ConfigError(SidecarError):
    """Raised while the configuration is read; the server refuses to start."""


class LeaseLost(SidecarError):
    """The store no longer holds this owner's lease: another owner may run the item."""
