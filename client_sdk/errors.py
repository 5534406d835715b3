"""Exceptions raised by the SDK, one class per gRPC status family.

::

    LiveResourceError                    any non-OK status
    ├── InvalidArgumentError             INVALID_ARGUMENT (field_violations)
    ├── UnauthenticatedError             UNAUTHENTICATED
    ├── PermissionDeniedError            PERMISSION_DENIED
    ├── NotFoundError                    NOT_FOUND
    ├── AlreadyExistsError               ALREADY_EXISTS
    ├── FailedPreconditionError          FAILED_PRECONDITION (precondition_violations)
    ├── ConflictError                    ABORTED (re-read, then retry)
    ├── ResourceExhaustedError           RESOURCE_EXHAUSTED (retry_delay)
    ├── UnavailableError                 UNAVAILABLE (retry_delay)
    ├── DeadlineExceededError            DEADLINE_EXCEEDED
    └── ServerError                      INTERNAL, UNKNOWN, DATA_LOSS and every other code
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, NamedTuple

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

# DEADLINE_EXCEEDED is retried only because every RPC of this API is idempotent (writes carry a
# request_id, RedeemCoupon/ReleaseCoupon are keyed on order_id): the first attempt may have been
# applied. A non-idempotent RPC must not be retried on it.
RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)

# A subscription only reads, so anything transient is worth a reconnect. CANCELLED counts only
# when the SDK did not cancel the call itself (a proxy or the server did).
RETRYABLE_STREAM_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)

_STATUS_DETAILS_KEY = "grpc-status-details-bin"

_DETAIL_TYPES: dict[str, type[Message]] = {
    detail_type.DESCRIPTOR.full_name: detail_type
    for detail_type in (
        error_details_pb2.BadRequest,
        error_details_pb2.PreconditionFailure,
        error_details_pb2.ErrorInfo,
        error_details_pb2.RetryInfo,
        error_details_pb2.QuotaFailure,
        error_details_pb2.ResourceInfo,
        error_details_pb2.RequestInfo,
        error_details_pb2.DebugInfo,
        error_details_pb2.Help,
        error_details_pb2.LocalizedMessage,
    )
}


class FieldViolation(NamedTuple):
    """One offending request field, from a google.rpc.BadRequest."""

    field: str
    description: str


class PreconditionViolation(NamedTuple):
    """One unmet precondition, from a google.rpc.PreconditionFailure."""

    type: str
    subject: str
    description: str


class LiveResourceError(Exception):
    """A call ended with a non-OK status; the root of every error the SDK raises for a call."""

    default_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    """The code of an error built without one (a subclass sets its own)."""
    code: grpc.StatusCode
    """The gRPC status code."""
    message: str
    """The status message."""
    details: list[Message]
    """The google.rpc detail messages, unpacked (an unknown type stays a google.protobuf.Any)."""
    field_violations: list[FieldViolation]
    """Every field violation of the BadRequest details."""
    precondition_violations: list[PreconditionViolation]
    """Every violation of the PreconditionFailure details."""
    reason: str
    """The ErrorInfo reason (for example ``REQUEST_ID_REUSED``), or "" without ErrorInfo."""
    domain: str
    """The ErrorInfo domain, or "" without ErrorInfo."""
    retry_delay: float | None
    """Seconds the server asks the client to wait (RetryInfo), or None."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: Iterable[Message] = (),
    ) -> None:
        super().__init__(message)
        self.code = self.default_code if code is None else code
        self.message = message
        self.details = list(details)
        self.field_violations = []
        self.precondition_violations = []
        self.reason = ""
        self.domain = ""
        self.retry_delay = None
        for detail in self.details:
            self._absorb(detail)

    def _absorb(self, detail: Message) -> None:
        if isinstance(detail, error_details_pb2.BadRequest):
            self.field_violations.extend(
                FieldViolation(v.field, v.description) for v in detail.field_violations
            )
        elif isinstance(detail, error_details_pb2.PreconditionFailure):
            self.precondition_violations.extend(
                PreconditionViolation(v.type, v.subject, v.description) for v in detail.violations
            )
        elif isinstance(detail, error_details_pb2.ErrorInfo):
            self.reason = detail.reason
            self.domain = detail.domain
        elif isinstance(detail, error_details_pb2.RetryInfo):
            self.retry_delay = detail.retry_delay.ToTimedelta().total_seconds()

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.reason:
            text += f" [{self.reason}]"
        if self.field_violations:
            text += " (" + "; ".join(f"{f}: {d}" for f, d in self.field_violations) + ")"
        if self.precondition_violations:
            text += " (" + "; ".join(f"{t} {s}: {d}" for t, s, d in self.precondition_violations)
            text += ")"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.name}, message={self.message!r})"


