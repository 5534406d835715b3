"""Immutable settings of a client: where to connect, how to authenticate, how to retry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter between attempts of one call.

    The wait before retry ``n`` (1-based) is uniform in
    ``[0, min(max_backoff, initial_backoff * multiplier ** (n - 1))]``; when the server sends a
    google.rpc.RetryInfo with a longer delay, that delay is waited instead.
    """

    max_attempts: int = 5
    """Attempts in total, the first included; 1 disables retries."""
    initial_backoff: float = 0.05
    """Upper bound in seconds of the wait before the first retry."""
    max_backoff: float = 2.0
    """Cap in seconds of the upper bound of any wait (a server RetryInfo may exceed it)."""
    multiplier: float = 2.0
    """Growth factor of the upper bound from one retry to the next."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoffs must not be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")


# Subscriptions live for hours: they get more, longer reconnect attempts than a unary call, and
# the count restarts whenever a message arrives.
DEFAULT_STREAM_RETRY = RetryPolicy(max_attempts=10, initial_backoff=0.1, max_backoff=5.0)


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Everything a client needs to reach and call the service."""

    target: str
    """The gRPC target, for example ``"localhost:50051"``."""
    token: str | None = None
    """A JWT sent as ``authorization: Bearer <token>``; exactly one of token and token_provider."""
    token_provider: Callable[[], str] | None = None
    """Called before every attempt to get a fresh JWT (for tokens that expire)."""
    timeout: float | None = 10.0
    """Default deadline in seconds of a unary call, retries included; None means no deadline."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """How unary calls are retried on RETRYABLE_CODES."""
    stream_retry: RetryPolicy = DEFAULT_STREAM_RETRY
    """How subscriptions reconnect on RETRYABLE_STREAM_CODES; attempts count since last message."""
    channel_options: Sequence[tuple[str, Any]] = ()
    """Extra gRPC channel arguments, for example ``("grpc.keepalive_time_ms", 30000)``."""
    secure: bool = False
    """Use TLS with the system's root certificates instead of a plaintext connection."""

    def __post_init__(self) -> None:
        if (self.token is None) == (self.token_provider is None):
            raise ValueError("give exactly one of token and token_provider")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("timeout must be positive or None")
        object.__setattr__(self, "channel_options", tuple(self.channel_options))
