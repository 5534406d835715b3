"""Python client SDK of liveresource.v1.ResourceAllocationService: clients, errors, tokens."""

from generated.liveresource.v1 import events_pb2, resource_allocation_service_pb2, resources_pb2

from .aio import AsyncLiveResourceClient
from .config import ClientConfig, RetryPolicy
from .errors import (
    RETRYABLE_CODES,
    RETRYABLE_STREAM_CODES,
    AlreadyExistsError,
    ConflictError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    LiveResourceError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionViolation,
    ResourceExhaustedError,
    ServerError,
    UnauthenticatedError,
    UnavailableError,
    from_rpc_error,
)
from .subscription import RoomSubscription
from .sync import LiveResourceClient
from .sync_subscription import SyncRoomSubscription
from .tokens import Role, load_key, mint_token

__all__ = [
    "RETRYABLE_CODES",
    "RETRYABLE_STREAM_CODES",
    "AlreadyExistsError",
    "AsyncLiveResourceClient",
    "ClientConfig",
    "ConflictError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InvalidArgumentError",
    "LiveResourceClient",
    "LiveResourceError",
    "NotFoundError",
    "PermissionDeniedError",
    "PreconditionViolation",
    "ResourceExhaustedError",
    "RetryPolicy",
    "Role",
    "RoomSubscription",
    "ServerError",
    "SyncRoomSubscription",
    "UnauthenticatedError",
    "UnavailableError",
    "events_pb2",
    "from_rpc_error",
    "load_key",
    "mint_token",
    "resource_allocation_service_pb2",
    "resources_pb2",
]
