"""Logging: structlog events with stable keys, JSON under systemd, readable on a terminal.

Under systemd (``JOURNAL_STREAM`` set) or when stdout is not a terminal, each event is one JSON line,
prefixed with the syslog level ``<N>`` so journald records its priority (``journalctl -p warning`` works
without systemd-python). On a terminal, events are rendered for a person. Third-party libraries log
through the standard library; their records go through the same renderer at WARNING and above, because
pymodbus and asyncua are chatty below that (pymodbus appends hex dumps, asyncua logs a traceback every
second while a server is down).

No per-sample lines exist anywhere; repeated warnings and errors are collapsed by :class:`RepeatLimiter`:
the first occurrence of an (event, device, error) is logged, repeats within ``period_s`` are counted, and
the count comes out as ``suppressed=N`` on the next line of that kind after the period, or from
:func:`flush_suppressed` (called periodically by the watchdog task) if the repeats stopped. A flapping
device therefore writes one line a minute, not one per retry, and the journal still says how often.
"""

from __future__ import annotations

__all__ = ["RepeatLimiter", "configure_logging", "flush_suppressed"]

import logging
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

_SYSLOG_LEVEL = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "info": 6, "debug": 7}


def _journald_prefix(_: Any, method: str, event: str) -> str:
    return f"<{_SYSLOG_LEVEL.get(method, 6)}>{event}"


_LIMITED_LEVELS = frozenset({"warning", "error", "critical", "exception"})
_MAX_KEYS = 2000  # distinct (event, device, error) remembered; beyond that the oldest are summarised early


class _Seen:
    __slots__ = ("method", "since", "suppressed", "template")

    def __init__(self, since: float, method: str, template: dict[str, Any]) -> None:
        self.since = since
        self.method = method
        self.template = template
        self.suppressed = 0


class RepeatLimiter:
    """structlog processor: one line per (event, device, error) per ``period_s`` at warning and above."""

    def __init__(self, period_s: float = 60.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self.clock = clock
        self._seen: dict[tuple[Any, Any, str], _Seen] = {}

    def __call__(self, _: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if method not in _LIMITED_LEVELS or event_dict.get("suppressed") is not None:
            return event_dict
        key = (event_dict.get("event"), event_dict.get("device"), str(event_dict.get("error")))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen.since < self.period_s:
            seen.suppressed += 1
            raise structlog.DropEvent
        if seen is not None and seen.suppressed:
            event_dict["suppressed"] = seen.suppressed
        if seen is not None:
            del self._seen[key]  # re-insert at the end: the dict stays ordered by first sight
        template = {k: event_dict[k] for k in ("event", "device", "error", "tag") if k in event_dict}
        self._seen[key] = _Seen(now, method, template)
        if len(self._seen) > _MAX_KEYS:
            self._seen.pop(next(iter(self._seen)))
        return event_dict

    def due(self) -> list[tuple[str, dict[str, Any]]]:
        """Summaries of repeats whose period is over and that have not been reported; forgets idle keys."""
        now = self.clock()
        out: list[tuple[str, dict[str, Any]]] = []
        for key, seen in list(self._seen.items()):
            if now - seen.since < self.period_s:
                continue
            del self._seen[key]
            if seen.suppressed:
                out.append((seen.method, {**seen.template, "suppressed": seen.suppressed,
                                          "period_s": self.period_s}))
        return out


_limiter: RepeatLimiter | None = None


def flush_suppressed(logger: Any = None) -> int:
    """Log the pending "suppressed N" summaries; returns how many lines were written."""
    if _limiter is None:
        return 0
    due = _limiter.due()
    target = logger or structlog.get_logger("agent.service.logs")
    for method, fields in due:
        event = fields.pop("event")
        getattr(target, "error" if method in ("exception", "critical") else method)(event, **fields)
    return len(due)


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Set up structlog and route standard-library loggers through it. ``fmt``: auto | json | console."""
    if fmt == "auto":
        fmt = "json" if os.environ.get("JOURNAL_STREAM") or not sys.stderr.isatty() else "console"
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    global _limiter  # noqa: PLW0603 -- one logging configuration per process, like structlog's own
    _limiter = RepeatLimiter()
    if fmt == "json":
        renderer: list[Any] = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if under_journald:
            renderer.append(_journald_prefix)
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, _limiter, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for noisy in ("pymodbus", "asyncua", "paho", "aiomqtt"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
