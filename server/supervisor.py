"""`python -m server --processes N`: N server processes on one port, one supervisor.

grpcio is not fork-safe, so each process is started afresh (`python -m server` with the same
settings, `--processes 1 --reuse-port true`); the kernel spreads connections over them
(SO_REUSEPORT). They share the PostgreSQL database and hear of each other's commits through
LISTEN/NOTIFY. SIGTERM/SIGINT are passed on to every process; if one exits on its own, the
others are stopped too and the supervisor exits with its status, so a process manager sees
the failure and restarts the whole group.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from types import FrameType

from server.config import Settings

log = logging.getLogger("liveresource.supervisor")


def check_can_share(settings: Settings) -> str | None:
    """Why these settings cannot run several processes, or None."""
    if not settings.resolved_database_url().startswith("postgresql"):
        return (
            "--processes above 1 needs a PostgreSQL --database-url: the embedded SQLite "
            "store serves one process"
        )
    return None


def child_args(argv: list[str], settings: Settings, index: int) -> list[str]:
    """The command line of process `index`: the caller's flags, then the per-process ones."""
    metrics_port = settings.metrics_port + index if settings.metrics_port else 0
    return [
        sys.executable,
        "-m",
        "server",
        *argv,
        "--processes",
        "1",
        "--reuse-port",
        "true",
        "--metrics-port",
        str(metrics_port),
    ]


def supervise(argv: list[str], settings: Settings) -> int:
    """Run `settings.processes` servers until a signal or until one of them exits."""
    children = [subprocess.Popen(child_args(argv, settings, i)) for i in range(settings.processes)]
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("started %d server processes: %s", len(children), [c.pid for c in children])
    status = 0
    while any(c.poll() is None for c in children):
        ended = [c for c in children if c.poll() is not None]
        if ended and not stopping:
            status = ended[0].returncode or 1
            log.error("server process %d exited (%s): stopping the others", ended[0].pid, status)
            forward(signal.SIGTERM, None)
        time.sleep(0.2)
    if stopping and status == 0:
        status = max((c.returncode for c in children), default=0)
    return status
