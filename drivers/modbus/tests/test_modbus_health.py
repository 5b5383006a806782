"""UnitBackoff as a scenario table: when a unit that stopped answering is polled again."""

from __future__ import annotations

import pytest

from drivers.modbus.health import UnitBackoff

# (at time, event, may_poll before the event)  events: "fail", "ok", "-" (only ask)
SCENARIO = [
    (0.0, "fail", True),
    (1.0, "fail", True),
    (2.0, "fail", True),  # third failure: backoff starts, next try at 2 + 2
    (3.0, "-", False),
    (4.0, "fail", True),  # still dead: delay doubles to 4, next try at 8
    (7.9, "-", False),
    (8.0, "fail", True),  # delay 8, next at 16
    (16.0, "fail", True),  # delay capped at 10, next at 26
    (25.9, "-", False),
    (26.0, "ok", True),  # answered: back to normal
    (26.5, "-", True),
    (27.0, "fail", True),  # one failure after recovery does not back off yet
    (27.5, "-", True),
]


def test_backoff_scenario() -> None:
    """After 3 failures in a row polls pause 2, 4, 8, then 10 s (capped); a success resumes them."""
    health = UnitBackoff(failures_before_backoff=3, initial_s=2.0, maximum_s=10.0)

    for at, event, allowed in SCENARIO:
        assert health.may_poll(at) is allowed, f"at {at}"
        if event == "fail":
            health.record_failure(at)
        elif event == "ok":
            health.record_success()


@pytest.mark.parametrize("settings", [{"failures_before_backoff": 0}, {"initial_s": 0}, {"maximum_s": 0.5}])
def test_inconsistent_settings_are_rejected(settings: dict[str, float]) -> None:
    """Backoff settings that cannot work are refused at construction."""
    values = {"failures_before_backoff": 3, "initial_s": 1.0, "maximum_s": 10.0} | settings
    with pytest.raises(ValueError, match="need"):
        UnitBackoff(**values)  # type: ignore[arg-type]
