"""Which methods grpcio registers (only the stampede's) and that every method of every
service is still found by name."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import grpc
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as reflection_v1alpha

from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from server.api.registration import REGISTERED, add_services
from server.api.servicer import SERVICE_NAME


class CallDetails(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


class RecordingServer:
    """What `add_services` does to a server, written down."""

    def __init__(self) -> None:
        self.registered: dict[str, set[str]] = {}
        self.generic: list[grpc.GenericRpcHandler] = []

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self.registered.setdefault(service, set()).update(handlers)

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.generic.extend(handlers)

    def found_by_name(self, method: str) -> bool:
        return any(h.service(CallDetails(method)) is not None for h in self.generic)


def full_names(service: object) -> list[str]:
    return [f"/{service.full_name}/{m.name}" for m in service.methods]  # type: ignore[attr-defined]


def test_only_allocate_is_registered_and_every_method_is_found_by_name() -> None:
    ours = svc.DESCRIPTOR.services_by_name["ResourceAllocationService"]
    handlers = {
        m.name: grpc.unary_unary_rpc_method_handler(lambda request, context: None)
        for m in ours.methods
    }
    server = RecordingServer()
    add_services(server, SERVICE_NAME, handlers, health.aio.HealthServicer())  # type: ignore[arg-type]

    assert server.registered == {SERVICE_NAME: {"Allocate"}}
    assert set(REGISTERED) == {"Allocate"}
    methods = [
        *full_names(ours),
        *full_names(health_pb2.DESCRIPTOR.services_by_name["Health"]),
        *full_names(reflection_v1alpha.DESCRIPTOR.services_by_name["ServerReflection"]),
    ]
    assert "/grpc.health.v1.Health/Check" in methods and len(methods) > len(handlers) + 3
    missing = [m for m in methods if not server.found_by_name(m)]
    assert missing == []
    # The reflection servicer is the asyncio one (its methods are coroutines).
    (handler,) = [
        h.service(CallDetails(f"/{reflection.SERVICE_NAME}/ServerReflectionInfo"))
        for h in server.generic
        if h.service(CallDetails(f"/{reflection.SERVICE_NAME}/ServerReflectionInfo"))
    ]
    assert inspect.isasyncgenfunction(handler.stream_stream) or inspect.iscoroutinefunction(
        handler.stream_stream
    )
    assert not server.found_by_name(f"/{SERVICE_NAME}/NoSuchMethod")
