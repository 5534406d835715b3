"""Bearer-token authentication: verifies the HS256 JWT in the `authorization` metadata."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jwt.algorithms import HMACAlgorithm
from jwt.utils import base64url_decode

from server.domain.eligibility import ViewerFacts
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
        # OrderedDict: evicting the oldest of a plain dict (`next(iter(d))`) walks the holes
        # earlier deletions left at its front, ~9 µs per insert at 100,000 entries.
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._mac = hmac.new(_HS256.prepare_key(key), digestmod=hashlib.sha256)
        self._headers: dict[str, bool] = {}

    def authenticate(self, metadata: Sequence[tuple[str, Any]] | None) -> Principal:
        header = ""
        for name, value in metadata or ():
            if name == "authorization":
                header = value if isinstance(value, str) else value.decode()
                break
        # Keyed by the whole header: an app's repeated calls skip its parsing too.
        cached = self._verified.get(header)
        if cached is not None:
            principal, expires = cached
            if time.time() < expires + self._leeway:
                return principal
            del self._verified[header]
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
        principal, expires = self._verify(token)
        if len(self._verified) >= self._cache_size:
            self._verified.popitem(last=False)
        self._verified[header] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        """Check an HS256 JWT: header, signature (HMAC-SHA256 from a copy of a MAC keyed once),
        then the claims. Lean on purpose: pyjwt's decode re-validates the key on every call,
        and each first-seen token (every viewer's first grab) pays this."""
        parts = token.split(".")
        if len(parts) != 3:
            raise _invalid()
        header_b64, payload_b64, signature_b64 = parts
        acceptable = self._headers.get(header_b64)
        if acceptable is None:
            acceptable = _acceptable_header(header_b64)
            if len(self._headers) < _HEADER_CACHE:
                self._headers[header_b64] = acceptable
        if not acceptable:
            raise _invalid()
        try:
            signature = _b64url(signature_b64)
            payload = _b64url(payload_b64)
            mac = self._mac.copy()
            mac.update(f"{header_b64}.{payload_b64}".encode())
            if not hmac.compare_digest(mac.digest(), signature):
                raise _invalid()
            claims = _JSON.decode(payload.decode())
        except (ValueError, TypeError, binascii.Error):
            raise _invalid() from None
        return _principal_of(claims, self._leeway)


def _b64url(text: str) -> bytes:
    """Unpadded base64url (RFC 7515) to bytes; ValueError/binascii.Error when invalid."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_JSON = json.JSONDecoder()
_HS256 = HMACAlgorithm(HMACAlgorithm.SHA256)


def _invalid() -> Unauthenticated:
    # Built only when needed: an exception per verified token was a measurable cost.
    return Unauthenticated("the token is not valid", reason="INVALID_TOKEN")


_ROLES: dict[str, Role] = {role.value: role for role in Role}
_HEADER_CACHE = 64  # tokens of one issuer share their header


def _acceptable_header(header_b64: str) -> bool:
    try:
        header = json.loads(base64url_decode(header_b64))
    except (ValueError, TypeError, binascii.Error):
        return False
    # Only HS256, and no critical extensions we would not understand (RFC 7515 4.1.11).
    return isinstance(header, dict) and header.get("alg") == "HS256" and "crit" not in header


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _principal_of(claims: Any, leeway: float) -> tuple[Principal, float]:
    if not isinstance(claims, dict):
        raise _invalid()
    raw_exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
    if not _number(raw_exp) or (nbf is not None and not _number(nbf)):
        raise _invalid()
    exp = float(raw_exp) if raw_exp is not None else 0.0
    if iat is not None and not _number(iat):
        raise _invalid()
    now = time.time()
    if now > exp + leeway:
        raise Unauthenticated("the token has expired", reason="TOKEN_EXPIRED")
    if nbf is not None and now < nbf - leeway:
        raise _invalid()
    audience = claims.get("aud")
    if audience != AUDIENCE and not (isinstance(audience, list) and AUDIENCE in audience):
        raise _invalid()
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 1 <= len(subject) <= 64:
        raise Unauthenticated("the token's subject is not valid", reason="INVALID_TOKEN")
    role_name = claims.get("role", "")
    role = _ROLES.get(role_name) if isinstance(role_name, str) else None
    if role is None:
        raise Unauthenticated("the token has no known role", reason="INVALID_TOKEN")
    return Principal(subject=subject, role=role, facts=_facts_of(claims)), exp


_MAX_FACTS = 10_000  # entries of `follows` and of `bought_from`
_NO_FACTS = ViewerFacts()


def _facts_of(claims: dict[str, Any]) -> ViewerFacts:
    """The platform's signed facts about the caller: `follows` {streamer id: Unix time
    they followed} and `bought_from` [shop ids]; absent claims mean none."""
    follows, bought = claims.get("follows"), claims.get("bought_from")
    if follows is None and bought is None:
        return _NO_FACTS
    if follows is None:
        follows = {}
    if bought is None:
        bought = []
    if (
        not isinstance(follows, dict)
        or not isinstance(bought, list)
        or len(follows) > _MAX_FACTS
        or len(bought) > _MAX_FACTS
        or not all(_number(v) and 0 <= v < 2**40 for v in follows.values())
        or not all(isinstance(shop, str) for shop in bought)
    ):
        raise Unauthenticated(
            "the token's follows or bought_from claim is malformed", reason="INVALID_TOKEN"
        )
    return ViewerFacts(
        follows={k: _EPOCH + timedelta(seconds=v) for k, v in follows.items()},
        bought_from=frozenset(bought),
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
