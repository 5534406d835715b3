"""One `python -m server` process on a free loopback port with its own SQLite data folder."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child (Linux): get SIGTERM when the bench process dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerProcess:
    """The real server as its own process; `stop()` sends SIGTERM, `kill()` is the fallback."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        token_key: str,
        *,
        batching: bool,
        database_url: str = "",
        metrics_port: int | None = None,
        repo_root: Path = REPO_ROOT,
    ) -> None:
        self.name = name
        self.repo_root = repo_root
        """The checkout whose `server` package runs (another one: `bench.ab`'s variants)."""
        self.metrics_port = free_port() if metrics_port is None else metrics_port
        """Where the server serves /metrics (0: not at all). On by default, as the server's
        own default is: the bench measures the server as it is deployed."""
        self.database_url = database_url
        """A PostgreSQL URL the server uses instead of its SQLite file (several may share it)."""
        self.data_dir = data_dir
        self.token_key = token_key
        self.batching = batching
        self.port = free_port()
        self.log_path = data_dir.parent / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "liveresource.db"

    @property
    def store(self) -> Path | str:
        """Where the gate reads what this server committed: its SQLite file or its URL."""
        return self.database_url or self.db_path

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--token-key",
            self.token_key,
            "--log-level",
            "WARNING",
            "--metrics-port",
            str(self.metrics_port),
            "--metrics-host",
            "127.0.0.1",
            "--shutdown-grace-seconds",
            "5",
            "--allocation-batching",
            "true" if self.batching else "false",
            *(["--database-url", self.database_url] if self.database_url else []),
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args,
                cwd=self.repo_root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def wait_serving(self, within_s: float = 60.0) -> None:
        """Poll the standard health Check until SERVING; raise with the log if it never is."""
        deadline = time.monotonic() + within_s
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited during start:\n{self.log_tail()}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} not SERVING in {within_s}s:\n{self.log_tail()}"
                    )
                time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far (Linux /proc; else 0)."""
        if self.proc is None:
            return 0.0
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown) without waiting."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; kill when it does not exit in time. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
