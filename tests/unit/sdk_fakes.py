"""In-process fake servers for the SDK's unit tests (a real grpc server on port 0)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc

from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as svc_grpc


@contextmanager
def serving(servicer: svc_grpc.ResourceAllocationServiceServicer) -> Iterator[str]:
    """Serve a (partial) fake servicer on a free loopback port; yields its address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    svc_grpc.add_ResourceAllocationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)
