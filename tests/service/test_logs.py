"""Logging: rate-limited repeats, JSON with journald priority under systemd."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from agent.service import logs
from agent.service.logs import RepeatLimiter, configure_logging, flush_suppressed


class Ticker:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limited_logger(limiter: RepeatLimiter) -> tuple[Any, LogCapture]:
    capture = LogCapture()
    logger = structlog.wrap_logger(None, processors=[structlog.processors.add_log_level, limiter, capture],
                                   wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    return logger, capture


def test_repeats_within_the_period_become_one_line_with_a_count() -> None:
    """(event, device, error) seen at t=0,1,..,4 and t=61: two lines, the second saying suppressed=4."""
    clock = Ticker()
    log, capture = limited_logger(RepeatLimiter(60.0, clock=clock))
    for t in (0, 1, 2, 3, 4, 61):
        clock.now = t
        log.warning("poll_failed", device="plc1", error="timeout")

    assert [(e["event"], e.get("suppressed")) for e in capture.entries] == [("poll_failed", None), ("poll_failed", 4)]


@pytest.mark.parametrize(("first", "second"), [
    ({"device": "plc1", "error": "timeout"}, {"device": "plc2", "error": "timeout"}),
    ({"device": "plc1", "error": "timeout"}, {"device": "plc1", "error": "connection refused"}),
])
def test_different_device_or_error_is_not_collapsed(first: dict[str, str], second: dict[str, str]) -> None:
    """Another device, or another error on the same device, is news and is logged."""
    log, capture = limited_logger(RepeatLimiter(60.0, clock=Ticker()))
    log.warning("poll_failed", **first)
    log.warning("poll_failed", **second)

    assert len(capture.entries) == 2


def test_info_is_not_limited() -> None:
    """Only warnings and errors are collapsed; info lines are rare by design and always pass."""
    log, capture = limited_logger(RepeatLimiter(60.0, clock=Ticker()))
    for _ in range(3):
        log.info("config_applied")

    assert len(capture.entries) == 3


def test_flush_reports_repeats_that_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeats followed by silence still get their 'suppressed N' line once the period is over."""
    clock = Ticker()
    limiter = RepeatLimiter(60.0, clock=clock)
    monkeypatch.setattr(logs, "_limiter", limiter)
    log, capture = limited_logger(limiter)
    for _ in range(3):
        log.error("buffer_append_failed", error="disk full")
    clock.now = 30
    flushed_early = flush_suppressed(log)
    clock.now = 61
    flushed = flush_suppressed(log)

    assert (flushed_early, flushed) == (0, 1)
    assert capture.entries[-1] == {"event": "buffer_append_failed", "error": "disk full", "suppressed": 2,
                                   "period_s": 60.0, "level": "error", "log_level": "error"}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
        logs._limiter = None


@pytest.mark.usefixtures("restore_logging")
def test_json_under_journald_carries_the_priority_prefix(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Under systemd each event is '<N>' + one JSON object, N the syslog priority journald records."""
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    configure_logging("auto", "info")
    structlog.get_logger("t").warning("device_down", device="plc1", error="timeout")
    line = capsys.readouterr().err.strip()

    assert line.startswith("<4>{")
    assert json.loads(line[3:])["device"] == "plc1"


@pytest.mark.usefixtures("restore_logging")
def test_configured_logging_collapses_a_retry_storm(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A hundred identical warnings in a burst come out as one line."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    configure_logging("json", "info")
    log = structlog.get_logger("t")
    for _ in range(100):
        log.warning("reconnect_failed", device="plc1", error="connection refused")

    assert len(capsys.readouterr().err.strip().splitlines()) == 1
