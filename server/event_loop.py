"""Which event loop `python -m server` runs on: uvloop (libuv) where it is installed, else
asyncio's own.

grpc.aio drives its calls through whatever asyncio loop runs it. Every call of this server
is a few tasks, futures and callbacks on that loop, and uvloop does that bookkeeping in C:
measured on the bench, each call costs the server ~45 µs less CPU and every scenario
answers ~12% more calls per second (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
from collections.abc import Callable
from types import ModuleType

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

CHOICES = ("auto", "uvloop", "asyncio")
"""`auto`: uvloop if it can be imported, else asyncio."""


def _uvloop() -> ModuleType | None:
    try:
        return importlib.import_module("uvloop")
    except ImportError:
        return None


def loop_factory(choice: str) -> tuple[LoopFactory, str]:
    """The factory of the chosen loop and a name for the log (`uvloop 0.23.0`, `asyncio`).
    ValueError: an unknown choice, or uvloop asked for by name and not installed."""
    if choice not in CHOICES:
        raise ValueError(f"--event-loop must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice != "asyncio":
        uvloop = _uvloop()
        if uvloop is not None:
            version = importlib.metadata.version("uvloop")
            factory: LoopFactory = uvloop.new_event_loop
            return factory, f"uvloop {version}"
        if choice == "uvloop":
            raise ValueError("--event-loop uvloop: uvloop is not installed")
    return asyncio.new_event_loop, "asyncio"
