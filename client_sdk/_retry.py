"""Decides whether and when to retry; shared by the sync and asyncio clients, which only sleep."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import grpc

from .config import RetryPolicy
from .errors import LiveResourceError

# Below this much time left, an attempt cannot succeed: give up instead of sending it.
_MIN_ATTEMPT_SECONDS = 0.001


def backoff_delay(policy: RetryPolicy, retry_number: int, rand: Callable[[], float]) -> float:
    """Full-jitter wait before retry ``retry_number`` (1-based); ``rand`` returns [0, 1)."""
    ceiling = min(
        policy.max_backoff, policy.initial_backoff * policy.multiplier ** (retry_number - 1)
    )
    return ceiling * rand()


class Retrier:
    """Tracks the attempts of one call (or one subscription) and answers "retry after how long?"."""

    def __init__(
        self,
        policy: RetryPolicy,
        codes: frozenset[grpc.StatusCode],
        *,
        timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._policy = policy
        self._codes = codes
        self._clock = clock
        self._rand = rand
        self._deadline = None if timeout is None else clock() + timeout
        self._failures = 0

    def attempt_timeout(self) -> float | None:
        """The deadline of the next attempt: whatever is left of the call's timeout."""
        if self._deadline is None:
            return None
        return max(self._deadline - self._clock(), _MIN_ATTEMPT_SECONDS)

    def reset(self) -> None:
        """Forget past failures, after the call made progress (a subscription got a message)."""
        self._failures = 0

    def next_delay(self, error: LiveResourceError) -> float | None:
        """Seconds to wait before retrying after ``error``, or None to give up and raise it."""
        if error.code not in self._codes:
            return None
        return self.next_delay_for_retryable(error.retry_delay)

    def next_delay_for_retryable(self, server_delay: float | None = None) -> float | None:
        """Like next_delay for a failure known to be retryable; ``server_delay`` from RetryInfo."""
        self._failures += 1
        if self._failures >= self._policy.max_attempts:
            return None
        delay = backoff_delay(self._policy, self._failures, self._rand)
        if server_delay is not None:
            delay = max(delay, server_delay)
        if self._deadline is not None and self._clock() + delay >= self._deadline:
            return None
        return delay
