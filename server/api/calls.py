"""The wrapper every RPC goes through: decode check, authentication, status mapping, one
log line per call. Servicer methods only see a Principal and a decoded request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from server.api.auth import Authenticator
from server.api.status import RpcFailure, failure_for, internal_failure
from server.domain.errors import DomainError, FieldViolation, InvalidArgument
from server.domain.models import Principal, Role
from server.metrics import Metrics
from server.service.access import require_role
from server.service.shielding import finish_even_if_cancelled

log = logging.getLogger("liveresource.calls")

UnaryBehavior = Callable[[Principal, Any], Coroutine[Any, Any, tuple[Message | bytes, object]]]
"""Returns the response (or its wire bytes) and a short note for the call's log line (any
object; formatted with %s only when the line is logged, see `Note`)."""
Send = Callable[[Message | bytes], Awaitable[None]]
QuickBehavior = Callable[[Principal, Any], tuple[Message | bytes, object] | None]
"""Answers at once if it can (same result as the unary behaviour would give), else None."""
StreamBehavior = Callable[[Principal, Any, Send], Coroutine[Any, Any, None]]
"""Writes the stream's messages with the given send; returns when the stream ends."""


class _Writer:
    """`context.write` that counts what it wrote (for the log line); no coroutine of its
    own per message."""

    __slots__ = ("_write", "sent")

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._write: Send = context.write
        self.sent = 0

    def __call__(self, message: Message | bytes) -> Awaitable[None]:
        self.sent += 1
        return self._write(message)


class Note(tuple[object, ...]):
    """A log note formatted only if the call's line is logged (most calls log nothing):
    `Note((fmt, *args))`. A tuple, so building one runs no Python code."""

    __slots__ = ()

    def __str__(self) -> str:
        return str(self[0]) % self[1:]


def encoded(message: Message | bytes) -> bytes:
    """The response serializer: wire bytes pass through, messages are serialised."""
    return message if isinstance(message, bytes) else message.SerializeToString()


_DECODE_ERRORS = (DecodeError, RuntimeError, ValueError)


def _decode(message_type: type[Message], data: bytes) -> Any:
    """The request, or None if its bytes do not decode (reported after authentication)."""
    try:
        return message_type.FromString(data)
    except _DECODE_ERRORS:
        return None


def _undecodable(message_type: type[Message]) -> InvalidArgument:
    name = message_type.DESCRIPTOR.full_name
    return InvalidArgument(
        [FieldViolation("", f"the request bytes do not decode as {name}")],
        reason="UNDECODABLE_REQUEST",
    )


class CallRunner:
    """Runs behaviours with the shared per-call concerns."""

    def __init__(self, authenticator: Authenticator, metrics: Metrics | None = None) -> None:
        self._auth = authenticator
        self._metrics = metrics

    def unary(
        self,
        method: str,
        behavior: UnaryBehavior,
        request_type: type[Message],
        *,
        roles: tuple[Role, ...] = (),
        shielded: bool = True,
        quick: QuickBehavior | None = None,
    ) -> Callable[..., Awaitable[Message | bytes]]:
        """Wrap a unary behaviour as a handler of the request's bytes (registered with no
        deserializer: decoding here costs no Python call of its own, and bytes that do not
        decode are reported only after authentication). `roles`: who may call it (empty:
        anyone authenticated).
        `shielded`: its store work finishes even if the caller leaves (off only for
        behaviours that shield their own store work). `quick`: tried first, synchronously;
        when it answers, the behaviour's coroutine is never created."""
        authenticate = self._auth.authenticate
        decode = request_type.FromString
        metrics = self._metrics

        async def handle(data: bytes, context: grpc.aio.ServicerContext) -> Message | bytes:
            started = time.perf_counter()
            who: Principal | None = None
            failure: RpcFailure | None = None
            try:
                try:
                    request = decode(data)
                except _DECODE_ERRORS:
                    request = None
                # Authentication, then the role, come first: a caller without the right
                # learns nothing about its request, not even whether it decoded (AIP-211).
                # Inline, not helpers: every call runs this, and in a server holding
                # thousands of calls each Python call costs several times its cost in a loop.
                who = authenticate(context.invocation_metadata())
                if roles and who.role not in roles:
                    require_role(who, *roles)
                if request is None:
                    raise _undecodable(request_type)
                answered = None if quick is None else quick(who, request)
                if answered is None:
                    work = behavior(who, request)
                    answered = await (finish_even_if_cancelled(work) if shielded else work)
                # `_log`, inline: most calls end here.
                elapsed = time.perf_counter() - started
                if metrics is not None:
                    metrics.observe_call(method, "OK", elapsed)
                if log.isEnabledFor(logging.INFO):
                    _log_line(method, who, "OK", elapsed, answered[1])
                return answered[0]
            except DomainError as exc:
                failure = failure_for(exc)
            except asyncio.CancelledError:
                self._log(method, who, "CANCELLED", started, "")
                raise
            except Exception:
                failure, ref = internal_failure()
                log.exception("unexpected error in %s (reference %s)", method, ref)
            self._log(method, who, failure.code.name, started, failure.message)
            await context.abort(failure.code, failure.message, failure.trailing_metadata())
            raise AssertionError("abort returned")  # pragma: no cover

        return handle

    def stream(
        self, method: str, behavior: StreamBehavior, request_type: type[Message]
    ) -> Callable[[bytes, grpc.aio.ServicerContext], Coroutine[Any, Any, None]]:
        """Wrap a server-streaming behaviour as a handler of the request's bytes (as
        `unary`). The behaviour writes each message itself (`context.write` through a
        counting `_Writer`): a stream is one coroutine, with no generator re-yielding its
        messages."""

        async def handle(data: bytes, context: grpc.aio.ServicerContext) -> None:
            started = time.perf_counter()
            who: Principal | None = None
            send = _Writer(context)
            failure: RpcFailure | None = None
            try:
                request = _decode(request_type, data)
                # Authentication first: a caller without the right learns nothing about its
                # request, not even whether it decoded (AIP-211).
                who = self._auth.authenticate(context.invocation_metadata())
                if request is None:
                    raise _undecodable(request_type)
                await behavior(who, request, send)
                self._log(method, who, "OK", started, f"sent={send.sent}")
                return
            except DomainError as exc:
                failure = failure_for(exc)
            except asyncio.CancelledError:
                # Let the cancellation propagate: swallowing it leaks per-stream memory.
                self._log(method, who, "CANCELLED", started, f"sent={send.sent}")
                raise
            except Exception:
                failure, ref = internal_failure()
                log.exception("unexpected error in %s (reference %s)", method, ref)
            note = f"sent={send.sent} {failure.message}"
            self._log(method, who, failure.code.name, started, note)
            await context.abort(failure.code, failure.message, failure.trailing_metadata())

        return handle

    def _log(
        self, method: str, who: Principal | None, code: str, started: float, note: object
    ) -> None:
        elapsed = time.perf_counter() - started
        if self._metrics is not None:
            self._metrics.observe_call(method, code, elapsed)
        if log.isEnabledFor(logging.INFO):
            _log_line(method, who, code, elapsed, note)


def _log_line(method: str, who: Principal | None, code: str, elapsed: float, note: object) -> None:
    caller = "-" if who is None else f"{who.role.value}:{who.subject}"
    log.info("rpc=%s caller=%s code=%s ms=%.1f %s", method, caller, code, elapsed * 1000, note)
