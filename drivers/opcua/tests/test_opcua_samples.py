"""How one server DataValue becomes a Sample: timestamps, the outage floor, value types, overflow counts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from asyncua import ua

from agent.core.clock import FakeClock
from agent.core.sample import Quality
from drivers.opcua.driver import OpcUaDriver
from drivers.opcua.tests.helpers import Collector, device

SOURCE = dt.datetime(2026, 11, 23, 8, 0, 0, tzinfo=dt.UTC)
SERVER = dt.datetime(2026, 11, 23, 8, 0, 5, tzinfo=dt.UTC)
NOW_MS = int(SOURCE.timestamp() * 1000) + 3_600_000  # an hour after the device last changed the value


def make(**settings: Any) -> tuple[OpcUaDriver, Collector]:
    sink = Collector()
    cfg = device("opc.tcp://127.0.0.1:4840", [{"name": "t", "node": "i=1"}], **settings)
    return OpcUaDriver("d", cfg, sink, clock=FakeClock(start=NOW_MS / 1000)), sink


def value(v: Any, *, status: int = 0, source: dt.datetime | None = SOURCE) -> ua.DataValue:
    return ua.DataValue(
        ua.Variant(v), StatusCode=ua.StatusCode(status), SourceTimestamp=source, ServerTimestamp=SERVER
    )


def ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


@pytest.mark.parametrize(
    ("choice", "dv", "expected"),
    [
        ("source", value(1.0), ms(SOURCE)),
        ("source", value(1.0, source=None), ms(SERVER)),
        ("server", value(1.0), ms(SERVER)),
        ("gateway", value(1.0), NOW_MS),
    ],
)
def test_timestamp_setting_chooses_which_time_a_sample_carries(
    choice: str, dv: ua.DataValue, expected: int
) -> None:
    """source falls back to the server's time when the device gives none; gateway is the receipt time."""
    driver, _ = make(timestamp=choice)

    assert driver._sample(0, dv, NOW_MS).ts_ms == expected


def test_first_value_after_an_outage_is_not_stamped_before_it() -> None:
    """After an outage the current value, changed long ago, is stamped at receipt; later ones keep theirs."""
    driver, sink = make()
    driver._mark_all_bad("session lost: timeout")
    outage_ms = sink.samples[-1].ts_ms

    first = driver._sample(0, value(2.0), outage_ms + 700)
    later = driver._sample(0, value(3.0), outage_ms + 900)
    assert (first.ts_ms, later.ts_ms) == (outage_ms + 700, ms(SOURCE))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, True),
        (7, 7),
        (2.5, 2.5),
        ("auto", "auto"),
        (ua.LocalizedText("Running"), "Running"),
        (b"\x01\xff", "01ff"),
    ],
)
def test_plain_values_pass_and_simple_types_convert(raw: Any, expected: Any) -> None:
    """bool, int, float and str pass unchanged; LocalizedText gives its text and bytes their hex."""
    driver, _ = make()

    assert driver._sample(0, value(raw), NOW_MS).value == expected


def test_unsupported_value_type_is_a_counted_bad_sample() -> None:
    """An array value cannot be carried: it becomes a BAD sample naming the type, counted as bad."""
    driver, _ = make()

    sample = driver._sample(0, value([1.0, 2.0]), NOW_MS)
    assert (sample.quality, sample.reason, driver.stats.bad_samples) == (
        Quality.BAD,
        "unsupported value type list",
        1,
    )


def test_server_queue_overflow_flag_is_counted() -> None:
    """A value the server flags Overflow (it dropped older ones) is kept and the loss counted."""
    driver, _ = make()

    sample = driver._sample(0, value(1.0, status=0x480), NOW_MS)
    assert (sample.quality, sample.value, driver.stats.server_queue_overflows) == (Quality.GOOD, 1.0, 1)
