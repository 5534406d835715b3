"""Domain errors to gRPC statuses with google.rpc details (AIP-193)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from server.domain import errors as e

DOMAIN = "liveresource.v1"
_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class RpcFailure:
    """A status to end a call with: code, message and the encoded google.rpc.Status."""

    code: grpc.StatusCode
    message: str
    details: bytes

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return ((_DETAILS_KEY, self.details),)


def _pack(*messages: object) -> list[any_pb2.Any]:
    packed = []
    for m in messages:
        a = any_pb2.Any()
        a.Pack(m)  # type: ignore[arg-type]
        packed.append(a)
    return packed


def _info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(
        reason=reason or "UNSPECIFIED", domain=DOMAIN, metadata=metadata
    )


def _details_for(exc: e.DomainError) -> tuple[grpc.StatusCode, list[object]]:
    if isinstance(exc, e.InvalidArgument):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in exc.violations
            ]
        )
        return grpc.StatusCode.INVALID_ARGUMENT, [bad, _info(exc.reason)]
    if isinstance(exc, e.NotFound):
        res = error_details_pb2.ResourceInfo(
            resource_type=exc.resource_type, resource_name=exc.name
        )
        return grpc.StatusCode.NOT_FOUND, [res, _info(exc.reason)]
    if isinstance(exc, e.AlreadyExists):
        res = error_details_pb2.ResourceInfo(
            resource_type=exc.resource_type, resource_name=exc.name
        )
        return grpc.StatusCode.ALREADY_EXISTS, [res, _info(exc.reason)]
    if isinstance(exc, e.FailedPrecondition):
        pf = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=v.type, subject=v.subject, description=v.description
                )
                for v in exc.violations
            ]
        )
        return grpc.StatusCode.FAILED_PRECONDITION, [pf, _info(exc.reason)]
    if isinstance(exc, e.VersionConflict):
        info = _info(
            exc.reason,
            pool_id=exc.pool_id,
            expected_version=str(exc.expected),
            current_version=str(exc.current),
        )
        return grpc.StatusCode.ABORTED, [info]
    if isinstance(exc, e.Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED, [_info(exc.reason)]
    if isinstance(exc, e.PermissionDenied):
        return grpc.StatusCode.PERMISSION_DENIED, [_info(exc.reason)]
    if isinstance(exc, e.Conflict):
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=50_000_000))
        return grpc.StatusCode.ABORTED, [retry, _info(exc.reason)]
    if isinstance(exc, e.Overloaded):
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=200_000_000))
        return grpc.StatusCode.RESOURCE_EXHAUSTED, [retry, _info(exc.reason)]
    if isinstance(exc, e.Unavailable):
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1))
        return grpc.StatusCode.UNAVAILABLE, [retry, _info(exc.reason)]
    return grpc.StatusCode.INTERNAL, [_info("INTERNAL")]


def failure_for(exc: e.DomainError) -> RpcFailure:
    """The status a domain error ends its call with."""
    code, details = _details_for(exc)
    return _encode(code, exc.message, details)


def internal_failure() -> tuple[RpcFailure, str]:
    """An INTERNAL status that names a log reference, never a traceback."""
    ref = uuid.uuid4().hex[:12]
    return _encode(
        grpc.StatusCode.INTERNAL,
        f"internal error (reference {ref})",
        [_info("INTERNAL", reference=ref)],
    ), ref


def _encode(code: grpc.StatusCode, message: str, details: list[object]) -> RpcFailure:
    status = status_pb2.Status(
        code=getattr(code_pb2, code.name), message=message, details=_pack(*details)
    )
    return RpcFailure(code, message, status.SerializeToString())
