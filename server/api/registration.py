"""How the services' methods are added to the gRPC server: the stampede's method registered,
every other one found by name.

grpcio's server keeps one pending "next call" request per registered method, plus one for
all the methods it finds by name (the generic handlers), and waits on all of them with
`asyncio.wait` before each call it accepts: that wait's cost grows with the number of
registered methods, and every call of every method pays it. Registering all of them (as
grpcio's generated `add_*_to_server` functions do: 13 of ours, 3 of health, 1 of
reflection) meant 18 pending requests for each accepted call. Measured on the bench (4
alternating rounds, uvloop): registering only `Allocate` cut the server's CPU per call by
~68 µs in `hot` (a grab and its retry are two calls) and ~56 µs for a sold-out answer; a
health `Check`, now found by name, costs ~7 µs less than before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

REGISTERED = frozenset({"Allocate"})
"""Methods of our service grpcio matches in its core (no lookup by name, but one more
pending request per accepted call): only the one a stampede calls."""


class _ByNameOnly:
    """A server as a generated `add_*_to_server` function sees it: its generic handler is
    added, its method registrations are not (the methods are still served, by name)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        """Not registered: see the module's docstring."""


def add_services(
    server: grpc.aio.Server,
    service_name: str,
    handlers: dict[str, grpc.RpcMethodHandler],
    health_servicer: health.aio.HealthServicer,
) -> None:
    """Our service (`REGISTERED` methods registered, all found by name), the standard health
    service and server reflection (both found by name)."""
    server.add_registered_method_handlers(
        service_name, {name: h for name, h in handlers.items() if name in REGISTERED}
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, handlers),))
    by_name: Any = _ByNameOnly(server)  # what the generated functions call, nothing more
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, by_name)
    # `reflection.enable_server_reflection`, for an asyncio server: given the stand-in, it
    # would pick the servicer of the threaded server.
    names = (
        service_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(names), by_name
    )