class InvalidArgumentError(LiveResourceError):
    """INVALID_ARGUMENT: the request was rejected; see ``field_violations`` and ``reason``."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class UnauthenticatedError(LiveResourceError):
    """UNAUTHENTICATED: the token is missing, malformed, expired or signed with another key."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(LiveResourceError):
    """PERMISSION_DENIED: the token's role or subject may not make this call."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class NotFoundError(LiveResourceError):
    """NOT_FOUND: the room, pool, coupon or redemption does not exist."""

    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(LiveResourceError):
    """ALREADY_EXISTS: the id is taken by an earlier, different request."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(LiveResourceError):
    """FAILED_PRECONDITION: see ``precondition_violations``."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class ConflictError(LiveResourceError):
    """ABORTED: a concurrent change won (``VERSION_CONFLICT``); re-read and retry."""

    default_code = grpc.StatusCode.ABORTED


class ResourceExhaustedError(LiveResourceError):
    """RESOURCE_EXHAUSTED: rate limited; ``retry_delay`` says how long to wait."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(LiveResourceError):
    """UNAVAILABLE: the server is unreachable or shutting down; retrying is safe."""

    default_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(LiveResourceError):
    """DEADLINE_EXCEEDED: no answer in time; the call may or may not have been applied."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class ServerError(LiveResourceError):
    """INTERNAL, UNKNOWN, DATA_LOSS or any other unexpected status."""

    default_code = grpc.StatusCode.INTERNAL


_ERROR_CLASSES: dict[grpc.StatusCode, type[LiveResourceError]] = {
    cls.default_code: cls
    for cls in (
        InvalidArgumentError,
        UnauthenticatedError,
        PermissionDeniedError,
        NotFoundError,
        AlreadyExistsError,
        FailedPreconditionError,
        ConflictError,
        ResourceExhaustedError,
        UnavailableError,
        DeadlineExceededError,
    )
}


def from_rpc_error(exc: grpc.RpcError) -> LiveResourceError:
    """Return the most specific LiveResourceError for a failed sync or asyncio call.

    Use it as ``raise from_rpc_error(exc) from exc``. Works on ``grpc.RpcError`` raised by the sync
    API and on ``grpc.aio.AioRpcError``; the rich details come from the
    ``grpc-status-details-bin`` trailer.
    """
    code = _call_attr(exc, "code") or grpc.StatusCode.UNKNOWN
    message = _call_attr(exc, "details") or ""
    details = _unpack_details(_call_attr(exc, "trailing_metadata") or ())
    return _ERROR_CLASSES.get(code, ServerError)(str(message), code=code, details=details)


def _call_attr(exc: grpc.RpcError, name: str) -> Any:
    # A bare grpc.RpcError (raised by an interceptor, say) is not a grpc.Call and has none of these.
    getter = getattr(exc, name, None)
    return getter() if callable(getter) else None


def _unpack_details(trailing_metadata: Sequence[tuple[str, str | bytes]]) -> list[Message]:
    for key, value in trailing_metadata:
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except DecodeError:
                return []
            return [_unpack(packed) for packed in status.details]
    return []


def _unpack(packed: any_pb2.Any) -> Message:
    detail_type = _DETAIL_TYPES.get(packed.TypeName())
    if detail_type is None:
        return packed
    detail = detail_type()
    packed.Unpack(detail)
    return detail
