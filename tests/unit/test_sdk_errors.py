"""Mapping of gRPC statuses and google.rpc details to the SDK's exceptions, over a real channel."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from client_sdk import (
    RETRYABLE_CODES,
    RETRYABLE_STREAM_CODES,
    AlreadyExistsError,
    AsyncLiveResourceClient,
    ClientConfig,
    ConflictError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    LiveResourceClient,
    LiveResourceError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    RetryPolicy,
    ServerError,
    UnauthenticatedError,
    UnavailableError,
    from_rpc_error,
    resources_pb2,
)
from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as svc_grpc
from tests.unit.sdk_fakes import serving

NO_RETRY = RetryPolicy(max_attempts=1)


class FailingServicer(svc_grpc.ResourceAllocationServiceServicer):
    """Ends every GetConfigurationOptions call with ``status``."""

    status = status_pb2.Status()

    def GetConfigurationOptions(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort_with_status(rpc_status.to_status(self.status))


@pytest.fixture(scope="module")
def servicer() -> FailingServicer:
    return FailingServicer()


@pytest.fixture(scope="module")
def target(servicer: FailingServicer) -> Iterator[str]:
    with serving(servicer) as address:
        yield address


@pytest.fixture(params=["sync", "async"])
async def fail_with(
    request: pytest.FixtureRequest, servicer: FailingServicer, target: str
) -> AsyncIterator[Callable[..., Any]]:
    """Makes the server fail with the given status, calls it and returns what was raised."""
    config = ClientConfig(target=target, token="t", retry=NO_RETRY)
    client: Any = (LiveResourceClient if request.param == "sync" else AsyncLiveResourceClient)(
        config
    )

    async def fail_with(code: grpc.StatusCode, message: str, *details: Any) -> LiveResourceError:
        servicer.status = status_pb2.Status(code=code.value[0], message=message)
        for detail in details:
            servicer.status.details.add().Pack(detail)
        with pytest.raises(LiveResourceError) as caught:
            result = client.get_configuration_options("r1")
            if inspect.isawaitable(result):
                await result
        assert isinstance(caught.value.__cause__, grpc.RpcError)
        return caught.value

    yield fail_with
    closing = client.close()
    if inspect.isawaitable(closing):
        await closing


EXPECTED_CLASSES = [
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
    (grpc.StatusCode.UNAUTHENTICATED, UnauthenticatedError),
    (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
    (grpc.StatusCode.NOT_FOUND, NotFoundError),
    (grpc.StatusCode.ALREADY_EXISTS, AlreadyExistsError),
    (grpc.StatusCode.FAILED_PRECONDITION, FailedPreconditionError),
    (grpc.StatusCode.ABORTED, ConflictError),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
    (grpc.StatusCode.UNAVAILABLE, UnavailableError),
    (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
    (grpc.StatusCode.INTERNAL, ServerError),
    (grpc.StatusCode.UNKNOWN, ServerError),
    (grpc.StatusCode.DATA_LOSS, ServerError),
    (grpc.StatusCode.UNIMPLEMENTED, ServerError),
]


@pytest.mark.parametrize(("code", "error_class"), EXPECTED_CLASSES, ids=lambda v: str(v))
async def test_each_status_maps_to_its_class(
    fail_with: Callable[..., Any], code: grpc.StatusCode, error_class: type[LiveResourceError]
) -> None:
    error = await fail_with(code, "it failed")
    assert type(error) is error_class
    assert error.code is code
    assert error.message == "it failed"
    assert error.details == []
    assert error.retry_delay is None
    assert error.reason == ""


async def test_bad_request_becomes_field_violations(fail_with: Callable[..., Any]) -> None:
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            {"field": "create_pool.title", "description": "must not be empty"},
            {"field": "create_pool.total_quantity", "description": "must be 1-10000"},
        ]
    )
    reused = error_details_pb2.ErrorInfo(reason="REQUEST_ID_REUSED", domain="liveresource")
    error = await fail_with(grpc.StatusCode.INVALID_ARGUMENT, "invalid", bad_request, reused)
    assert isinstance(error, InvalidArgumentError)
    assert error.field_violations == [
        ("create_pool.title", "must not be empty"),
        ("create_pool.total_quantity", "must be 1-10000"),
    ]
    assert error.field_violations[0].field == "create_pool.title"
    assert (error.reason, error.domain) == ("REQUEST_ID_REUSED", "liveresource")
    assert error.details == [bad_request, reused]
    assert "REQUEST_ID_REUSED" in str(error)
    assert "create_pool.title: must not be empty" in str(error)


async def test_precondition_failure_becomes_violations(fail_with: Callable[..., Any]) -> None:
    failure = error_details_pb2.PreconditionFailure(
        violations=[
            {"type": "MIN_SPEND", "subject": "coupon/c1", "description": "subtotal below 5000"}
        ]
    )
    error = await fail_with(grpc.StatusCode.FAILED_PRECONDITION, "cannot redeem", failure)
    assert isinstance(error, FailedPreconditionError)
    assert error.precondition_violations == [("MIN_SPEND", "coupon/c1", "subtotal below 5000")]
    assert error.precondition_violations[0].type == "MIN_SPEND"


async def test_version_conflict_is_a_conflict_error(fail_with: Callable[..., Any]) -> None:
    info = error_details_pb2.ErrorInfo(reason="VERSION_CONFLICT", domain="liveresource")
    error = await fail_with(grpc.StatusCode.ABORTED, "pool changed", info)
    assert isinstance(error, ConflictError)
    assert error.reason == "VERSION_CONFLICT"


async def test_retry_info_becomes_retry_delay(fail_with: Callable[..., Any]) -> None:
    retry_info = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000)
    )
    error = await fail_with(grpc.StatusCode.UNAVAILABLE, "draining", retry_info)
    assert isinstance(error, UnavailableError)
    assert error.retry_delay == 1.5


async def test_unknown_detail_types_are_kept_packed(fail_with: Callable[..., Any]) -> None:
    error = await fail_with(grpc.StatusCode.INTERNAL, "oops", resources_pb2.Room(room_id="r1"))
    [detail] = error.details
    assert isinstance(detail, any_pb2.Any)
    assert detail.Is(resources_pb2.Room.DESCRIPTOR)


def test_errors_built_by_hand_carry_their_class_code() -> None:
    assert NotFoundError("no room").code is grpc.StatusCode.NOT_FOUND
    assert ConflictError("stale").code is grpc.StatusCode.ABORTED
    assert LiveResourceError("?").code is grpc.StatusCode.UNKNOWN
    assert str(InvalidArgumentError("bad")) == "INVALID_ARGUMENT: bad"


def test_a_bare_rpc_error_maps_to_server_error() -> None:
    error = from_rpc_error(grpc.RpcError())
    assert type(error) is ServerError
    assert error.code is grpc.StatusCode.UNKNOWN


def test_retryable_code_sets() -> None:
    assert {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    } == RETRYABLE_CODES
    assert RETRYABLE_CODES <= RETRYABLE_STREAM_CODES
    for fatal in (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INVALID_ARGUMENT,
    ):
        assert fatal not in RETRYABLE_STREAM_CODES
