"""Mints the HS256 bearer tokens the service accepts, from the key the server uses."""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import jwt

AUDIENCE = "liveresource"
ALGORITHM = "HS256"
KEY_ENV = "LIVERESOURCE_TOKEN_KEY"
KEY_FILE_ENV = "LIVERESOURCE_TOKEN_KEY_FILE"
DATA_DIR_ENV = "LIVERESOURCE_DATA_DIR"
DEV_KEY_FILE_NAME = "dev-token.key"


class Role(enum.StrEnum):
    """The ``role`` claim: what the caller may do."""

    PLATFORM = "platform"
    STREAMER = "streamer"
    VIEWER = "viewer"
    ORDER_SERVICE = "order_service"


def load_key(environ: Mapping[str, str] | None = None) -> str:
    """Return the signing key the way the server finds it.

    In order: env ``LIVERESOURCE_TOKEN_KEY``; the file named by env
    ``LIVERESOURCE_TOKEN_KEY_FILE``; ``<data dir>/dev-token.key`` with data dir env
    ``LIVERESOURCE_DATA_DIR`` or ``./data`` (the server writes it on first start). File contents
    are stripped of surrounding whitespace. Raises FileNotFoundError when no source has a key.
    """
    env = os.environ if environ is None else environ
    if key := env.get(KEY_ENV, ""):
        return key
    if key_file := env.get(KEY_FILE_ENV, ""):
        return _read_key(Path(key_file))
    dev_key = Path(env.get(DATA_DIR_ENV) or "data") / DEV_KEY_FILE_NAME
    if not dev_key.is_file():
        raise FileNotFoundError(
            f"no token key: set {KEY_ENV} or {KEY_FILE_ENV}, or start the server once so it "
            f"writes {dev_key}"
        )
    return _read_key(dev_key)


def _read_key(path: Path) -> str:
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise ValueError(f"token key file {path} is empty")
    return key


def mint_token(
    subject: str,
    role: Role | str,
    *,
    key: str | None = None,
    ttl_seconds: int = 3600,
    follows: Mapping[str, float] | None = None,
    bought_from: Iterable[str] | None = None,
) -> str:
    """Return a signed JWT for ``subject`` acting as ``role``, valid for ``ttl_seconds``.

    Without ``key``, the key comes from load_key(). The platform vouches for a viewer's
    facts with ``follows`` (streamer id -> Unix time they followed) and ``bought_from``
    (shop ids they ordered from before): pools' eligibility rules read them.
    """
    if not subject:
        raise ValueError("subject must not be empty")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": subject,
        "role": Role(role).value,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if follows is not None:
        claims["follows"] = dict(follows)
    if bought_from is not None:
        claims["bought_from"] = list(bought_from)
    return jwt.encode(claims, load_key() if key is None else key, algorithm=ALGORITHM)
