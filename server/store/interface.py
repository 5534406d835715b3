"""The one interface the service uses to persist: a store that opens transactions.

A Transaction offers the reads and writes of one unit of work; everything done through it
commits together or not at all. Events appended in a transaction are published to the
store's commit listeners only after the commit succeeds (a transactional outbox).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from server.domain.eligibility import WatchSession
from server.domain.models import Coupon, EventDraft, Pool, Redemption, Room, RoomEvent

CommitListener = Callable[[str, int, bool, Sequence[RoomEvent]], None]
"""Called after a commit with (room_id, last event sequence committed for that room, whether
any of the room's events in the commit is a lifecycle event, i.e. not a stock change, and the
room's events of the commit when this process committed it: empty when it was heard from
another process). The events' `previous_lifecycle` is 0: a commit does not read the chain."""


class IdempotencyKey(NamedTuple):
    """Who asked, with which request_id, for what (method and a hash of the parameters).
    A NamedTuple: one is built per call, and a frozen dataclass is several times slower to
    build."""

    subject: str
    request_id: str
    method: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """The answer recorded for an idempotency key."""

    method: str
    fingerprint: str
    result: str


@dataclass(frozen=True, slots=True)
class EventBounds:
    """The sequence numbers a room can still replay: first_retained..last."""

    first_retained: int
    last: int


@dataclass(frozen=True, slots=True)
class NewCoupon:
    """A coupon to insert, with the grant's request_id and the viewer's slot (1..limit)."""

    coupon: Coupon
    request_id: str
    slot: int
    per_viewer_limit: int


class Transaction(Protocol):
    """Reads and writes of one unit of work."""

    async def get_answer(self, subject: str, request_id: str) -> StoredAnswer | None: ...
    async def get_answers(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredAnswer]: ...
    async def put_answers(
        self, answers: Sequence[tuple[IdempotencyKey, str]], now: datetime
    ) -> None: ...

    async def get_room(self, room_id: str) -> Room | None: ...
    async def insert_room(self, room: Room) -> None: ...

    async def get_pool(self, pool_id: str, *, for_update: bool = False) -> Pool | None: ...
    async def get_pools(
        self, pool_ids: Sequence[str], *, for_update: bool = False
    ) -> list[Pool]: ...
    async def insert_pool(self, pool: Pool) -> None: ...
    async def update_pool(self, pool: Pool) -> None: ...
    async def update_pools(self, changed: Sequence[Pool]) -> None: ...
    async def live_pools(self, room_id: str) -> list[Pool]: ...
    async def pools_due(self, now: datetime) -> list[Pool]: ...
    async def next_due(self) -> datetime | None: ...

    async def count_grants(self, pool_id: str, viewer_id: str) -> int: ...
    async def count_grants_many(
        self, pairs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], int]: ...
    async def granted_keys(self, pool_id: str) -> list[tuple[str, str]]: ...
    async def insert_coupons(self, grants: Sequence[NewCoupon]) -> None: ...
    async def get_coupon(self, coupon_id: str) -> Coupon | None: ...
    async def get_coupon_by_code(self, code: str, *, for_update: bool = True) -> Coupon | None:
        """The coupon with this code; in a write transaction its row is locked unless
        `for_update` is False."""

    async def list_coupons(
        self, viewer_id: str, room_id: str, before: tuple[int, str] | None, limit: int
    ) -> list[Coupon]: ...
    async def update_coupon_holds(self, changed: Sequence[Coupon]) -> None:
        """Write each coupon's order, lock expiry and release count."""

    async def lock_order(self, order_id: str) -> None:
        """Wait for every other unit of work on this order to end (until commit)."""

    async def lock_pins(self, room_id: str) -> None:
        """Wait for every other unit of work pinning a pool of this room to end."""

    async def get_redemptions(self, order_id: str) -> list[tuple[Redemption, str]]:
        """The order's redemptions with their fingerprints, in the order they were made."""

    async def insert_redemption(self, redemption: Redemption, fingerprint: str) -> None: ...
    async def update_redemptions(self, changed: Sequence[Redemption]) -> None: ...

    async def get_watch_sessions(
        self, keys: Sequence[tuple[str, str]], *, for_update: bool = False
    ) -> dict[tuple[str, str], WatchSession]:
        """The stored watching sessions of these (room, viewer) pairs."""

    async def put_watch_sessions(self, sessions: Sequence[WatchSession]) -> None:
        """Insert or overwrite these watching sessions."""

    async def prune_watch_sessions(self, older_than: datetime) -> int:
        """Delete sessions neither seen nor vouched for since `older_than`; how many."""

    async def pool_stats(self, pool_id: str, now: datetime) -> dict[str, int]:
        """How many of the pool's coupons are, at `now`, in each state: held, locked,
        redeemed, released, expired (states with none may be missing)."""

    async def list_grants(self, pool_id: str, after: int, limit: int) -> list[Coupon]:
        """The pool's coupons with grant sequence above `after`, in sequence order."""

    async def append_events(self, room_id: str, drafts: list[EventDraft], now: datetime) -> int: ...
    async def append_events_many(
        self, drafts_by_room: Mapping[str, Sequence[EventDraft]], clock: Callable[[], datetime]
    ) -> None:
        """Number and insert several rooms' events; their time is read from `clock` as late
        as the store can (after numbering them), so it is as close to the commit as it gets."""

    async def events_after(self, room_id: str, after: int, limit: int) -> list[RoomEvent]: ...
    async def event_bounds(self, room_id: str) -> EventBounds | None: ...


class Store(Protocol):
    """A transactional store."""

    async def start(self) -> None:
        """Create or upgrade the schema (Alembic) and get ready to serve."""

    async def close(self) -> None:
        """Release connections."""

    def transaction(self, *, write: bool) -> AbstractAsyncContextManager[Transaction]:
        """A unit of work; `write=False` gives a consistent read-only view."""

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Be told of every room whose events were committed (by any process sharing the
        store, where the store can tell: PostgreSQL LISTEN/NOTIFY)."""

    def add_resync_listener(self, listener: Callable[[], None]) -> None:
        """Be told when commit notifications may have been missed (a lost LISTEN
        connection): what the listener watches must be re-read from the store."""

    async def prune_events(self, older_than: datetime) -> int:
        """Delete events committed before `older_than`; returns how many."""
