"""The `liveresource` command line: token minting and a call through the sync client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import jwt
import pytest

from client_sdk.cli import main
from client_sdk.tokens import mint_token
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc_pb2
from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as svc_grpc

KEY = "unit-test-key-that-is-long-enough-for-hs256"


class GrantingServicer(svc_grpc.ResourceAllocationServiceServicer):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def Allocate(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.calls.append(
            (request.request_id, dict(context.invocation_metadata())["authorization"])
        )
        return svc_pb2.AllocateResponse(
            outcome=svc_pb2.ALLOCATION_OUTCOME_SOLD_OUT, remaining_quantity=0
        )


@pytest.fixture
def granting() -> Iterator[tuple[GrantingServicer, str]]:
    servicer = GrantingServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    svc_grpc.add_ResourceAllocationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture(autouse=True)
def no_key_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in ("LIVERESOURCE_TOKEN_KEY", "LIVERESOURCE_TOKEN_KEY_FILE", "LIVERESOURCE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIVERESOURCE_DATA_DIR", str(tmp_path))


def test_cli_token_prints_a_valid_token(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["token", "--role", "streamer", "--subject", "s9", "--ttl", "60", "--key", KEY])
    assert status == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, KEY, algorithms=["HS256"], audience="liveresource")
    assert (claims["sub"], claims["role"]) == ("s9", "streamer")


def test_cli_token_carries_the_viewer_facts(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["token", "--role", "viewer", "--subject", "v9", "--key", KEY]
    argv += ["--follows", "streamer-1=1700000000", "--follows", "streamer-2"]
    argv += ["--bought-from", "shop-1"]
    assert main(argv) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, KEY, algorithms=["HS256"], audience="liveresource")
    assert claims["follows"]["streamer-1"] == 1700000000
    assert claims["follows"]["streamer-2"] > 1700000000
    assert claims["bought_from"] == ["shop-1"]
    plain = jwt.decode(
        mint_token("v", "viewer", key=KEY), KEY, algorithms=["HS256"], audience="liveresource"
    )
    assert "follows" not in plain and "bought_from" not in plain


def test_cli_reports_a_missing_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--role", "viewer", "--subject", "v1"]) == 2
    assert "no token key" in capsys.readouterr().err


def test_cli_needs_a_token_to_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["allocate", "p1", "--target", "127.0.0.1:1"]) == 2
    assert "no token" in capsys.readouterr().err


def test_cli_allocate_prints_the_answer(
    granting: tuple[GrantingServicer, str], capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, target = granting
    status = main(["allocate", "p1", "--target", target, "--token", "tok", "--request-id", "tap"])
    assert status == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "ALLOCATION_OUTCOME_SOLD_OUT"
    assert servicer.calls == [("tap", "Bearer tok")]
