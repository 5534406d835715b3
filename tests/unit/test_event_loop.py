"""The server's event loop: uvloop where installed, asyncio's own on request or as fallback."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from server import event_loop
from server.config import load_settings


def run_on(factory: event_loop.LoopFactory) -> type[asyncio.AbstractEventLoop]:
    loop = factory()
    try:

        async def kind() -> type[asyncio.AbstractEventLoop]:
            await asyncio.sleep(0)
            return type(asyncio.get_running_loop())

        return loop.run_until_complete(kind())
    finally:
        loop.close()


def test_auto_and_uvloop_run_on_uvloop_and_asyncio_on_asyncios_own_loop() -> None:
    for choice in ("auto", "uvloop"):
        factory, name = event_loop.loop_factory(choice)
        assert run_on(factory) is uvloop.Loop
        assert name == f"uvloop {uvloop.__version__}"
    factory, name = event_loop.loop_factory("asyncio")
    assert name == "asyncio"
    assert not issubclass(run_on(factory), uvloop.Loop)
    assert issubclass(run_on(factory), asyncio.BaseEventLoop)


def test_without_uvloop_auto_falls_back_and_asking_for_it_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(event_loop, "_uvloop", lambda: None)
    factory, name = event_loop.loop_factory("auto")
    assert name == "asyncio" and not issubclass(run_on(factory), uvloop.Loop)
    with pytest.raises(ValueError, match="uvloop is not installed"):
        event_loop.loop_factory("uvloop")


def test_the_choice_comes_from_the_environment_or_the_flag() -> None:
    assert load_settings([], {}).event_loop == "auto"
    env = {"LIVERESOURCE_EVENT_LOOP": "asyncio"}
    assert load_settings([], env).event_loop == "asyncio"
    assert load_settings(["--event-loop", "uvloop"], env).event_loop == "uvloop"
    with pytest.raises(ValueError, match="must be one of auto, uvloop, asyncio"):
        event_loop.loop_factory("trio")
