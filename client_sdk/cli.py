"""The ``liveresource`` command: mint dev tokens, grab a coupon, watch a room."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from google.protobuf import json_format
from google.protobuf.message import Message

from .config import ClientConfig
from .errors import LiveResourceError
from .sync import LiveResourceClient
from .tokens import Role, mint_token

DEFAULT_TARGET = "localhost:50051"
TARGET_ENV = "LIVERESOURCE_TARGET"
TOKEN_ENV = "LIVERESOURCE_TOKEN"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except LiveResourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liveresource", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    token = commands.add_parser("token", help="print a signed token (for grpcurl, local dev)")
    token.add_argument("--role", required=True, choices=[role.value for role in Role])
    token.add_argument("--subject", required=True, help="the principal id (token sub)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds of validity (3600)")
    token.add_argument("--key", help="signing key (default: the server's key lookup)")
    token.add_argument(
        "--follows",
        action="append",
        default=[],
        metavar="STREAMER[=UNIX_TIME]",
        help="the viewer follows this streamer, since UNIX_TIME (default now); repeatable",
    )
    token.add_argument(
        "--bought-from",
        action="append",
        default=[],
        metavar="SHOP",
        help="the viewer ordered from this shop before; repeatable",
    )
    token.set_defaults(run=_token)

    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--target",
        default=os.environ.get(TARGET_ENV, DEFAULT_TARGET),
        help=f"server address (${TARGET_ENV} or {DEFAULT_TARGET})",
    )
    connection.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"bearer token (${TOKEN_ENV}); see `liveresource token`",
    )

    allocate = commands.add_parser(
        "allocate", parents=[connection], help="grab a coupon from a pool (viewer token)"
    )
    allocate.add_argument("pool_id")
    allocate.add_argument("--request-id", help="idempotency key; reuse it to retry a grab")
    allocate.set_defaults(run=_allocate)

    watch = commands.add_parser(
        "watch", parents=[connection], help="print a room's feed, one JSON object per line"
    )
    watch.add_argument("room_id")
    watch.add_argument("--resume-after", type=int, default=0, metavar="SEQUENCE")
    watch.add_argument("--heartbeats", action="store_true", help="print heartbeats too")
    watch.set_defaults(run=_watch)
    return parser


def _token(args: argparse.Namespace) -> int:
    follows: dict[str, float] = {}
    for entry in args.follows:
        streamer, _, since = entry.partition("=")
        follows[streamer] = float(since) if since else time.time()
    print(
        mint_token(
            args.subject,
            args.role,
            key=args.key,
            ttl_seconds=args.ttl,
            follows=follows or None,
            bought_from=args.bought_from or None,
        )
    )
    return 0


def _allocate(args: argparse.Namespace) -> int:
    with _client(args) as client:
        answer = client.allocate(args.pool_id, request_id=args.request_id)
    print(_json(answer, indent=2))
    return 0


def _watch(args: argparse.Namespace) -> int:
    with (
        _client(args) as client,
        client.subscribe(
            args.room_id,
            resume_after_sequence=args.resume_after,
            include_heartbeats=args.heartbeats,
        ) as subscription,
    ):
        for item in subscription:
            print(_json(item), flush=True)
    return 0


def _client(args: argparse.Namespace) -> LiveResourceClient:
    if not args.token:
        raise ValueError(f"no token: pass --token or set ${TOKEN_ENV}")
    return LiveResourceClient(ClientConfig(target=args.target, token=args.token))


def _json(message: Message, indent: int | None = None) -> str:
    return json_format.MessageToJson(message, indent=indent, preserving_proto_field_name=True)
