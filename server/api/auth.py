"""Bearer-token authentication: verifies the HS256 JWT in the `authorization` metadata."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt

from server.domain.errors import Unauthenticated
from server.domain.models import Principal, Role

log = logging.getLogger(__name__)

AUDIENCE = "liveresource"
DEV_KEY_FILE = "dev-token.key"


def load_token_key(key: str, key_file: str, data_dir: Path) -> str:
    """The configured key, else the key file, else a development key kept in data_dir."""
    if key:
        return key
    if key_file:
        return Path(key_file).read_text().strip()
    path = data_dir / DEV_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
        log.warning(
            "no token key configured: created development key %s "
            "(mint tokens with `liveresource token`)",
            path,
        )
    return path.read_text().strip()


class Authenticator:
    """Turns call metadata into a Principal, or raises Unauthenticated.

    Verified tokens are remembered with their expiry (bounded), so an app's repeated calls
    skip the signature check; the expiry is still checked on every call.
    """

    def __init__(self, key: str, leeway_seconds: float = 5.0, cache_size: int = 100_000) -> None:
        self._key = key
        self._leeway = leeway_seconds
        self._cache_size = cache_size
        self._verified: dict[str, tuple[Principal, float]] = {}

    def authenticate(self, metadata: Sequence[tuple[str, Any]] | None) -> Principal:
        header = ""
        for name, value in metadata or ():
            if name == "authorization":
                header = value if isinstance(value, str) else value.decode()
                break
        if not header:
            raise Unauthenticated(
                "missing `authorization: Bearer <token>` metadata", reason="MISSING_TOKEN"
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(
                "authorization metadata must be `Bearer <token>`", reason="MALFORMED_TOKEN"
            )
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires = cached
            if time.time() < expires + self._leeway:
                return principal
            del self._verified[token]
        principal, expires = self._verify(token)
        if len(self._verified) >= self._cache_size:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                audience=AUDIENCE,
                leeway=self._leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the token has expired", reason="TOKEN_EXPIRED") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token is not valid", reason="INVALID_TOKEN") from exc
        try:
            role = Role(claims.get("role", ""))
        except ValueError as exc:
            raise Unauthenticated("the token has no known role", reason="INVALID_TOKEN") from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not 1 <= len(subject) <= 64:
            raise Unauthenticated("the token's subject is not valid", reason="INVALID_TOKEN")
        return Principal(subject=subject, role=role), float(claims["exp"])
