"""Opens the sync or asyncio channel a ClientConfig describes."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import grpc

from .config import ClientConfig


def open_channel(grpc_api: ModuleType, config: ClientConfig) -> Any:
    """Open a channel with ``grpc`` or ``grpc.aio``, whose channel factories share signatures."""
    options = list(config.channel_options)
    if config.secure:
        credentials = grpc.ssl_channel_credentials()
        return grpc_api.secure_channel(config.target, credentials, options=options)
    return grpc_api.insecure_channel(config.target, options=options)
