"""Field checks shared by every request: identifiers, codes and ranges."""

from __future__ import annotations

import re

from server.domain.errors import FieldViolation

_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

request_id_match = _UUID.fullmatch
"""Not None when `check_request_id` passes (for a hot path: no list, no call of ours)."""
id_match = _ID.fullmatch
"""Not None when `check_id` passes (for a hot path: no list, no call of ours)."""


def check_id(value: str, field: str, out: list[FieldViolation]) -> None:
    """An identifier: 1-64 characters of [A-Za-z0-9._:-]."""
    if not value:
        out.append(FieldViolation(field, "is required"))
    elif not _ID.fullmatch(value):
        out.append(FieldViolation(field, "must be 1-64 characters of [A-Za-z0-9._:-]"))


def check_request_id(value: str, field: str, out: list[FieldViolation]) -> None:
    """An AIP-155 request id: a UUID."""
    if not value:
        out.append(FieldViolation(field, "is required (a UUID, reused on retries)"))
        return
    if not _UUID.fullmatch(value):
        out.append(FieldViolation(field, "must be a UUID (8-4-4-4-12 hexadecimal digits)"))


def check_currency(value: str, field: str, out: list[FieldViolation]) -> None:
    """An ISO 4217 code: three upper-case letters."""
    if not _CURRENCY.fullmatch(value):
        out.append(FieldViolation(field, "must be an ISO 4217 code of three upper-case letters"))


def check_range(value: int, bounds: tuple[int, int], field: str, out: list[FieldViolation]) -> None:
    """An integer within inclusive bounds."""
    low, high = bounds
    if not low <= value <= high:
        out.append(FieldViolation(field, f"must be between {low} and {high}, got {value}"))


def check_text(
    value: str, field: str, max_len: int, out: list[FieldViolation], *, required: bool = False
) -> None:
    """A display text of bounded length, without NUL (which PostgreSQL text cannot hold)."""
    if required and not value.strip():
        out.append(FieldViolation(field, "is required"))
    elif len(value) > max_len:
        out.append(FieldViolation(field, f"must be at most {max_len} characters"))
    elif "\x00" in value:
        out.append(FieldViolation(field, "must not contain NUL characters"))
