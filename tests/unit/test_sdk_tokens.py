"""Minting tokens and finding the signing key the way the server does."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from client_sdk import Role, load_key, mint_token

KEY = "unit-test-key-that-is-long-enough-for-hs256"
KEY_ENVS = ("LIVERESOURCE_TOKEN_KEY", "LIVERESOURCE_TOKEN_KEY_FILE", "LIVERESOURCE_DATA_DIR")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in KEY_ENVS:
        monkeypatch.delenv(name, raising=False)
    # ./data must not be the developer's real data dir.
    monkeypatch.chdir(tmp_path)


def decode(token: str, key: str = KEY) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(
        token,
        key,
        algorithms=["HS256"],
        audience="liveresource",
        options={"require": ["sub", "role", "aud", "iat", "exp"]},
    )
    return claims


def test_minted_token_verifies_with_the_contract_claims() -> None:
    before = int(time.time())
    claims = decode(mint_token("viewer-7", Role.VIEWER, key=KEY, ttl_seconds=120))
    assert claims["sub"] == "viewer-7"
    assert claims["role"] == "viewer"
    assert claims["aud"] == "liveresource"
    assert isinstance(claims["iat"], int) and before <= claims["iat"] <= time.time()
    assert claims["exp"] == claims["iat"] + 120


def test_role_may_be_given_as_text_but_must_exist() -> None:
    assert decode(mint_token("o1", "order_service", key=KEY))["role"] == "order_service"
    with pytest.raises(ValueError):
        mint_token("o1", "admin", key=KEY)


def test_token_signed_with_another_key_is_rejected() -> None:
    with pytest.raises(jwt.InvalidSignatureError):
        decode(mint_token("s1", Role.STREAMER, key=KEY), key=KEY + "-other")


def test_key_lookup_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dev-token.key").write_text("from-default-data-dir\n")
    assert load_key() == "from-default-data-dir"

    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "dev-token.key").write_text("  from-data-dir-env  ")
    monkeypatch.setenv("LIVERESOURCE_DATA_DIR", str(tmp_path / "custom"))
    assert load_key() == "from-data-dir-env"

    (tmp_path / "key.txt").write_text("from-key-file\n")
    monkeypatch.setenv("LIVERESOURCE_TOKEN_KEY_FILE", str(tmp_path / "key.txt"))
    assert load_key() == "from-key-file"

    monkeypatch.setenv("LIVERESOURCE_TOKEN_KEY", "from-env")
    assert load_key() == "from-env"


def test_missing_key_says_where_it_looked() -> None:
    with pytest.raises(FileNotFoundError, match="LIVERESOURCE_TOKEN_KEY"):
        load_key()


def test_mint_token_uses_the_configured_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVERESOURCE_TOKEN_KEY", KEY)
    assert decode(mint_token("p1", Role.PLATFORM))["sub"] == "p1"
