"""Authorisation rules: which role may do what, and room ownership."""

from __future__ import annotations

from server.domain.errors import PermissionDenied
from server.domain.models import Principal, Role, Room


def require_role(principal: Principal, *roles: Role) -> None:
    """Raise PermissionDenied unless the caller has one of `roles`."""
    if principal.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise PermissionDenied(f"this call needs the {allowed} role", reason="ROLE_NOT_ALLOWED")


def require_owner(principal: Principal, room: Room | None) -> Room:
    """Raise PermissionDenied unless the caller owns the room (missing rooms included)."""
    if room is None or room.streamer_id != principal.subject:
        # Same answer for a missing room and someone else's: a caller without the
        # right learns nothing about the room (AIP-211).
        raise PermissionDenied(
            "the caller does not own this room (or it does not exist)", reason="NOT_ROOM_OWNER"
        )
    return room
