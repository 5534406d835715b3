"""Unary retries of both SDK clients against an in-process fake server: backoff, request ids."""

from __future__ import annotations

import inspect
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from client_sdk import (
    AsyncLiveResourceClient,
    ClientConfig,
    InvalidArgumentError,
    LiveResourceClient,
    ResourceExhaustedError,
    RetryPolicy,
    UnavailableError,
    resources_pb2,
)
from client_sdk._retry import Retrier, backoff_delay
from client_sdk.errors import RETRYABLE_CODES
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc_pb2
from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as svc_grpc
from tests.unit.sdk_fakes import serving

FAST = RetryPolicy(max_attempts=5, initial_backoff=0.001, max_backoff=0.005)
SERVICE = svc_pb2.DESCRIPTOR.services_by_name["ResourceAllocationService"]


class FlakyServicer(svc_grpc.ResourceAllocationServiceServicer):
    """Fails the first ``failures`` unary calls with ``status``, then answers an empty response."""

    def __init__(self, failures: int, status: status_pb2.Status) -> None:
        self.failures = failures
        self.status = status
        self.requests: list[Any] = []
        self.authorizations: list[str] = []
        self._lock = threading.Lock()

    def _answer(self, method: str, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self.requests.append(request)
            self.authorizations.append(dict(context.invocation_metadata())["authorization"])
            failing = len(self.requests) <= self.failures
        if failing:
            context.abort_with_status(rpc_status.to_status(self.status))
        return getattr(svc_pb2, SERVICE.methods_by_name[method].output_type.name)()

    def RegisterRoom(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._answer("RegisterRoom", request, context)

    def ConfigureResources(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._answer("ConfigureResources", request, context)

    def Allocate(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._answer("Allocate", request, context)

    def RedeemCoupon(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._answer("RedeemCoupon", request, context)

    def ListCoupons(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._answer("ListCoupons", request, context)


def rich_status(code: grpc.StatusCode, message: str, *details: Any) -> status_pb2.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return status


UNAVAILABLE = rich_status(grpc.StatusCode.UNAVAILABLE, "try again")


@pytest.fixture(params=["sync", "async"])
async def make_client(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Any]]:
    """Builds the sync or the async client; either way, `await call(...)` runs a method."""
    clients: list[Any] = []

    def make(target: str, **config: Any) -> Any:
        config.setdefault("token", "test-token")
        config.setdefault("retry", FAST)
        kind = LiveResourceClient if request.param == "sync" else AsyncLiveResourceClient
        clients.append(kind(ClientConfig(target=target, **config)))
        return clients[-1]

    yield make
    for client in clients:
        closing = client.close()
        if inspect.isawaitable(closing):
            await closing


async def call(client: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    result = getattr(client, method)(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


WRITES: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("register_room", (resources_pb2.Room(room_id="r1"),), {}),
    ("configure_resources", ("r1",), {"stop_pool": svc_pb2.StopPool(pool_id="p1")}),
    ("allocate", ("p1",), {}),
]


@pytest.mark.parametrize(("method", "args", "kwargs"), WRITES, ids=[w[0] for w in WRITES])
async def test_write_retries_reuse_one_generated_request_id(
    make_client: Callable[..., Any], method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    servicer = FlakyServicer(failures=2, status=UNAVAILABLE)
    with serving(servicer) as target:
        await call(make_client(target), method, *args, **kwargs)
    request_ids = {request.request_id for request in servicer.requests}
    assert len(servicer.requests) == 3
    assert len(request_ids) == 1
    assert uuid.UUID(request_ids.pop()).version == 4


async def test_caller_request_id_is_sent_on_every_attempt(make_client: Callable[..., Any]) -> None:
    servicer = FlakyServicer(failures=1, status=UNAVAILABLE)
    with serving(servicer) as target:
        await call(make_client(target), "allocate", "p1", request_id="tap-1")
    assert [r.request_id for r in servicer.requests] == ["tap-1", "tap-1"]


async def test_each_call_gets_its_own_request_id(make_client: Callable[..., Any]) -> None:
    servicer = FlakyServicer(failures=0, status=UNAVAILABLE)
    with serving(servicer) as target:
        client = make_client(target)
        await call(client, "allocate", "p1")
        await call(client, "allocate", "p1")
    assert servicer.requests[0].request_id != servicer.requests[1].request_id


async def test_gives_up_after_max_attempts(make_client: Callable[..., Any]) -> None:
    servicer = FlakyServicer(failures=100, status=UNAVAILABLE)
    with serving(servicer) as target, pytest.raises(UnavailableError) as caught:
        await call(make_client(target), "allocate", "p1")
    assert len(servicer.requests) == FAST.max_attempts
    assert caught.value.message == "try again"
    assert isinstance(caught.value.__cause__, grpc.RpcError)


async def test_non_retryable_error_is_raised_at_once(make_client: Callable[..., Any]) -> None:
    status = rich_status(
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad pool",
        error_details_pb2.BadRequest(
            field_violations=[{"field": "pool_id", "description": "must not be empty"}]
        ),
    )
    servicer = FlakyServicer(failures=100, status=status)
    with serving(servicer) as target, pytest.raises(InvalidArgumentError) as caught:
        await call(make_client(target), "allocate", "")
    assert len(servicer.requests) == 1
    assert caught.value.field_violations == [("pool_id", "must not be empty")]


async def test_server_retry_delay_is_honoured(make_client: Callable[..., Any]) -> None:
    status = rich_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "slow down",
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=200_000_000)),
    )
    servicer = FlakyServicer(failures=1, status=status)
    with serving(servicer) as target:
        client = make_client(target)
        started = time.monotonic()
        await call(client, "list_coupons")
        assert time.monotonic() - started >= 0.2
    assert len(servicer.requests) == 2


async def test_retry_delay_beyond_the_deadline_raises(make_client: Callable[..., Any]) -> None:
    status = rich_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "slow down",
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=30)),
    )
    servicer = FlakyServicer(failures=1, status=status)
    with serving(servicer) as target, pytest.raises(ResourceExhaustedError) as caught:
        await call(make_client(target, timeout=1.0), "list_coupons")
    assert caught.value.retry_delay == 30.0
    assert len(servicer.requests) == 1


async def test_token_provider_is_asked_on_every_attempt(make_client: Callable[..., Any]) -> None:
    tokens = iter(["t1", "t2", "t3"])
    servicer = FlakyServicer(failures=2, status=UNAVAILABLE)
    with serving(servicer) as target:
        client = make_client(target, token=None, token_provider=lambda: next(tokens))
        await call(client, "allocate", "p1")
    assert servicer.authorizations == ["Bearer t1", "Bearer t2", "Bearer t3"]


async def test_metadata_authorization_overrides_the_token(make_client: Callable[..., Any]) -> None:
    servicer = FlakyServicer(failures=0, status=UNAVAILABLE)
    with serving(servicer) as target:
        client = make_client(target)
        await call(client, "allocate", "p1", metadata=[("authorization", "Bearer other")])
        await call(client, "allocate", "p1")
    assert servicer.authorizations == ["Bearer other", "Bearer test-token"]


async def test_redeem_coupon_retries_on_unavailable(make_client: Callable[..., Any]) -> None:
    servicer = FlakyServicer(failures=1, status=UNAVAILABLE)
    line = resources_pb2.OrderLine(goods_id="g", shop_id="s", unit_price_minor=100, quantity=1)
    with serving(servicer) as target:
        await call(make_client(target), "redeem_coupon", "o1", "CODE", "v1", "CNY", [line])
    assert [r.order_id for r in servicer.requests] == ["o1", "o1"]
    assert list(servicer.requests[0].lines) == [line]


def test_configure_resources_needs_exactly_one_operation() -> None:
    client = LiveResourceClient(ClientConfig(target="127.0.0.1:1", token="t"))
    with client, pytest.raises(ValueError, match="exactly one"):
        client.configure_resources("r1", stop_pool=svc_pb2.StopPool(), add_stock=svc_pb2.AddStock())


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0)
    ceilings = [backoff_delay(policy, n, lambda: 0.999999) for n in range(1, 7)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0], rel=1e-3)
    assert backoff_delay(policy, 3, lambda: 0.0) == 0.0


def test_retrier_stops_at_max_attempts_and_ignores_other_codes() -> None:
    error = UnavailableError("down", code=grpc.StatusCode.UNAVAILABLE)
    retrier = Retrier(RetryPolicy(max_attempts=3), RETRYABLE_CODES, rand=lambda: 0.5)
    assert retrier.next_delay(error) == pytest.approx(0.025)
    assert retrier.next_delay(error) == pytest.approx(0.05)
    assert retrier.next_delay(error) is None
    invalid = InvalidArgumentError("no", code=grpc.StatusCode.INVALID_ARGUMENT)
    assert Retrier(RetryPolicy(), RETRYABLE_CODES).next_delay(invalid) is None


def test_retrier_keeps_attempts_within_the_deadline() -> None:
    now = [100.0]
    retrier = Retrier(RetryPolicy(), RETRYABLE_CODES, timeout=1.0, clock=lambda: now[0])
    assert retrier.attempt_timeout() == pytest.approx(1.0)
    now[0] = 100.75
    assert retrier.attempt_timeout() == pytest.approx(0.25)
    slow = ResourceExhaustedError("slow", code=grpc.StatusCode.RESOURCE_EXHAUSTED)
    slow.retry_delay = 0.5
    assert retrier.next_delay(slow) is None
