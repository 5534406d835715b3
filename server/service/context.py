"""What every use case needs: the store, the clock, the limits, and idempotent replay."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from server.domain.errors import RequestIdReused
from server.domain.options import Limits
from server.service.clock import Clock, utc_now
from server.store.interface import IdempotencyKey, Store, Transaction


@dataclass
class ServiceContext:
    """Shared dependencies of the use cases."""

    store: Store
    limits: Limits = field(default_factory=Limits)
    clock: Clock = utc_now
    checkout_lock: timedelta = timedelta(minutes=15)
    """How long a coupon locked at checkout stays locked without a confirmation."""


async def replay(tx: Transaction, key: IdempotencyKey) -> str | None:
    """The recorded answer for this request_id, or None if it is new.

    Raises RequestIdReused if the request_id was used for a different request.
    """
    answer = await tx.get_answer(key.subject, key.request_id)
    if answer is None:
        return None
    if answer.method != key.method or answer.fingerprint != key.fingerprint:
        raise RequestIdReused()
    return answer.result
