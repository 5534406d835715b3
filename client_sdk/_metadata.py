"""Builds the metadata every call carries: the bearer token plus the caller's extras."""

from __future__ import annotations

from collections.abc import Sequence

from .config import ClientConfig

Metadata = Sequence[tuple[str, str | bytes]]
"""Call metadata as gRPC takes it: (key, value) pairs, keys lower-case."""

AUTHORIZATION = "authorization"


def call_metadata(
    config: ClientConfig, extra: Metadata | None
) -> tuple[tuple[str, str | bytes], ...]:
    """The metadata of one attempt; an ``authorization`` entry in ``extra`` replaces the token."""
    extra = tuple(extra or ())
    if any(key.lower() == AUTHORIZATION for key, _ in extra):
        return extra
    # The provider is asked on every attempt so a retry after expiry gets a fresh token.
    token = config.token if config.token_provider is None else config.token_provider()
    return ((AUTHORIZATION, f"Bearer {token}"), *extra)
