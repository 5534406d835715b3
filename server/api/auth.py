"""Bearer-token authentication: verifies the HS256 JWT in the `authorization` metadata."""

from __future__ import annotations

import logging
import secrets
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
    """Turns call metadata into a Principal, or raises Unauthenticated."""

    def __init__(self, key: str, leeway_seconds: float = 5.0) -> None:
        self._key = key
        self._leeway = leeway_seconds

    def authenticate(self, metadata: Sequence[tuple[str, Any]] | None) -> Principal:
        header = ""
        for name, value in metadata or ():
            if name == "authorization":
                header = value if isinstance(value, str) else value.decode()
                break
        scheme, _, token = header.partition(" ")
        if not header:
            raise Unauthenticated(
                "missing `authorization: Bearer <token>` metadata", reason="MISSING_TOKEN"
            )
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "authorization metadata must be `Bearer <token>`", reason="MALFORMED_TOKEN"
            )
        try:
            claims = jwt.decode(
                token.strip(),
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
        return Principal(subject=subject, role=role)
