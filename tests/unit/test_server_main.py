"""Process-level tuning done by `python -m server` before it starts any thread."""

from __future__ import annotations

import sys

import pytest

from server.__main__ import limit_malloc_arenas


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_malloc_arenas_are_limited_unless_the_operator_set_malloc_arena_max(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas() is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert limit_malloc_arenas() is False
