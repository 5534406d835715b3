"""Bearer-token authentication, including the verified-token cache."""

from __future__ import annotations

import time

import jwt
import pytest

from server.api.auth import AUDIENCE, Authenticator
from server.domain.errors import Unauthenticated
from server.domain.models import Principal, Role

KEY = "unit-test-key-" + "x" * 32


def token(exp: float, role: str = "viewer", sub: str = "v-1", key: str = KEY) -> str:
    return jwt.encode({"sub": sub, "role": role, "aud": AUDIENCE, "exp": int(exp)}, key, "HS256")


def md(tok: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {tok}")]


def test_valid_token_gives_its_principal() -> None:
    auth = Authenticator(KEY)
    assert auth.authenticate(md(token(time.time() + 3600))) == Principal("v-1", Role.VIEWER)


def test_a_cached_token_is_refused_once_it_expires() -> None:
    auth = Authenticator(KEY, leeway_seconds=0)
    expires = int(time.time()) + 1
    tok = token(expires)
    assert auth.authenticate(md(tok)).subject == "v-1"
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    with pytest.raises(Unauthenticated) as refused:
        auth.authenticate(md(tok))
    assert refused.value.reason == "TOKEN_EXPIRED"


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ([], "MISSING_TOKEN"),
        ([("authorization", "Basic abc")], "MALFORMED_TOKEN"),
        (md(token(time.time() + 3600, key="another-key-" + "y" * 32)), "INVALID_TOKEN"),
        (md(token(time.time() + 3600, role="admin")), "INVALID_TOKEN"),
        (md(token(time.time() - 60)), "TOKEN_EXPIRED"),
    ],
    ids=["missing", "basic", "other-key", "unknown-role", "expired"],
)
def test_bad_credentials_are_refused_with_a_reason(
    metadata: list[tuple[str, str]], reason: str
) -> None:
    with pytest.raises(Unauthenticated) as refused:
        Authenticator(KEY).authenticate(metadata)
    assert refused.value.reason == reason


def test_the_cache_is_bounded() -> None:
    auth = Authenticator(KEY, cache_size=3)
    for i in range(10):
        auth.authenticate(md(token(time.time() + 3600, sub=f"v-{i}")))
    assert len(auth._verified) == 3


def _signed(header: dict[str, object], claims: dict[str, object], key: str = KEY) -> str:
    return jwt.encode(claims, key, "HS256", headers=header)


@pytest.mark.parametrize(
    ("tok", "reason"),
    [
        (
            jwt.encode({"sub": "v", "role": "viewer", "aud": AUDIENCE}, KEY, "HS256"),
            "INVALID_TOKEN",
        ),
        (
            jwt.encode(
                {"sub": "v", "role": "viewer", "aud": "other", "exp": 4102444800}, KEY, "HS256"
            ),
            "INVALID_TOKEN",
        ),
        (
            jwt.encode(
                {"sub": "v", "role": "viewer", "aud": [AUDIENCE, "x"], "exp": "soon"}, KEY, "HS256"
            ),
            "INVALID_TOKEN",
        ),
        (
            jwt.encode(
                {
                    "sub": "v",
                    "role": "viewer",
                    "aud": AUDIENCE,
                    "exp": 4102444800,
                    "nbf": 4102444000,
                },
                KEY,
                "HS256",
            ),
            "INVALID_TOKEN",
        ),
        (
            jwt.encode(
                {"sub": "v", "role": "viewer", "aud": AUDIENCE, "exp": 4102444800}, KEY * 2, "HS512"
            ),
            "INVALID_TOKEN",
        ),
        (
            _signed(
                {"crit": ["x"], "x": 1},
                {"sub": "v", "role": "viewer", "aud": AUDIENCE, "exp": 4102444800},
            ),
            "INVALID_TOKEN",
        ),
        ("a.b", "INVALID_TOKEN"),
        ("e30.e30.!!!", "INVALID_TOKEN"),
    ],
    ids=[
        "no-exp",
        "wrong-aud",
        "exp-not-number",
        "not-yet-valid",
        "hs512",
        "crit",
        "two-parts",
        "bad-signature-encoding",
    ],
)
def test_malformed_or_unacceptable_tokens_are_refused(tok: str, reason: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        Authenticator(KEY).authenticate(md(tok))
    assert refused.value.reason == reason


def test_audience_may_be_a_list_containing_ours() -> None:
    tok = jwt.encode(
        {"sub": "v-9", "role": "streamer", "aud": ["x", AUDIENCE], "exp": time.time() + 3600},
        KEY,
        "HS256",
    )
    assert Authenticator(KEY).authenticate(md(tok)) == Principal("v-9", Role.STREAMER)


def test_a_tampered_payload_fails_the_signature() -> None:
    header, _, signature = token(time.time() + 3600).split(".")
    forged = jwt.encode(
        {"sub": "admin", "role": "platform", "aud": AUDIENCE, "exp": time.time() + 3600},
        "whatever-" + "z" * 32,
        "HS256",
    ).split(".")[1]
    with pytest.raises(Unauthenticated):
        Authenticator(KEY).authenticate(md(f"{header}.{forged}.{signature}"))
