"""The SDK's public surface: exported names, one client method per RPC, sync/async parity."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

import client_sdk
from client_sdk import AsyncLiveResourceClient, ClientConfig, LiveResourceClient, RetryPolicy
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc_pb2

RPC_NAMES = [
    method.name
    for method in svc_pb2.DESCRIPTOR.services_by_name["ResourceAllocationService"].methods
]


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_public_names_are_pinned() -> None:
    assert sorted(client_sdk.__all__) == [
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
        "RETRYABLE_CODES",
        "RETRYABLE_STREAM_CODES",
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
    for name in client_sdk.__all__:
        assert hasattr(client_sdk, name), name


def test_package_is_typed() -> None:
    assert (Path(client_sdk.__file__).parent / "py.typed").is_file()


def test_every_error_derives_from_the_root() -> None:
    for name in client_sdk.__all__:
        value = getattr(client_sdk, name)
        if name.endswith("Error") and name != "from_rpc_error":
            assert issubclass(value, client_sdk.LiveResourceError), name


@pytest.mark.parametrize("rpc", RPC_NAMES)
@pytest.mark.parametrize("client_class", [LiveResourceClient, AsyncLiveResourceClient])
def test_every_rpc_has_a_client_method(client_class: type, rpc: str) -> None:
    assert callable(getattr(client_class, snake_case(rpc), None))


@pytest.mark.parametrize(
    "name",
    [
        "register_room",
        "get_configuration_options",
        "configure_resources",
        "allocate",
        "list_coupons",
        "iter_coupons",
        "redeem_coupon",
        "release_coupon",
        "subscribe",
    ],
)
def test_sync_and_async_methods_take_the_same_arguments(name: str) -> None:
    sync = inspect.signature(getattr(LiveResourceClient, name))
    async_ = inspect.signature(getattr(AsyncLiveResourceClient, name))
    assert list(sync.parameters) == list(async_.parameters)
    assert [p.default for p in sync.parameters.values()] == [
        p.default for p in async_.parameters.values()
    ]


def test_async_methods_are_coroutines_except_the_iterators() -> None:
    for name in ("register_room", "allocate", "list_coupons", "redeem_coupon", "release_coupon"):
        assert inspect.iscoroutinefunction(getattr(AsyncLiveResourceClient, name)), name
    assert inspect.isasyncgenfunction(AsyncLiveResourceClient.iter_coupons)


def test_config_is_frozen_and_checks_the_token() -> None:
    config = ClientConfig(target="localhost:50051", token="t")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.target = "elsewhere"  # type: ignore[misc]
    with pytest.raises(ValueError, match="exactly one"):
        ClientConfig(target="localhost:50051")
    with pytest.raises(ValueError, match="exactly one"):
        ClientConfig(target="localhost:50051", token="t", token_provider=lambda: "t")
    with pytest.raises(TypeError):
        ClientConfig("localhost:50051", "t")  # type: ignore[call-arg]


def test_retry_policy_defaults_and_validation() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_backoff, policy.max_backoff, policy.multiplier) == (
        5,
        0.05,
        2.0,
        2.0,
    )
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(multiplier=0.5)
