"""Settings: environment, flags, and values refused at start-up."""

from __future__ import annotations

import pytest

from server.config import load_settings


def test_flags_override_the_environment() -> None:
    env = {"LIVERESOURCE_CHECKOUT_LOCK_SECONDS": "60", "LIVERESOURCE_WATCH_GAP_SECONDS": "5"}
    settings = load_settings(["--watch-gap-seconds", "12"], env)
    assert (settings.checkout_lock_seconds, settings.watch_gap_seconds) == (60.0, 12.0)
    assert load_settings([], {}).checkout_lock_seconds == 900.0


@pytest.mark.parametrize(
    "argv",
    [
        ["--checkout-lock-seconds", "0"],
        ["--heartbeat-seconds", "-1"],
        ["--watch-gap-seconds", "-1"],
        ["--processes", "0"],
        ["--port", "70000"],
        ["--event-loop", "trio"],
    ],
)
def test_values_no_server_can_run_with_are_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        load_settings(argv, {})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert argv[0] in err or "ports must be within" in err, err
