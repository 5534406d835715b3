"""SingleFlight: callers asking for the same key while its load runs share one load."""

from __future__ import annotations

import asyncio
import gc

import pytest

from server.service.single_flight import SingleFlight


class Loader:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()
        self.fail = False

    async def load(self, key: str) -> str:
        self.calls.append(key)
        await self.release.wait()
        if self.fail:
            raise LookupError(key)
        return f"value of {key}"


async def test_concurrent_callers_of_one_key_share_one_load_and_other_keys_load_apart() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    loader = Loader()
    callers = [asyncio.ensure_future(flight.do(k, lambda k=k: loader.load(k))) for k in "aaab"]
    await asyncio.sleep(0)
    loader.release.set()
    assert await asyncio.gather(*callers) == ["value of a"] * 3 + ["value of b"]
    assert sorted(loader.calls) == ["a", "b"]
    # Results are not kept: a later call loads again.
    assert await flight.do("a", lambda: loader.load("a")) == "value of a"
    assert sorted(loader.calls) == ["a", "a", "b"]


async def test_a_cancelled_caller_leaves_the_load_running_for_the_others() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    loader = Loader()
    leaving = asyncio.ensure_future(flight.do("a", lambda: loader.load("a")))
    staying = asyncio.ensure_future(flight.do("a", lambda: loader.load("a")))
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    loader.release.set()
    assert await staying == "value of a"
    assert leaving.cancelled() and loader.calls == ["a"]


async def test_a_failed_load_reaches_every_caller_and_the_next_call_tries_again() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    loader = Loader()
    loader.fail = True
    callers = [asyncio.ensure_future(flight.do("a", lambda: loader.load("a"))) for _ in range(3)]
    await asyncio.sleep(0)
    loader.release.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results) and loader.calls == ["a"]
    loader.fail = False
    assert await flight.do("a", lambda: loader.load("a")) == "value of a"


async def test_a_load_whose_callers_all_left_leaves_no_unretrieved_exception() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    loader = Loader()
    loader.fail = True
    seen: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: seen.append(context))
    caller = asyncio.ensure_future(flight.do("a", lambda: loader.load("a")))
    await asyncio.sleep(0)
    caller.cancel()
    loader.release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()
    assert seen == []
