"""`python -m server`: run the liveresource gRPC server until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from server import supervisor
from server.app import start_server
from server.config import Settings, load_settings
from server.event_loop import LoopFactory, loop_factory


def tune_gc() -> None:
    """Collect garbage less often, and never re-scan what start-up built.

    A grab allocates a few dozen short-lived objects; with the default thresholds the
    collector runs every 700 allocations and its full passes walk every live answer and
    view the server keeps (hundreds of thousands under a stampede).
    """
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def dump_tasks() -> None:
    """SIGUSR1: log the stack of every asyncio task, to see where a stuck server waits."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()}: {task.get_coro()!r}", file=out)
        try:
            task.print_stack(limit=12, file=out)
        except Exception as exc:  # a frame without a line number must not end the dump
            print(f"    (stack unavailable: {exc!r})", file=out)
    logging.getLogger("liveresource").warning("asyncio tasks:\n%s", out.getvalue())


async def serve(settings: Settings) -> None:
    """Serve until a termination signal, then shut down gracefully."""
    running = await start_server(settings)
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    await stop.wait()
    logging.getLogger("liveresource").info("signal received: draining")
    await running.stop(settings.shutdown_grace_seconds)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `liveresource-server` and `make run`."""
    args = sys.argv[1:] if argv is None else argv
    settings = load_settings(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if settings.processes > 1:
        problem = supervisor.check_can_share(settings)
        if problem is not None:
            sys.exit(problem)
        sys.exit(supervisor.supervise(args, settings))
    new_loop, loop_name = loop_factory(settings.event_loop)
    logging.getLogger("liveresource").info("event loop: %s", loop_name)
    run_to_exit(serve(settings), new_loop)


def run_to_exit(
    main_coroutine: Coroutine[Any, Any, None],
    new_loop: LoopFactory = asyncio.new_event_loop,
    cleanup_seconds: float = 3.0,
) -> None:
    """Like asyncio.run, but a task that ignores cancellation cannot keep the process alive."""
    loop = new_loop()
    try:
        loop.run_until_complete(main_coroutine)
    finally:
        leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.wait(leftovers, timeout=cleanup_seconds))
        stuck = [t for t in leftovers if not t.done()]
        if stuck:
            logging.getLogger("liveresource").warning(
                "%d task(s) did not stop: %s", len(stuck), stuck
            )
        loop.close()


if __name__ == "__main__":
    main()
