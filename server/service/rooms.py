"""Registering rooms and describing their configuration options."""

from __future__ import annotations

from server.domain.errors import AlreadyExists, FieldViolation, InvalidArgument
from server.domain.models import Principal, Role, Room
from server.domain.options import ConfigurationOptions, options_for
from server.domain.rooms import validate_room
from server.domain.validation import check_id, check_request_id
from server.service.access import require_owner, require_role
from server.service.context import ServiceContext, replay
from server.store.interface import IdempotencyKey


async def register_room(
    ctx: ServiceContext, principal: Principal, key: IdempotencyKey, room: Room
) -> Room:
    """Register a room (platform only); idempotent per request_id."""
    require_role(principal, Role.PLATFORM)
    out: list[FieldViolation] = []
    check_request_id(key.request_id, "request_id", out)
    if out:
        raise InvalidArgument(out)
    async with ctx.store.transaction(write=True) as tx:
        if await replay(tx, key) is not None:
            stored = await tx.get_room(room.room_id)
            assert stored is not None, "a recorded registration keeps its room"
            return stored
        validate_room(room, "room")
        if await tx.get_room(room.room_id) is not None:
            raise AlreadyExists("room", room.room_id)
        registered = Room(
            room.room_id,
            room.streamer_id,
            room.currency_code,
            room.featured_goods,
            room.linked_shops,
            ctx.clock(),
        )
        await tx.insert_room(registered)
        await tx.put_answers([(key, registered.room_id)], registered.created_at)
        return registered


async def configuration_options(
    ctx: ServiceContext, principal: Principal, room_id: str
) -> ConfigurationOptions:
    """The options of a room the caller owns."""
    require_role(principal, Role.STREAMER)
    room = await owned_room(ctx, principal, room_id)
    return options_for(room, ctx.limits)


async def owned_room(ctx: ServiceContext, principal: Principal, room_id: str) -> Room:
    """The room, if the caller owns it; PermissionDenied otherwise."""
    out: list[FieldViolation] = []
    check_id(room_id, "room_id", out)
    if out:
        # A malformed id names no room the caller owns.
        require_owner(principal, None)
    async with ctx.store.transaction(write=False) as tx:
        return require_owner(principal, await tx.get_room(room_id))
