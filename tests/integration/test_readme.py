"""The README's grpcurl examples run as written against a real server process."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
BEGIN = "<!-- readme-test:"
END = "<!-- readme-test: end -->"


def readme_script() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(BEGIN) : text.index(END)]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) >= 6, "the README lost its grpcurl examples"
    return "\n".join(blocks)


@pytest.fixture
def readme_server(tmp_path: Path) -> ServerProcess:
    # The server and the commands share one folder, as `make run` and a terminal in the
    # repository do: the CLI finds the server's development key in ./data.
    # SQLite only: the README walks through `make run`, the embedded SQLite store; the
    # same calls run on PostgreSQL in the integration suite (the `backend` parameter).
    proc = ServerProcess(tmp_path / "data", free_port())
    return proc


async def test_readme_grpcurl_examples_work_as_written(
    readme_server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIVERESOURCE_TOKEN_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    readme_server.start(env_key=False)
    try:
        await readme_server.wait_serving()
        script = readme_script().replace("localhost:50051", readme_server.target)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVERESOURCE_")}
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
        done = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-o", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        assert readme_server.terminate() == 0
    out, err = done.stdout, done.stderr
    transcript = f"--- stdout\n{out}\n--- stderr\n{err}"
    assert "liveresource.v1.ResourceAllocationService" in out, transcript
    assert '"status": "SERVING"' in out, transcript
    assert '"room_id": "room-1"' in out, transcript
    assert '"goods_id": "cup-1"' in out, transcript  # options list the linked shop's goods
    assert '"pool_id": "pool_' in out, transcript
    assert '"snapshot"' in out and '"reason": "SNAPSHOT_REASON_INITIAL"' in out, transcript
    assert '"outcome": "ALLOCATION_OUTCOME_GRANTED"' in out, transcript
    assert '"discount_minor": "2000"' in out, transcript
    assert '"released": true' in out, transcript
    assert '"outcome": "ALLOCATION_OUTCOME_NOT_ELIGIBLE"' in out, transcript
    assert "ELIGIBILITY_GAP_NOT_FOLLOWER" in out and "ELIGIBILITY_GAP_WATCH_TIME" in out, transcript
    for state in ("LOCKED", "CONFIRMED", "REFUNDED"):  # lock, confirm, refund in full
        assert f'"state": "REDEMPTION_STATE_{state}"' in out, transcript
    assert '"sequence": "1"' in out and '"viewer_id": "viewer-1"' in out, transcript  # winners
    assert '"released_quantity": "1"' in out and '"remaining_quantity": "999"' in out, transcript
    # The only errors are the ones the README announces.
    errors = re.findall(r"Code: (\w+)", err)
    assert errors == ["DeadlineExceeded", "InvalidArgument"], transcript
    assert "create_pool.total_quantity" in err, transcript
