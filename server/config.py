"""Server settings: environment variables, overridden by command-line flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from server.event_loop import loop_factory


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the server can be configured with."""

    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = 50051
    """gRPC port; 0 picks a free one (tests)."""
    data_dir: Path = Path("data")
    """Folder of the embedded SQLite database and the development token key."""
    database_url: str = ""
    """SQLAlchemy async URL; empty means SQLite in data_dir."""
    token_key: str = ""
    """HS256 key that signs bearer tokens; empty means token_key_file, else a dev key."""
    token_key_file: str = ""
    """File holding the token key."""
    log_level: str = "INFO"
    """Python logging level."""
    heartbeat_seconds: float = 10.0
    """Idle room streams get a heartbeat this often."""
    stock_update_interval_seconds: float = 0.2
    """Room streams carry a pool's stock changes at most this often (0: every change)."""
    stream_max_lag_events: int = 2048
    """A room stream this many events behind is sent a fresh snapshot instead of the backlog."""
    event_retention_seconds: float = 86400.0
    """Room events older than this are pruned; resuming from before them gets a snapshot."""
    watch_gap_seconds: float = 30.0
    """A viewer's watch time in a room survives reconnects this much apart."""
    checkout_lock_seconds: float = 900.0
    """A coupon locked at checkout goes back to its viewer this long after the lock unless
    the payment is confirmed first."""
    shutdown_grace_seconds: float = 10.0
    """On SIGTERM, in-flight calls get this long to finish."""
    sqlite_synchronous: str = "FULL"
    """SQLite PRAGMA synchronous: FULL survives power loss, NORMAL only process crashes."""
    allocation_batching: bool = True
    """Grants go through the per-pool group-commit path; false: one transaction per grab."""
    admission_limit: int = 20_000
    """Allocate calls in flight above this are refused at once with RESOURCE_EXHAUSTED."""
    metrics_port: int = 9464
    """Port of the Prometheus /metrics endpoint; 0 turns metrics off."""
    metrics_host: str = "0.0.0.0"
    """Address of the metrics endpoint."""
    processes: int = 1
    """Server processes sharing the port (SO_REUSEPORT); above 1 needs PostgreSQL. Process i
    serves metrics on metrics_port + i."""
    reuse_port: bool = False
    """Bind the port with SO_REUSEPORT so several processes share it (set by `processes`)."""
    event_loop: str = "auto"
    """The event loop: `uvloop`, `asyncio`, or `auto` (uvloop where installed)."""

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'liveresource.db').resolve()}"


_ENV = {
    "host": "LIVERESOURCE_HOST",
    "port": "LIVERESOURCE_PORT",
    "data_dir": "LIVERESOURCE_DATA_DIR",
    "database_url": "LIVERESOURCE_DATABASE_URL",
    "token_key": "LIVERESOURCE_TOKEN_KEY",
    "token_key_file": "LIVERESOURCE_TOKEN_KEY_FILE",
    "log_level": "LIVERESOURCE_LOG_LEVEL",
    "heartbeat_seconds": "LIVERESOURCE_HEARTBEAT_SECONDS",
    "stock_update_interval_seconds": "LIVERESOURCE_STOCK_UPDATE_INTERVAL_SECONDS",
    "stream_max_lag_events": "LIVERESOURCE_STREAM_MAX_LAG_EVENTS",
    "event_retention_seconds": "LIVERESOURCE_EVENT_RETENTION_SECONDS",
    "watch_gap_seconds": "LIVERESOURCE_WATCH_GAP_SECONDS",
    "checkout_lock_seconds": "LIVERESOURCE_CHECKOUT_LOCK_SECONDS",
    "shutdown_grace_seconds": "LIVERESOURCE_SHUTDOWN_GRACE_SECONDS",
    "sqlite_synchronous": "LIVERESOURCE_SQLITE_SYNCHRONOUS",
    "allocation_batching": "LIVERESOURCE_ALLOCATION_BATCHING",
    "admission_limit": "LIVERESOURCE_ADMISSION_LIMIT",
    "metrics_port": "LIVERESOURCE_METRICS_PORT",
    "metrics_host": "LIVERESOURCE_METRICS_HOST",
    "processes": "LIVERESOURCE_PROCESSES",
    "reuse_port": "LIVERESOURCE_REUSE_PORT",
    "event_loop": "LIVERESOURCE_EVENT_LOOP",
}


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from the environment, then flags (`--port 50051`, `--database-url ...`)."""
    env = os.environ if environ is None else environ
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="liveresource-server", description="Run the liveresource gRPC server."
    )
    for name, var in _ENV.items():
        default = getattr(defaults, name)
        kind: Callable[[str], object] = _boolean if isinstance(default, bool) else type(default)
        raw = env.get(var)
        value = kind(raw) if raw not in (None, "") else default
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=value,
            help=f"(env {var}; default {default})",
        )
    args = parser.parse_args(argv)
    settings = Settings(**vars(args))
    for problem in _problems(settings):
        parser.error(problem)
    return settings


def _problems(s: Settings) -> list[str]:
    """Values no server can run with (argparse prints the first and exits with status 2)."""
    out = []
    if not 0 <= s.port <= 65535 or not 0 <= s.metrics_port <= 65535:
        out.append("ports must be within 0-65535")
    for name in ("heartbeat_seconds", "checkout_lock_seconds", "event_retention_seconds"):
        if not getattr(s, name) > 0:
            out.append(f"--{name.replace('_', '-')} must be above 0")
    for name in ("stock_update_interval_seconds", "watch_gap_seconds", "shutdown_grace_seconds"):
        if getattr(s, name) < 0:
            out.append(f"--{name.replace('_', '-')} must not be negative")
    for name in ("stream_max_lag_events", "admission_limit", "processes"):
        if getattr(s, name) < 1:
            out.append(f"--{name.replace('_', '-')} must be at least 1")
    try:
        loop_factory(s.event_loop)
    except ValueError as exc:
        out.append(str(exc))
    return out
