"""`python -m server`: run the liveresource gRPC server until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from server.app import start_server
from server.config import Settings, load_settings


async def serve(settings: Settings) -> None:
    """Serve until a termination signal, then shut down gracefully."""
    running = await start_server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("liveresource").info("signal received: draining")
    await running.stop(settings.shutdown_grace_seconds)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `liveresource-server` and `make run`."""
    settings = load_settings(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
