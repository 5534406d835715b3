"""Server-assigned identifiers and unguessable coupon codes."""

from __future__ import annotations

import secrets


def new_pool_id() -> str:
    """A new pool id."""
    return "pool_" + secrets.token_hex(10)


def new_coupon_id() -> str:
    """A new coupon id."""
    return "cpn_" + secrets.token_hex(10)


def new_coupon_code() -> str:
    """A coupon code: 128 random bits, URL-safe (22 characters), so it cannot be guessed."""
    return secrets.token_urlsafe(16)
